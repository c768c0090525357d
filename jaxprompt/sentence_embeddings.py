"""Sentence embeddings from a sentence-transformers BERT checkpoint, and LM-BFF's demonstration filter.

    encoder = SentenceEncoder("path/to/all-MiniLM-L6-v2")
    emb_NxD = encoder.embed([join_fields(s1, s2) for s1, s2 in pairs])
    kept = top_similar_per_class(query_QxD, emb_NxD, labels_N, num_classes=2)   # kept[q][c]: indices

LM-BFF (Gao et al. 2021, §6, `--demo_filter`) embeds every example with sentence-BERT and lets each
query draw its demonstrations only from the candidates of each class most similar to it.
"""

from __future__ import annotations

import bisect
import functools
import json
import os
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np

from jaxprompt.models.bert import Bert, l2_normalize, mean_pool
from jaxprompt.models.bert_config import BertConfig
from jaxprompt.weights.bert_loader import load_bert
from jaxprompt.weights.hf_tokenizer import load_hf_tokenizer

_SHORTEST_BUCKET = 16
# Similarity rows computed at once: bounds the [queries, candidates] float64 matrix to ~32 MB.
_SIMILARITY_ELEMENTS = 1 << 22


def join_fields(*sentences: str) -> str:
  """An example's sentences as one text, "s1 s2": how LM-BFF embeds sentence pairs (tools/get_sbert_embedding.py)."""
  return " ".join(sentences)


def _embed_BxD(config: BertConfig, params, ids_BxL: jax.Array, mask_BxL: jax.Array) -> jax.Array:
  """Mean of the last layer's valid states, L2-normalised (the pooler's output is unused, so XLA drops it)."""
  out = Bert(config).apply(params, ids_BxL, mask_BxL)
  return l2_normalize(mean_pool(out.hidden_BxTxD, out.mask_BxT))


def length_buckets(max_length: int) -> tuple[int, ...]:
  """Powers of two from 16 below `max_length`, then `max_length`: one compiled forward per bucket."""
  buckets = []
  length = _SHORTEST_BUCKET
  while length < max_length:
    buckets.append(length)
    length *= 2
  return (*buckets, max_length)


def _configured_max_length(checkpoint: str | os.PathLike) -> int | None:
  """sentence_bert_config.json's max_seq_length, which sentence-transformers truncates to, if the folder has one."""
  config = Path(checkpoint).expanduser() / "sentence_bert_config.json"
  return json.loads(config.read_text())["max_seq_length"] if config.is_file() else None


class SentenceEncoder:
  """A sentence-transformers BERT / RoBERTa as Transformer -> Pooling(mean) -> Normalize.

  That chain is all-MiniLM-L6-v2's modules.json: the last layer's states averaged over the
  attention mask, then L2-normalised. (A checkpoint without the Normalize module, such as LM-BFF's
  roberta-large-nli-stsb-mean-tokens, ranks the same by cosine similarity.) Texts are cut to
  `max_length` word pieces, special tokens included, as sentence-transformers does. By default that
  is the folder's sentence_bert_config.json max_seq_length, so embeddings equal the library's
  (all-MiniLM-L6-v2: 256, the cut its model card states, though its table has 512 positions: it
  was fine-tuned on 128-token inputs), else every position the model has.
  """

  def __init__(self, checkpoint: str | os.PathLike, *, max_length: int | None = None, dtype: str = "float32"):
    self.config, self.params = load_bert(str(checkpoint), param_dtype=dtype, dtype=dtype)
    positions = self.config.max_position_embeddings - self.config.position_offset
    if max_length is None:
      max_length = _configured_max_length(checkpoint) or positions
    if not 2 <= max_length <= positions:  # room for [CLS] and [SEP], and a position for every token
      raise ValueError(f"max_length={max_length}: {checkpoint} takes 2 to {positions} tokens")
    self.max_length = max_length
    self.tokenizer = load_hf_tokenizer(checkpoint)
    # Its own tokenizer object, so truncating it here changes no one else's: the library's
    # truncation keeps the special tokens, as transformers' truncation=True does.
    self.tokenizer.tokenizer.enable_truncation(self.max_length)
    self.buckets = length_buckets(self.max_length)
    self._forward = jax.jit(functools.partial(_embed_BxD, self.config))

  def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Unit-length float32 embeddings [N, D] of `texts`, in their order."""
    ids = self.tokenizer.encode_batch(texts, add_special_tokens=True)
    # Longest first, as sentence-transformers batches: similar lengths share a batch and its bucket.
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    emb_NxD = np.zeros((len(ids), self.config.hidden_size), np.float32)
    for start in range(0, len(order), batch_size):
      rows = order[start:start + batch_size]
      ids_BxL, mask_BxL = self._padded([ids[i] for i in rows], batch_size)
      emb_NxD[rows] = np.asarray(self._forward(self.params, ids_BxL, mask_BxL))[:len(rows)]
    return emb_NxD

  def _padded(self, ids: list[list[int]], rows: int) -> tuple[np.ndarray, np.ndarray]:
    """ids padded to `rows` rows and the bucket of the longest, so every batch has one of a few shapes."""
    length = self.buckets[bisect.bisect_left(self.buckets, max(map(len, ids)))]
    ids_BxL = np.full((rows, length), self.tokenizer.pad_id, np.int32)
    mask_BxL = np.zeros((rows, length), bool)
    mask_BxL[len(ids):, 0] = True  # padding rows attend to one slot, so no softmax sees only masked keys
    for row, sequence in enumerate(ids):
      ids_BxL[row, :len(sequence)] = sequence
      mask_BxL[row, :len(sequence)] = True
    return ids_BxL, mask_BxL


def _unit_rows(x_NxD: np.ndarray) -> np.ndarray:
  x_NxD = np.asarray(x_NxD, np.float64)
  return x_NxD / np.maximum(np.linalg.norm(x_NxD, axis=1, keepdims=True), 1e-12)


def top_similar_per_class(
    queries_QxD: np.ndarray,
    candidates_NxD: np.ndarray,
    candidate_labels_N: np.ndarray,
    num_classes: int,
    rate: float = 0.5,
    exclude_QxN: np.ndarray | None = None,
) -> list[list[np.ndarray]]:
  """LM-BFF's demonstration filter: out[q][c] = the candidates of class c that query q keeps, most similar first.

  As LM-BFF's src/dataset.py (dataset init, demo_filter): query q ranks the M candidates it may use
  (all but those `exclude_QxN[q]` marks, e.g. a training query itself) by cosine similarity and
  keeps, per class, the first int(M // num_classes * rate) of that class; ties keep the lower
  candidate index first (Python's stable sort). Regression tasks pass their two pseudo-classes.
  Unlike LM-BFF, a class with any candidate keeps at least one, so tiny pools never leave a class
  without demonstrations. Similarities are float64 matmuls over chunks of queries; candidates whose
  similarities differ by rounding only may rank differently from LM-BFF's float32 ones.
  """
  labels_N = np.asarray(candidate_labels_N)
  num_queries, num_candidates = len(queries_QxD), len(candidates_NxD)
  shapes = (np.shape(queries_QxD), np.shape(candidates_NxD), labels_N.shape)
  if len(shapes[0]) != 2 or len(shapes[1]) != 2 or shapes[0][1] != shapes[1][1] or shapes[2] != (num_candidates,):
    raise ValueError(f"queries {shapes[0]}, candidates {shapes[1]} and labels {shapes[2]} do not fit:"
                     " [Q, D], [N, D], [N]")
  if num_candidates and (labels_N.min() < 0 or labels_N.max() >= num_classes):
    raise ValueError(f"candidate labels must be class indices in [0, {num_classes}), got {np.unique(labels_N)}")
  if exclude_QxN is not None:
    exclude_QxN = np.asarray(exclude_QxN, bool)
    if exclude_QxN.shape != (num_queries, num_candidates):
      raise ValueError(f"exclude_QxN has shape {exclude_QxN.shape}, not [Q, N] = {(num_queries, num_candidates)}")
  if rate <= 0:
    raise ValueError(f"rate={rate}: the fraction of each class's share to keep must be positive")
  queries_QxD, candidates_NxD = _unit_rows(queries_QxD), _unit_rows(candidates_NxD)
  chunk = max(1, _SIMILARITY_ELEMENTS // max(num_candidates, 1))
  kept = []
  for start in range(0, num_queries, chunk):
    stop = min(start + chunk, num_queries)
    sim_RxN = queries_QxD[start:stop] @ candidates_NxD.T
    # Stable descending order: equal similarities stay in candidate order, as in LM-BFF.
    order_RxN = np.argsort(-sim_RxN, axis=1, kind="stable")
    usable_RxN = np.ones_like(sim_RxN, bool)
    if exclude_QxN is not None:
      usable_RxN = ~np.take_along_axis(exclude_QxN[start:stop], order_RxN, axis=1)
    count_R = usable_RxN.sum(axis=1)
    limit_R = np.maximum(((count_R // num_classes) * rate).astype(np.int64), 1)
    label_RxN = labels_N[order_RxN]
    per_class = []
    for c in range(num_classes):
      member_RxN = usable_RxN & (label_RxN == c)
      keep_RxN = member_RxN & (np.cumsum(member_RxN, axis=1) <= limit_R[:, None])
      rows, columns = np.nonzero(keep_RxN)  # row-major: each row's picks in similarity order
      per_class.append(np.split(order_RxN[rows, columns], np.cumsum(keep_RxN.sum(axis=1))[:-1]))
    kept += [[indices[r] for indices in per_class] for r in range(stop - start)]
  return kept
