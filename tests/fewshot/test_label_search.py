"""LM-BFF's label-word search: on a random MLM rigged so that a known word wins the mask for each
class, the search finds that mapping at rank 0; the product's scoring equals a brute-force loop;
only word-initial tokens are proposed (WordPiece and byte-level BPE); the regression scoring
against a hand computation; ties broken the documented way; the JSON round trip. The same on a
random decoder with SmolLM2's tokenizer, rigged so that its next token after the pattern's text
depends on a class's marker word."""

from __future__ import annotations

import dataclasses
import itertools
import re

import jax
import numpy as np
import pytest
import tokenizers

from configs import cloze as cloze_config
from jaxprompt import experiment
from jaxprompt.fewshot import label_search
from jaxprompt.tasks import cloze
from jaxprompt.tasks.cloze_presets import LM_BFF_PRESETS
from jaxprompt.tasks.features import Feature
from jaxprompt.tasks.patterns import ClozeTokens
from jaxprompt.weights.hf_tokenizer import load_hf_tokenizer
from tests.assets import minilm_dir, smollm2_gguf
from tests.conftest import SHARED_DATA
from tests.method_runs import small, tiny_mlm

# Two-token sentences for class 0, four-token ones for class 1: with LM-BFF's SST-2 template
# ([CLS] sentence it was [MASK] . [SEP]) the mask sits at position 5 or 7, which the rig reads.
_NEGATIVE = ["bad film", "dull plot", "weak story", "poor acting", "boring script", "flat jokes", "sad mess",
             "cheap sets"]
_POSITIVE = ["a truly fine film", "the cast is good", "such a nice story", "it is very fun", "the plot is clever",
             "a warm and funny", "the music is great", "what a lovely cast"]
_WORDS = ("dreadful", "superb")  # the rig's answer: not the preset's words (terrible, great)
_MASK_AT = (5, 7)


def _rig(exp: experiment.Experiment) -> None:
  """Makes the mask's state depend on the mask's position alone: class c's position favours
  _WORDS[c], with the other class's word second and every other token the same for both classes.

  The layers add nothing (zero output projections: the post-LN layers only re-normalise) and the
  head's dense is the identity, so the mask's state is its normalised embeddings, dominated by a
  large position row along axis c. Word c's embedding lies along axis c plus half the other axis;
  no other row of the token or type embeddings has a component on the two axes, so the two
  classes' states are each other with the axes swapped, and every other token scores both alike."""
  weights = exp.pretrained  # train=all: every backbone weight, by path
  dim = weights["embeddings/position_embedding"].shape[1]
  ids = [exp.backbone.codec.cloze.word_ids(word) for word in _WORDS]
  assert all(len(i) == 1 for i in ids), ids
  axes = np.eye(dim)

  def replace(path, update):
    old = np.asarray(weights[path])
    weights[path] = jax.device_put(update(old.copy()).astype(old.dtype), weights[path].sharding)

  def off_axes(table):
    table[:, :2] = 0.0
    return table

  def positions(table):
    for c, at in enumerate(_MASK_AT):
      table[at] = 10.0 * axes[c]
    return table

  def words(table):
    off_axes(table)
    for c, (token,) in enumerate(ids):
      table[token] = axes[c] + 0.5 * axes[1 - c]
    return table

  for path in ("encoder/layers/attention/out/kernel", "encoder/layers/attention/out/bias",
               "encoder/layers/mlp/wo/kernel", "encoder/layers/mlp/wo/bias", "mlm_head/dense/bias"):
    replace(path, np.zeros_like)
  replace("embeddings/position_embedding", positions)
  replace("embeddings/token_type_embedding", off_axes)
  replace("mlm_head/dense/kernel", lambda _: axes)
  replace("token_embedder/embedding", words)


def _experiment(folder, task: str, header: str, rows: list[str], backbone=tiny_mlm):
  """configs/cloze.py's LM-BFF recipe for `task`, shrunk (`backbone`: a tiny random MLM), training on `rows`."""
  (folder / "train.tsv").write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
  config = small(backbone(cloze_config.get_config(f"recipe=lm_bff,task={task},data=tfds")))
  config.model.scan_layers = True  # the rigs set each weight of every layer at once, as one stacked array
  for source in (config.data.train, config.data.eval):
    source.update(kind="tsv", files=(str(folder / "train.tsv"),), tfds_name="", split="")
  exp = experiment.build(config)
  return exp, experiment.task_features(exp, exp.tasks[0], "train")


@pytest.fixture(scope="module")
def rigged(tmp_path_factory):
  rows = [f"{s}\t0" for s in _NEGATIVE] + [f"{s}\t1" for s in _POSITIVE]
  exp, features = _experiment(tmp_path_factory.mktemp("sst2"), "sst2", "sentence\tlabel", rows)
  assert sorted({(f.label, f.mask_positions[0]) for f in features}) == [(0, 5), (1, 7)]
  _rig(exp)
  return exp, features, label_search.search_label_words(exp, k=5, n=25)


def test_the_search_finds_the_rigged_mapping_at_rank_0(rigged):
  _, _, result = rigged
  assert result.mappings[0].words == _WORDS
  assert [c[:2] for c in result.candidates] == [_WORDS, _WORDS[::-1]]
  assert result.examples == 16 and result.metric == "accuracy" and len(result.mappings) == 25  # all 5 x 5
  # Every other mapping has a word that wins (or loses) both classes alike; the rig's swap loses both.
  assert [m.score for m in result.mappings] == [1.0] + [0.5] * 23 + [0.0]
  assert result.mappings[-1].words == _WORDS[::-1]


def test_the_two_device_passes_agree(rigged):
  _assert_the_two_device_passes_agree(*rigged)


def _assert_the_two_device_passes_agree(exp, features, result):
  """The class means of the full-vocabulary pass equal those of the candidate columns read again."""
  weights = exp.merged(exp.pretrained)
  _, classes, _ = label_search.search_targets(exp.tasks[0].spec, features)
  sums = label_search.class_logit_sums(exp, weights, features, classes, 2)
  ids = np.array(sorted({t for m in result.mappings for t in m.token_ids}))
  logits = label_search.candidate_logits(exp, weights, features, ids)
  for c in range(2):
    np.testing.assert_allclose(logits[classes == c].mean(axis=0), sums[c, ids] / np.sum(classes == c), rtol=1e-5,
                               atol=1e-5)


def test_the_search_is_deterministic(rigged):
  exp, features, result = rigged
  assert label_search.search_label_words(exp, features=features[::-1], k=5, n=25) == result


def test_seed_neighbours_re_rank_the_searched_candidates(rigged):
  """LM-BFF's TREC: of each class's k candidates, those nearest its manual word (terrible, great)."""
  exp, features, result = rigged
  seeded = label_search.search_label_words(exp, features=features, k=5, n=4, seed_neighbours=2)
  table = np.asarray(exp.pretrained["token_embedder/embedding"])
  ids = [np.array([exp.backbone.codec.cloze.word_ids(w)[0] for w in words]) for words in result.candidates]
  seeds = [exp.backbone.codec.cloze.word_ids(w)[0] for w in ("terrible", "great")]
  nearest = label_search.nearest_to_seeds(ids, seeds, lambda i: table[i], 2)
  vocab = exp.backbone.tokenizer.tokenizer.id_to_token
  assert seeded.candidates == tuple(tuple(vocab(int(t)) for t in class_ids) for class_ids in nearest)
  assert len(seeded.mappings) == 4


def test_the_json_round_trip_and_the_task_spec(rigged, tmp_path):
  exp, _, result = rigged
  path = tmp_path / "search" / "mappings.json"
  label_search.write_mappings(path, result)
  assert label_search.read_mappings(path) == result
  spec = label_search.with_label_words(exp.tasks[0].spec, result.mappings[0].words)
  assert spec.verbalizer == _WORDS and spec.pattern == exp.tasks[0].spec.pattern
  words = cloze.label_words(spec, exp.backbone.codec.cloze, multi_token=False)
  assert tuple(words.ids_CxWxK[:, 0, 0]) == result.mappings[0].token_ids


def test_a_regression_is_scored_by_pearson_against_its_gold_scores(tmp_path):
  """STS-B's template on the rig: low scores' first sentences have 4 tokens (the mask at 5), high
  ones' 6 (at 7); the best mapping's score is the Pearson correlation of p(second word), by hand."""
  low, high = "the cat sat down", "a man is playing the guitar"
  rows = [f"{low}\tit is {i}\t{0.2 * i:.1f}" for i in range(8)]
  rows += [f"{high}\tit is {i}\t{3 + 0.2 * i:.1f}" for i in range(8)]
  # configs/cloze.py reads STS-B's score from TFDS's field name, "label".
  exp, features = _experiment(tmp_path, "stsb", "sentence1\tsentence2\tlabel", rows)
  assert sorted({(f.score < 2, f.mask_positions[0]) for f in features}) == [(False, 7), (True, 5)]
  _rig(exp)
  result = label_search.search_label_words(exp, k=4, n=5)
  assert result.metric == "pearson" and result.examples == 16
  assert [c[0] for c in result.candidates] == list(_WORDS)  # the classes: the scores above the median
  scores = [m.score for m in result.mappings]
  assert scores == sorted(scores, reverse=True) and len(scores) == 5
  best = result.mappings[0]
  logits = label_search.candidate_logits(exp, exp.merged(exp.pretrained), features, np.array(best.token_ids))
  high_p = np.exp(logits[:, 1]) / np.exp(logits).sum(axis=1)
  gold = np.array([f.score for f in features])
  np.testing.assert_allclose(best.score, np.corrcoef(high_p, gold)[0, 1], rtol=1e-5)


def _brute_force(logits, columns, targets, pearson):
  """Every mapping in itertools.product's order, scored one by one (LM-BFF's eval_pairing_*)."""
  scored = []
  for mapping in itertools.product(*columns):
    chosen = logits[:, list(mapping)].astype(np.float64)
    if not pearson:
      score = np.mean(np.argmax(chosen, axis=1) == targets)
    elif mapping[0] == mapping[1]:
      score = -1.0
    else:
      high = np.exp(chosen[:, 1]) / np.exp(chosen).sum(axis=1)
      score = np.corrcoef(high, targets)[0, 1]
    scored.append((mapping, score))
  order = sorted(range(len(scored)), key=lambda i: (-scored[i][1], i))  # equal scores: enumeration order
  return [scored[i] for i in order]


@pytest.mark.parametrize("chunk", [None, 7])
def test_product_scoring_equals_a_brute_force_loop(chunk):
  rng = np.random.default_rng(0)
  logits = rng.integers(0, 4, size=(10, 12)).astype(np.float32)  # small integers: many ties
  columns = [np.array([0, 3, 5, 7]), np.array([1, 3, 8]), np.array([2, 4, 6, 9, 11])]
  targets = rng.integers(0, 3, size=10).astype(np.int32)
  chosen, scores = label_search.best_mappings(logits, columns, targets, 20, pearson=False, chunk=chunk)
  expected = _brute_force(logits, columns, targets, pearson=False)[:20]
  assert [tuple(row) for row in chosen] == [m for m, _ in expected]
  np.testing.assert_array_equal(scores, [s for _, s in expected])


def test_regression_scoring_against_a_hand_computation():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(6, 5)).astype(np.float32)
  gold = np.array([0.5, 1.0, 2.0, 2.0, 3.0, 4.5], np.float32)
  columns = [np.array([0, 1, 2]), np.array([2, 3, 4])]  # column 2 in both: the pair (2, 2) scores -1
  chosen, scores = label_search.best_mappings(logits, columns, gold, 9, pearson=True, chunk=4)
  expected = _brute_force(logits, columns, gold, pearson=True)
  assert [tuple(row) for row in chosen] == [m for m, _ in expected]
  np.testing.assert_allclose(scores, [s for _, s in expected], rtol=1e-5, atol=1e-6)
  assert dict(expected)[(2, 2)] == -1.0


def test_regression_classes_are_the_scores_above_the_training_median():
  spec = LM_BFF_PRESETS["stsb"].task_spec("stsb", None)
  scores = [0.5, 1.0, 2.0, 2.0, 3.0, 4.5, float("nan")]
  features = [Feature([101, 103, 102], [], label=-1, group=0, mask_positions=[1], score=s) for s in scores]
  kept, classes, targets = label_search.search_targets(spec, features)
  assert len(kept) == 6  # the unscored one is left out
  np.testing.assert_array_equal(classes, [0, 0, 0, 0, 1, 1])  # median 2.0: ties at it go to class 0
  np.testing.assert_array_equal(targets, scores[:6])


def _proposed(tokenizer, word_ids) -> dict[int, str]:
  words = label_search.vocabulary_words(tokenizer, word_ids, tokenizer.vocab_size)
  return {i: w for i, w in enumerate(words) if w is not None}


def _specials(tokenizer) -> set[int]:
  return {tokenizer.token_to_id(t) for t in dataclasses.astuple(tokenizer.special) if t is not None}


def test_only_word_initial_wordpiece_tokens_are_proposed():
  tokenizer = load_hf_tokenizer(minilm_dir())
  vocab = {i: t for t, i in tokenizer.tokenizer.get_vocab(with_added_tokens=True).items()}
  proposed = _proposed(tokenizer, ClozeTokens.from_hf(tokenizer).word_ids)
  assert not [vocab[i] for i in proposed if vocab[i].startswith("##") or vocab[i].startswith("[unused")]
  assert _specials(tokenizer) and not _specials(tokenizer) & set(proposed)
  assert all(proposed[i] == vocab[i] for i in proposed)  # a WordPiece word is its token
  assert {"great", "terrible", "superb"} <= set(proposed.values()) and len(proposed) > 20_000


def test_only_word_initial_byte_level_bpe_tokens_are_proposed(tmp_path):
  """A RoBERTa-style vocabulary (vocab.json + merges.txt) trained on SST-2's dev sentences."""
  sentences = [row.split("\t")[0] for row in (SHARED_DATA / "sst2" / "dev.tsv").read_text().splitlines()[1:]]
  trainer = tokenizers.ByteLevelBPETokenizer()
  trainer.train_from_iterator(sentences, vocab_size=600, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                              show_progress=False)
  trainer.save_model(str(tmp_path))
  tokenizer = load_hf_tokenizer(tmp_path)
  vocab = {i: t for t, i in tokenizer.tokenizer.get_vocab(with_added_tokens=True).items()}
  proposed = _proposed(tokenizer, ClozeTokens.from_hf(tokenizer).word_ids)
  assert all(vocab[i] == "Ġ" + w for i, w in proposed.items())  # the word is the text after the 'Ġ'
  spaced = {i for i, t in vocab.items() if t.startswith("Ġ") and t != "Ġ"}  # a bare 'Ġ' is no word
  assert set(proposed) == spaced and not _specials(tokenizer) & set(proposed)
  assert {"the", "film"} <= set(proposed.values())


def test_candidates_skip_unproposable_tokens_and_break_ties_by_token_id():
  mean = np.array([[5.0, 1.0, 3.0, 3.0, 0.0, 3.0], [0.0, 2.0, 2.0, 9.0, 2.0, 1.0]])
  proposable = np.array([False, True, True, True, True, True])
  chosen = label_search.top_candidates(mean, proposable, 3)
  np.testing.assert_array_equal(chosen[0], [2, 3, 5])  # token 0 has the best mean but is no word
  np.testing.assert_array_equal(chosen[1], [3, 1, 2])


def test_seed_neighbours_keep_the_candidates_nearest_the_manual_word():
  table = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 2.0], [1.0, 0.1], [-1.0, 0.0]])
  candidates = [np.array([5, 1, 2, 3, 4])]  # in likelihood order
  kept = label_search.nearest_to_seeds(candidates, [0], lambda ids: table[ids], 3)
  np.testing.assert_array_equal(kept[0], [4, 2, 3])  # 2 and 3 point the same way: likelihood order


# A decoder reads "<sentence> It was" and continues it: every input ends with " was", and the class
# is carried by a marker word inside the sentence, which the rig routes to the last column.
_MARKED = {"bad": ["a bad film", "the plot was bad", "such a bad story", "very bad acting", "a bad and boring script",
                   "the jokes are bad", "it is a bad mess", "so bad"],
           "good": ["a good film", "the plot was good", "such a good story", "very good acting", "a good and funny cast",
                    "the jokes are good", "it is a good time", "so good"]}
_MARKERS = ("bad", "good")
_NOT_WORD_INITIAL = "great"  # the rig's favourite token for both classes: "great" without the 'Ġ'


def _tiny_smollm(config):
  """A random 2-layer Llama with SmolLM2's real tokenizer (byte-level BPE, 'Ġ' word starts)."""
  config.model.family, config.model.checkpoint, config.model.size = "llama", "", "tiny"
  config.model.tokenizer, config.model.dropout_rate = str(smollm2_gguf()), 0.0
  return config


def _rig_decoder(exp: experiment.Experiment) -> dict[str, int]:
  """Makes the next-token logits after the last input token depend on the input's marker word:
  class c's marker favours _WORDS[c], the other class's word second; the token 'great' (no 'Ġ')
  beats both on every input. Returns the rigged tokens by name.

  The MLPs add nothing (zero down projections); zero query and key kernels make attention uniform
  over the tokens so far; head 0's values and output copy axes 0 and 1 of each token's normalised
  state. Only the markers' embeddings have a component there (marker c: a large one along axis c),
  so for class c the last column's state points along axis c. The LM head reads the two axes for
  the rigged tokens alone: word c along axis c plus half the other, 'great' twice both."""
  weights, codec = exp.pretrained, exp.backbone.codec
  ids = {w: codec.encode_label(codec.word_prefix + w) for w in (*_WORDS, *_MARKERS)}
  ids[_NOT_WORD_INITIAL] = codec.encode_label(_NOT_WORD_INITIAL)
  assert all(len(i) == 1 for i in ids.values()), ids
  ids = {w: i for w, (i,) in ids.items()}

  def replace(path, update):
    old = np.asarray(weights[path])
    weights[path] = jax.device_put(update(old.copy()).astype(old.dtype), weights[path].sharding)

  def embeddings(table_VxD):
    table_VxD[:, :2] = 0.0
    for c, marker in enumerate(_MARKERS):
      table_VxD[ids[marker], c] = 10.0
    return table_VxD

  def copy_two_axes(kernel, into_value):
    kernel[:] = 0.0
    for axis in range(2):  # value kernel [layers, embed, kv_heads, kv]; out kernel [layers, heads, kv, embed]
      kernel[(slice(None), axis, 0, axis) if into_value else (slice(None), 0, axis, axis)] = 1.0
    return kernel

  def head(kernel_DxV):
    kernel_DxV[:2] = 0.0
    for c, word in enumerate(_WORDS):
      kernel_DxV[c, ids[word]], kernel_DxV[1 - c, ids[word]] = 10.0, 5.0
    kernel_DxV[:2, ids[_NOT_WORD_INITIAL]] = 20.0
    return kernel_DxV

  for path in ("decoder/layers/mlp/down/kernel", "decoder/layers/attention/query/kernel",
               "decoder/layers/attention/key/kernel"):
    replace(path, np.zeros_like)
  replace("decoder/layers/attention/value/kernel", lambda k: copy_two_axes(k, into_value=True))
  replace("decoder/layers/attention/out/kernel", lambda k: copy_two_axes(k, into_value=False))
  replace("token_embedder/embedding", embeddings)
  replace("lm_head/kernel", head)
  return ids


@pytest.fixture(scope="module")
def rigged_decoder(tmp_path_factory):
  rows = [f"{s}\t{c}" for c, marker in enumerate(_MARKERS) for s in _MARKED[marker]]
  exp, features = _experiment(tmp_path_factory.mktemp("sst2_decoder"), "sst2", "sentence\tlabel", rows, _tiny_smollm)
  ids = _rig_decoder(exp)
  marked = [{c for c, m in enumerate(_MARKERS) if ids[m] in f.inputs} for f in features]
  assert marked == [{f.label} for f in features] and len(features) == 16
  assert {exp.backbone.tokenizer.decode(f.inputs[-1:]) for f in features} == {" was"}  # the answer follows
  return exp, features, ids, label_search.search_label_words(exp, k=5, n=25)


def test_a_decoder_search_finds_the_rigged_mapping_at_rank_0(rigged_decoder):
  _, _, ids, result = rigged_decoder
  assert result.mappings[0].words == _WORDS and result.mappings[0].score == 1.0
  assert result.mappings[0].token_ids == tuple(ids[w] for w in _WORDS)
  assert [c[:2] for c in result.candidates] == [_WORDS, _WORDS[::-1]]
  assert result.examples == 16 and result.metric == "accuracy" and len(result.mappings) == 25
  assert {m.words: m.score for m in result.mappings}[_WORDS[::-1]] == 0.0
  assert not any(_NOT_WORD_INITIAL in c for c in result.candidates)  # the best-scoring token is no label word


def test_a_decoder_proposes_only_word_initial_single_tokens(rigged_decoder):
  """SmolLM2's 'Ġ' tokens that decode to a word; each mapping continues the pattern as one token each."""
  exp, _, _, result = rigged_decoder
  tokenizer, codec = exp.backbone.tokenizer, exp.backbone.codec
  vocab = {i: t for t, i in tokenizer.tokenizer.get_vocab(with_added_tokens=True).items()}
  proposed = _proposed(tokenizer, label_search.answer_reader(exp).word_ids)
  assert all(vocab[i].startswith("Ġ") and tokenizer.decode([i]) == " " + w for i, w in proposed.items())
  # The 'Ġ' tokens left out decode to no word: runs of spaces and newlines, partial UTF-8 bytes.
  left_out = {tokenizer.decode([i]) for i, t in vocab.items() if t.startswith("Ġ") and i not in proposed}
  assert all(not text.strip() or "\ufffd" in text for text in left_out)
  assert len(proposed) > 30_000 and not _specials(tokenizer) & set(proposed)
  assert {w for c in result.candidates for w in c} <= set(proposed.values())
  for mapping in result.mappings:
    spec = label_search.with_label_words(exp.tasks[0].spec, mapping.words)
    assert tuple(codec.encode_label(t) for t in cloze.label_texts(spec, codec)) == tuple([t] for t in mapping.token_ids)


def test_the_decoder_s_two_device_passes_agree(rigged_decoder):
  exp, features, _, result = rigged_decoder
  _assert_the_two_device_passes_agree(exp, features, result)


def test_the_decoder_projects_only_the_last_column(rigged_decoder):
  """The full-vocabulary pass never holds [B, L, V] logits: only the answer position is projected."""
  exp, features, _, _ = rigged_decoder
  batch = next(label_search._global_batches(exp, features))
  jaxpr = str(jax.make_jaxpr(label_search.answer_reader(exp).answer_logits)(exp.merged(exp.pretrained), batch))
  vocab = exp.backbone.config.vocab_size
  assert f"f32[8,{vocab}]" in jaxpr and not re.search(rf"\[\d+,\d+,{vocab}\]", jaxpr)


def test_a_decoder_s_seed_neighbours_compare_its_lm_head_columns(rigged_decoder):
  exp, features, _, result = rigged_decoder
  seeded = label_search.search_label_words(exp, features=features, k=5, n=4, seed_neighbours=2)
  columns = np.asarray(exp.pretrained["lm_head/kernel"]).T  # untied: not the input embeddings
  word_id = lambda w: exp.backbone.codec.encode_label(" " + w)[0]
  ids = [np.array([word_id(w) for w in words]) for words in result.candidates]
  nearest = label_search.nearest_to_seeds(ids, [word_id(w) for w in ("terrible", "great")], lambda i: columns[i], 2)
  assert seeded.candidates == tuple(tuple(exp.backbone.tokenizer.decode([t]).strip() for t in c) for c in nearest)


def test_t5_s_sentinels_are_not_searched(rigged_decoder):
  exp = rigged_decoder[0]
  codec = dataclasses.replace(exp.backbone.codec, cloze_sentinels=("<extra_id_0>", "<extra_id_1>"))
  t5_like = dataclasses.replace(exp, backbone=dataclasses.replace(exp.backbone, codec=codec))
  with pytest.raises(ValueError, match="does not run on T5"):
    label_search.search_label_words(t5_like)
