"""LM-BFF's automatic label-word search (Gao, Fisch & Chen 2021; its tools/generate_labels.py and
src/label_search.py): which one-token word per class a cloze pattern is best verbalized with.

1. The pretrained MLM, with no prompt, reads every training example through the task's pattern;
   its logits at the mask over the whole vocabulary are summed per class on the device, batch by
   batch: neither [B, L, V] on the device nor [N, V] on the host. A decoder (Llama, SmolLM2) reads
   the pattern's text up to the mask and a label word continues it (tasks/cloze.py): its "mask
   logits" are the next-token logits after the last input token, the last column of its
   left-padded inputs, whose state alone is projected. T5, whose answer is a span after its
   sentinel, is not searched.
2. Per class the vocabulary is ranked by the mean logit over the class's examples (LM-BFF's code),
   which is the paper's summed log-probability ranking: log p(v | x) = logit(v | x) - log Z(x),
   and log Z(x) is the same for every token v. The top k word-initial tokens are the candidates;
   optionally (LM-BFF's TREC) re-ranked by cosine similarity to the manual word in the LM head's
   output-embedding space, and the nearest kept.
3. Every mapping of the Cartesian product of the classes' candidates is scored on the training
   set, by the zero-shot accuracy of the argmax among its words' logits (a second pass reads just
   the W candidates' columns at the mask: [N, W] on the host); the top n are kept. A regression (bounds, two
   classes: STS-B) binarises its scores at the training median for step 2 (above it: class 1) and
   scores a mapping by the Pearson correlation of p(second word) with the gold score.
Each mapping then fine-tunes a run (LM-BFF ranks them by dev score): with_label_words gives its TaskSpec.

    exp = experiment.build(cloze.get_config("recipe=lm_bff,task=sst2"))   # configs/cloze.py
    label_search.write_mappings(workdir / "search.json", label_search.search_label_words(exp))

Ties do not depend on a sort's stability: candidates of equal mean logit go by token id, mappings
of equal score by their place in the product's enumeration (itertools.product's order: row-major
over the classes' candidate lists, so mappings of higher-ranked candidates first).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

from jaxprompt import experiment
from jaxprompt import sharding as sharding_lib
from jaxprompt.objectives import causal_lm
from jaxprompt.objectives import cloze as cloze_objective
from jaxprompt.tasks import cloze, pipeline, task_spec
from jaxprompt.tasks.codec import TextCodec
from jaxprompt.tasks.features import Feature

log = logging.getLogger(__name__)
K_LIKELY = 100  # candidates per class (run_generate_labels.sh; TREC: 1000, then 20 nearest its seed)
N_PAIRS = 100  # mappings kept (run_generate_labels.sh's N_PAIRS; generate_labels.py's default is 32)
# Logits gathered per scoring chunk (examples x mappings x classes floats: 64 MiB).
_CHUNK_ELEMENTS = 2**24


@dataclasses.dataclass(frozen=True)
class Mapping:
  """One label word per class, as a verbalizer writes it ("great", not "Ġgreat"), and its score."""

  words: tuple[str, ...]
  token_ids: tuple[int, ...]
  score: float  # zero-shot training accuracy; a regression's Pearson correlation


@dataclasses.dataclass(frozen=True)
class Search:
  """A search's outcome: the best mappings, best first, and each class's candidates, best first."""

  task: str
  label_names: tuple[str, ...]
  metric: str  # what Mapping.score is: "accuracy", or "pearson" for a regression
  examples: int  # training examples read
  candidates: tuple[tuple[str, ...], ...]
  mappings: tuple[Mapping, ...]


def search_label_words(exp: experiment.Experiment, weights: Any = None, features: Sequence[Feature] | None = None, *,
           k: int = K_LIKELY, n: int = N_PAIRS, seed_neighbours: int = 0) -> Search:
  """LM-BFF's search for the run's one cloze task on `features` (default: its training set) with
  the backbone `weights` (default: as loaded, so before exp.init_state takes the trainable ones).
  With seed_neighbours > 0 (LM-BFF's TREC: 20, with k=1000) each class keeps that many of its k
  candidates nearest its manual label word."""
  if k < 1 or n < 1:
    raise ValueError(f"the label search keeps k={k} candidates per class and n={n} mappings: both must be positive")
  if len(exp.tasks) != 1:
    raise ValueError(f"the label search reads one task; config.mixture names {len(exp.tasks)}")
  (task,) = exp.tasks
  spec = task.spec
  if not spec.pattern or spec.candidates:
    raise ValueError(f"Task {spec.name!r}: the label search verbalizes a cloze pattern's one mask, with no"
                     " per-example candidates")
  reader = answer_reader(exp)
  weights = exp.merged(exp.pretrained) if weights is None else weights
  features = experiment.task_features(exp, task, "train") if features is None else features
  features, classes_N, targets_N = search_targets(spec, features)
  # A masked LM's inputs have a mask per label-word token; a decoder's none (its answer follows them).
  if any(len(f.mask_positions) > 1 for f in features):
    raise ValueError(f"Task {spec.name!r}: the label search fills one mask; the pattern's inputs have several")
  num_classes, metric = len(spec.label_names), "pearson" if spec.bounds else "accuracy"
  counts_C = np.bincount(classes_N, minlength=num_classes)
  if not counts_C.all():
    raise ValueError(f"Task {spec.name!r}: no training example of class {spec.label_names[int(np.argmin(counts_C))]!r}")
  sums_CxV = class_logit_sums(exp, weights, features, classes_N, num_classes)
  words_V = vocabulary_words(exp.backbone.tokenizer, reader.word_ids, sums_CxV.shape[1])
  candidates = top_candidates(sums_CxV / counts_C[:, None], np.array([w is not None for w in words_V]), k)
  if seed_neighbours:
    rows_of = lambda ids: _host(reader.output_rows(weights, jnp.asarray(ids, jnp.int32)))
    candidates = nearest_to_seeds(candidates, seed_ids(spec, reader.word_ids), rows_of, seed_neighbours)
  for name, ids in zip(spec.label_names, candidates, strict=True):
    log.info("label search %s, class %r: %s", spec.name, name, " ".join(words_V[t] for t in ids[:10]))
  token_ids_W = np.unique(np.concatenate(candidates))
  logits_NxW = candidate_logits(exp, weights, features, token_ids_W)
  columns = [np.searchsorted(token_ids_W, ids) for ids in candidates]
  chosen_MxC, scores_M = best_mappings(logits_NxW, columns, targets_N, n, pearson=bool(spec.bounds))
  mappings = tuple(Mapping(tuple(words_V[t] for t in ids), tuple(int(t) for t in ids), float(score))
                   for ids, score in zip(token_ids_W[chosen_MxC], scores_M, strict=True))
  log.info("label search %s: best of %d mappings %s (%s %.4f)", spec.name, math.prod(map(len, candidates)),
           mappings[0].words, metric, mappings[0].score)
  return Search(spec.name, spec.label_names, metric, len(features),
                tuple(tuple(words_V[t] for t in ids) for ids in candidates), mappings)


def search_targets(spec: task_spec.TaskSpec,
                   features: Sequence[Feature]) -> tuple[list[Feature], np.ndarray, np.ndarray]:
  """(the examples read, each one's class, what a mapping is scored against): the labelled examples
  and their classes; for a regression the scored ones, classed by their score above the median
  (LM-BFF's `>`: ties at the median go to class 0), and their scores."""
  kept = [f for f in features if (math.isfinite(f.score) if spec.bounds else f.label >= 0)]
  if not kept:
    raise ValueError(f"Task {spec.name!r}: the label search needs {'scored' if spec.bounds else 'labelled'} examples")
  if not spec.bounds:
    classes_N = np.array([f.label for f in kept], np.int32)
    return kept, classes_N, classes_N
  scores_N = np.array([f.score for f in kept], np.float64)
  return kept, (scores_N > np.median(scores_N)).astype(np.int32), scores_N.astype(np.float32)


def _host(x: jax.Array) -> np.ndarray:
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def _global_batches(exp: experiment.Experiment, features: Sequence[Feature]) -> Iterator[dict[str, jax.Array]]:
  """`features` in order, in the run's global eval batches on its mesh (the last padded)."""
  data = exp.config.data
  for local in pipeline.eval_batches(features, exp.config.eval_batch_size, data.max_input_len, data.max_target_len,
                                     tuple(data.bucket_lengths), jax.process_index(), jax.process_count(),
                                     exp.backbone.codec.pad_inputs_left):
    yield pipeline.to_global(local, exp.batch_sharding)


@dataclasses.dataclass(frozen=True)
class _MaskedLM:
  """A masked LM reads the answer at the pattern's one [MASK]: answer_logits [B, V], or [B, W] over
  the tokens token_ids_W; output_rows [W, D], the vectors LM-BFF's seed neighbours compare."""

  model: Any
  family: Any
  tokens: Any  # the codec's patterns.ClozeTokens

  def word_ids(self, word: str) -> list[int]:
    return self.tokens.word_ids(word)

  def answer_logits(self, weights: Any, batch: dict[str, jax.Array], token_ids_W: jax.Array | None = None) -> jax.Array:
    inputs = batch["inputs"], batch["input_mask"], batch["token_types"], batch["mask_positions"][:, :1]
    return cloze_objective.bare_mask_logits(self.model, weights, token_ids_W)(*inputs)[:, 0]

  def output_rows(self, weights: Any, token_ids_W: jax.Array) -> jax.Array:
    return jnp.take(self.family.embedding(weights), token_ids_W, axis=0)  # tied: the MLM head's output embeddings


@dataclasses.dataclass(frozen=True)
class _Decoder:
  """A decoder reads the answer as the token after the pattern's text up to the mask (the last
  column of its left-padded inputs); its answer_logits and output_rows as _MaskedLM's."""

  model: Any
  codec: TextCodec
  hidden_dim: int

  def word_ids(self, word: str) -> list[int]:
    # As cloze.label_texts writes a decoder's label word, continuing the input: codec.word_prefix
    # first, so byte-level BPE spells the word's leading space into its one token ('Ġgreat').
    return self.codec.encode_label(self.codec.word_prefix + word)

  def answer_logits(self, weights: Any, batch: dict[str, jax.Array], token_ids_W: jax.Array | None = None) -> jax.Array:
    return causal_lm.bare_next_token_logits(self.model, weights, batch["inputs"], batch["input_mask"], token_ids_W)

  def output_rows(self, weights: Any, token_ids_W: jax.Array) -> jax.Array:
    # The LM head's columns, tied or not: the logits its projection gives the unit vectors.
    eye_DxD = jnp.eye(self.hidden_dim, dtype=jnp.float32)
    return self.model.apply(weights, eye_DxD, token_ids_W, method=type(self.model).logits_for).T


def answer_reader(exp: experiment.Experiment) -> _MaskedLM | _Decoder:
  """How the run's backbone reads the answer of its one task's pattern: a masked LM fills its
  [MASK] (the codec has a cloze layout), a decoder continues the text (a text family without
  T5's sentinels)."""
  backbone, spec = exp.backbone, exp.tasks[0].spec
  codec = backbone.codec
  if codec.cloze is not None:
    return _MaskedLM(backbone.model, backbone.family, codec.cloze)
  if codec.cloze_sentinels:
    raise ValueError(f"Task {spec.name!r}: the label search does not run on T5: its answer is a span after"
                     f" the sentinel {codec.cloze_sentinels[0]}, not one token at one position; use a masked LM"
                     " or a decoder")
  cloze.check_text_family(spec, codec)
  return _Decoder(backbone.model, codec, backbone.hidden_dim)


def _class_sums(weights: Any, batch: dict[str, jax.Array], *, reader, num_classes: int) -> jax.Array:
  """[C, V]: the batch's answer logits over the vocabulary, summed per class (its `label`)."""
  logits_BxV = reader.answer_logits(weights, batch)
  class_B = jnp.where(batch["example_mask"], batch["label"], num_classes)  # padding rows: a segment dropped
  return jax.ops.segment_sum(logits_BxV, class_B, num_segments=num_classes + 1)[:num_classes]


def _length_order(features: Sequence[Feature]) -> np.ndarray:
  return np.argsort([len(f.inputs) for f in features], kind="stable")  # batches of similar lengths pad less


def class_logit_sums(exp: experiment.Experiment, weights: Any, features: Sequence[Feature], classes_N: np.ndarray,
                     num_classes: int) -> np.ndarray:
  """[C, V] float64: per class, its examples' zero-shot answer logits over the whole vocabulary, summed."""
  step = jax.jit(functools.partial(_class_sums, reader=answer_reader(exp), num_classes=num_classes))
  classed = [dataclasses.replace(features[i], label=int(classes_N[i])) for i in _length_order(features)]
  sums_CxV = None
  with sharding_lib.activate(exp.mesh, exp.rules):
    for batch in _global_batches(exp, classed):
      batch_CxV = step(weights, batch)
      sums_CxV = batch_CxV if sums_CxV is None else sums_CxV + batch_CxV
  return _host(sums_CxV).astype(np.float64)


def candidate_logits(exp: experiment.Experiment, weights: Any, features: Sequence[Feature],
                     token_ids_W: np.ndarray) -> np.ndarray:
  """[N, W] float32: the zero-shot answer logits of the tokens `token_ids_W`, in the features' order."""
  step = jax.jit(answer_reader(exp).answer_logits)
  order = _length_order(features)
  ids_W = jnp.asarray(token_ids_W, jnp.int32)
  rows, real = [], []
  with sharding_lib.activate(exp.mesh, exp.rules):
    for batch in _global_batches(exp, [features[i] for i in order]):
      rows.append(_host(step(weights, batch, ids_W)))
      real.append(_host(batch["example_mask"]))
  logits_NxW = np.empty((len(features), len(token_ids_W)), np.float32)
  logits_NxW[order] = np.concatenate(rows)[np.concatenate(real)]
  return logits_NxW


def vocabulary_words(tokenizer: Any, word_ids: Callable[[str], list[int]], vocab_size: int) -> list[str | None]:
  """Each token's label word, or None where no label word is exactly that one token.

  A token qualifies when the text it decodes to, stripped, encodes as a label word is encoded
  (`word_ids`: ClozeTokens.word_ids, which puts back the word's leading space where the vocabulary
  spells it) to that token alone. For each kind of vocabulary that keeps the word-initial tokens:
    byte-level BPE (RoBERTa, GPT-2): the 'Ġ' tokens, LM-BFF's test, less those that decode to no
      word (runs of 'Ġ', partial UTF-8 bytes such as 'ĠÃ'); the word is the text after the 'Ġ'.
    WordPiece (BERT): the tokens without the '##' continuation mark, less the special tokens
      ([CLS], [MASK], ..., which decode to nothing) and the [unusedN] ones (which re-encode to
      several pieces); '...' drops out too, since it encodes as three '.'.
    SentencePiece (ALBERT): the '▁' tokens, by the same test (the word after the '▁').
    a decoder's byte-level BPE (SmolLM2, Llama 3): its 'Ġ' tokens, as for RoBERTa, `word_ids`
      being the word continuing the pattern (codec.word_prefix + word, as cloze.label_texts has
      it), so that a word proposed is one token where the decoder scores it.
  Rows past the tokenizer's vocabulary (a model's padding of its embedding table) are no words.
  """
  words: list[str | None] = []
  for token_id in range(vocab_size):
    word = tokenizer.decode([token_id]).strip() if token_id < tokenizer.vocab_size else ""
    words.append(word if word and word_ids(word) == [token_id] else None)
  return words


def top_candidates(mean_CxV: np.ndarray, proposable_V: np.ndarray, k: int) -> list[np.ndarray]:
  """Per class the token ids of the k proposable tokens of highest mean logit, best first (equal
  means: lower token id first)."""
  out = []
  for mean_V in mean_CxV:
    order_V = np.argsort(-mean_V, kind="stable")
    out.append(order_V[proposable_V[order_V]][:k])
  return out


def seed_ids(spec: task_spec.TaskSpec, word_ids: Callable[[str], list[int]]) -> list[int]:
  """Each class's manual label word (its first) as its one token: the seeds of nearest_to_seeds."""
  ids = [word_ids(words[0]) for words in spec.label_words]
  for words, token_ids in zip(spec.label_words, ids, strict=True):
    if len(token_ids) != 1:
      raise ValueError(f"Task {spec.name!r}: the seed label word {words[0]!r} is {len(token_ids)} tokens, not one")
  return [t[0] for t in ids]


def nearest_to_seeds(candidates: Sequence[np.ndarray], seeds: Sequence[int],
                     rows_of: Callable[[np.ndarray], np.ndarray], keep: int) -> list[np.ndarray]:
  """Each class's candidates re-ranked by cosine similarity of their vectors (`rows_of(ids)`: the
  output-embedding rows) to its seed's, the `keep` nearest (LM-BFF's --use_seed_labels with
  k_neighbors); equal similarity keeps the likelihood order."""
  out = []
  for ids_K, seed in zip(candidates, seeds, strict=True):
    vectors_KxD, seed_D = rows_of(ids_K).astype(np.float64), rows_of(np.array([seed]))[0].astype(np.float64)
    cosine_K = vectors_KxD @ seed_D / (np.linalg.norm(vectors_KxD, axis=1) * np.linalg.norm(seed_D))
    out.append(ids_K[np.argsort(-cosine_K, kind="stable")[:keep]])
  return out


def best_mappings(logits_NxW: np.ndarray, columns: Sequence[np.ndarray], targets_N: np.ndarray, n: int,
                  pearson: bool, chunk: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """(the n best mappings' columns [n, C], their scores [n]) of the Cartesian product of the
  classes' candidate `columns` of logits_NxW, best first: accuracy against the classes targets_N,
  or Pearson against the scores targets_N. Scored on the device `chunk` mappings at a time."""
  sizes = tuple(len(c) for c in columns)
  total = math.prod(sizes)
  if total > np.iinfo(np.int32).max:
    raise ValueError(f"{' x '.join(map(str, sizes))} = {total} mappings are too many to score; keep fewer candidates")
  examples = logits_NxW.shape[0]
  chunk = chunk or max(1, min(total, _CHUNK_ELEMENTS // (examples * len(sizes))))
  columns_CxK = np.zeros((len(sizes), max(sizes)), np.int32)
  for c, column in enumerate(columns):
    columns_CxK[c, : len(column)] = column
  score = functools.partial(_chunk_scores, sizes=sizes, chunk=chunk, pearson=pearson)
  logits, columns_dev, targets = (jnp.asarray(x) for x in (logits_NxW, columns_CxK, targets_N))
  best_scores, best_flat = np.zeros(0, np.float32), np.zeros(0, np.int64)
  for start in range(0, total, chunk):
    real = min(chunk, total - start)
    scores = np.asarray(score(logits, columns_dev, targets, start))[:real]
    best_scores, best_flat = _best(np.concatenate([best_scores, scores]),
                                   np.concatenate([best_flat, np.arange(start, start + real)]), n)
  digits_nxC = np.stack(np.unravel_index(best_flat, sizes), axis=-1)
  chosen_nxC = columns_CxK[np.arange(len(sizes)), digits_nxC]
  return chosen_nxC, best_scores.astype(np.float64) / (1 if pearson else examples)


def _best(scores: np.ndarray, flat: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
  """The n best: higher score first, then lower place in the enumeration."""
  if len(scores) > n:  # a cheap cut first; everything tied with the n-th best stays for the sort
    keep = scores >= np.partition(scores, len(scores) - n)[len(scores) - n]
    scores, flat = scores[keep], flat[keep]
  order = np.lexsort((flat, -scores))[:n]
  return scores[order], flat[order]


@functools.partial(jax.jit, static_argnames=("sizes", "chunk", "pearson"))
def _chunk_scores(logits_NxW: jax.Array, columns_CxK: jax.Array, targets_N: jax.Array, start: jax.Array, *,
                  sizes: tuple[int, ...], chunk: int, pearson: bool) -> jax.Array:
  """[chunk] scores of the mappings start, start + 1, ... of the product's row-major enumeration:
  correct counts (float32, exact), or Pearson correlations (past the end: anything)."""
  flat_M = start + jnp.arange(chunk, dtype=jnp.int32)
  digits_MxC = jnp.stack(jnp.unravel_index(flat_M, sizes), axis=-1)
  words_MxC = columns_CxK[jnp.arange(len(sizes)), digits_MxC]
  logits_NxMxC = logits_NxW[:, words_MxC]
  if not pearson:
    predicted_NxM = jnp.argmax(logits_NxMxC, axis=-1)  # ties: the first class, as LM-BFF's np.argmax
    return jnp.sum(predicted_NxM == targets_N[:, None], axis=0, dtype=jnp.int32).astype(jnp.float32)
  high_NxM = jax.nn.sigmoid(logits_NxMxC[..., 1] - logits_NxMxC[..., 0])  # softmax's p(second word)
  high_NxM = high_NxM - jnp.mean(high_NxM, axis=0)
  gold_N = targets_N - jnp.mean(targets_N)
  corr_M = (gold_N @ high_NxM) / jnp.sqrt(jnp.sum(high_NxM**2, axis=0) * jnp.sum(gold_N**2))
  # LM-BFF scores a pair of one word twice -1; an undefined correlation (constant p) ranks with them.
  return jnp.where((words_MxC[:, 0] == words_MxC[:, 1]) | ~jnp.isfinite(corr_M), -1.0, corr_M)


def write_mappings(path: str | epath.PathLike, result: Search) -> None:
  """The search as JSON, written whole and then renamed: a killed run leaves no half file."""
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  partial = path.parent / (path.name + ".partial")
  partial.write_text(json.dumps(dataclasses.asdict(result), indent=1) + "\n", encoding="utf-8")
  partial.rename(path)


def read_mappings(path: str | epath.PathLike) -> Search:
  raw = json.loads(epath.Path(path).read_text(encoding="utf-8"))
  mappings = tuple(Mapping(tuple(m["words"]), tuple(m["token_ids"]), float(m["score"])) for m in raw["mappings"])
  return Search(raw["task"], tuple(raw["label_names"]), raw["metric"], int(raw["examples"]),
                tuple(tuple(words) for words in raw["candidates"]), mappings)


def with_label_words(spec: task_spec.TaskSpec, words: Sequence[str]) -> task_spec.TaskSpec:
  """The task verbalized by a mapping's `words` (Mapping.words): one label word per class."""
  if len(words) != len(spec.label_names):
    raise ValueError(f"Task {spec.name!r}: a mapping of {len(words)} words for {len(spec.label_names)} classes")
  return dataclasses.replace(spec, verbalizer=tuple(words))
