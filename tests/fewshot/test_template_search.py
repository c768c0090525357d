"""LM-BFF's T5 template search: inputs, outputs as templates, and a search on a tiny T5 with the real vocabulary."""

from __future__ import annotations

import dataclasses
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprompt.fewshot import template_search as ts
from jaxprompt.models.t5 import T5, shift_right
from jaxprompt.models.t5_config import T5Config
from jaxprompt.tasks import cloze
from jaxprompt.tasks.cloze_presets import LM_BFF_PRESETS
from jaxprompt.tasks.patterns import ClozeTokens
from jaxprompt.tasks.readers import read_delimited, read_jsonl
from jaxprompt.tasks.records import DataError, Record
from jaxprompt.weights.hf_tokenizer import load_hf_tokenizer
from jaxprompt.weights.tokenizer import load_t5_tokenizer
from tests.assets import minilm_dir

SST2 = LM_BFF_PRESETS["sst2"].task_spec("sst2")
RTE = LM_BFF_PRESETS["rte"].task_spec("rte")
CONFIG = T5Config.preset("tiny", dtype="float32")  # the real vocabulary's 32,128 rows, toy width


@pytest.fixture(scope="module")
def tok(shared_data):
  return load_t5_tokenizer(shared_data / "t5_vocab" / "spiece.model")


@pytest.fixture(scope="module")
def sst2_rows(shared_data):
  """The first rows of GLUE's SST-2 train.tsv, as the reader gives them (the sentences keep their trailing space)."""
  records = read_delimited(str(shared_data / "sst2" / "train.tsv"), "\t")
  return [next(records) for _ in range(8)]


@pytest.fixture(scope="module")
def rte_rows(shared_data):
  """FewGLUE's RTE pairs under GLUE's field names, which LM-BFF's RTE reads."""
  rows = read_jsonl(str(shared_data / "superglue" / "RTE" / "train32.jsonl"))
  rename = {"premise": "sentence1", "hypothesis": "sentence2", "label": "label"}
  return [Record({rename[k]: v for k, v in r.fields.items() if k in rename}, r.where) for r in rows]


def _pieces(tok, ids) -> str:
  return " ".join(tok.id_to_piece(i) for i in ids)


def _ids(tok, pieces: str) -> list[int]:
  ids = [tok.piece_to_id(p) for p in pieces.split()]
  assert tok.unk_id not in ids, pieces
  return ids


# ---------------------------------------------------------------------------------------------
# Inputs


def test_single_sentence_inputs_match_lm_bff_on_real_sst2_rows(tok, sst2_rows):
  # LM-BFF: "*cls**sentu_0**<extra_id_0>**label**<extra_id_1>**sep+*" and
  # "*cls*.*<extra_id_0>**label**<extra_id_1>**+sentu_0**sep+*", each piece encoded alone.
  expected = {
      0: ("▁Hi de ▁new ▁secret ions ▁from ▁the ▁parental ▁units", "▁terrible"),
      1: ("▁ Contains ▁no ▁ wit ▁ , ▁only ▁labor e d ▁gag s", "▁terrible"),
      2: ("▁That ▁loves ▁its ▁characters ▁and ▁communicate s ▁something ▁rather ▁beautiful ▁about ▁human"
          " ▁nature", "▁great"),
  }
  assert sst2_rows[0].fields == {"sentence": "hide new secretions from the parental units ", "label": "0"}
  for row, (sentence, word) in expected.items():
    after = ts.t5_input_ids(ts.SENTENCE_THEN_MASK, SST2, sst2_rows[row], tok)
    before = ts.t5_input_ids(ts.MASK_THEN_SENTENCE, SST2, sst2_rows[row], tok)
    assert _pieces(tok, after) == f"{sentence} <extra_id_0> {word} <extra_id_1> </s>"
    assert _pieces(tok, before) == f". <extra_id_0> {word} <extra_id_1> {sentence} </s>"
  # The "." is the vocabulary's piece 5, not "." encoded (which SentencePiece writes "▁", ".").
  assert before[0] == ts.DOT_ID == 5 and tok.encode(".", add_eos=False) == [3, 5]
  assert (after[-4], after[-3], after[-1]) == (32099, 248, 1)  # <extra_id_0>, ▁great, </s>


def test_pair_inputs_drop_the_last_character_and_lower_the_first(tok, rte_rows):
  # LM-BFF: "*cls**sent-_0**<extra_id_0>**label**<extra_id_1>**+sentl_1**sep+*".
  [row] = [r for r in rte_rows if r.fields["sentence2"] == "A tropical storm has caused loss of life."]
  assert row.fields["sentence1"] == "Tropical Storm Debby is blamed for several deaths across the Caribbean."
  assert _pieces(tok, ts.t5_input_ids(ts.PAIR, RTE, row, tok)) == (
      "▁Tropical ▁Storm ▁Deb by ▁is ▁blame d ▁for ▁several ▁deaths ▁across ▁the ▁Caribbean"
      " <extra_id_0> ▁Yes <extra_id_1> ▁ a ▁tropical ▁storm ▁has ▁caused ▁loss ▁of ▁life . </s>")
  [row] = [r for r in rte_rows if r.fields["sentence2"] == "Kerry shot Bush."]
  assert row.fields["label"] == "not_entailment"
  assert _pieces(tok, ts.t5_input_ids(ts.PAIR, RTE, row, tok)) == (
      "▁Kerry ▁hit ▁Bush ▁hard ▁on ▁his ▁conduct ▁on ▁the ▁war ▁in ▁Iraq <extra_id_0> ▁No <extra_id_1>"
      " ▁ ker ry ▁shot ▁Bush . </s>")


def test_long_inputs_keep_the_last_or_the_first_256_tokens(tok, sst2_rows):
  text = " ".join(r.fields["sentence"] for r in sst2_rows) * 4
  record = Record({"sentence": text, "label": "1"}, "long")
  sentence = tok.encode(text[:1].upper() + text[1:], add_eos=False)
  assert len(sentence) > 300
  spans = [32099, 248, 32098]  # <extra_id_0> ▁great <extra_id_1>
  after = ts.t5_input_ids(ts.SENTENCE_THEN_MASK, SST2, record, tok)
  before = ts.t5_input_ids(ts.MASK_THEN_SENTENCE, SST2, record, tok)
  assert after == [*sentence, *spans, 1][-256:]  # the spans and </s> stay, the sentence's head goes
  assert before == [5, *spans, *sentence, 1][:256]  # the sentence's tail and </s> go
  assert len(after) == len(before) == ts.MAX_INPUT_LEN
  pair = Record({"sentence1": text, "sentence2": text, "label": "entailment"}, "long pair")
  assert len(ts.t5_input_ids(ts.PAIR, RTE, pair, tok)) > 2 * 300  # LM-BFF cuts no pair


def test_gold_words_and_tasks_the_search_reads():
  assert ts.gold_word(SST2, Record({"sentence": "a", "label": "1"}, "x")) == "great"
  assert ts.gold_word(RTE, Record({"label": "not_entailment"}, "x")) == "No"
  stsb = LM_BFF_PRESETS["stsb"].task_spec("stsb")  # LM-BFF: class 0 below a score of 2.5
  assert [ts.gold_word(stsb, Record({"score": s}, "x")) for s in ("2.4", "2.5", "5.0")] == ["No", "Yes", "Yes"]
  with pytest.raises(DataError, match="x: label '2' is not one of"):
    ts.gold_word(SST2, Record({"label": "2"}, "x"))
  assert ts.forms_of(SST2) == (ts.SENTENCE_THEN_MASK, ts.MASK_THEN_SENTENCE) and ts.forms_of(RTE) == (ts.PAIR,)
  assert len(ts.forms_of(LM_BFF_PRESETS["trec"].task_spec("trec"))) == 2
  with pytest.raises(ValueError, match="needs an LM-BFF template"):
    ts.forms_of(dataclasses.replace(SST2, pattern="{~sentence} It was [MASK] .", pattern_fields=(), sentence_limits=()))


def test_lm_bff_search_settings(tok):
  spec = ts.beam_spec(tok, ts.BEAM_WIDTH, ts.MAX_DECODE_LEN)
  assert (spec.beam_width, spec.max_decode_len, spec.banned_ids, spec.no_repeat_id) == (100, 18, (3, 19794, 22354), 5)
  assert spec.part_end_ids == ((32098, 1), (32097, 1))  # <extra_id_1> or </s>, then <extra_id_2> or </s>
  assert [tok.id_to_piece(i) for i in (*spec.banned_ids, spec.no_repeat_id)] == ["▁", "." * 8, "." * 16, "."]
  assert [ts.BEAM_WIDTH // f.keep_share for f in (*ts.forms_of(SST2), *ts.forms_of(RTE))] == [50, 50, 100]


# ---------------------------------------------------------------------------------------------
# Outputs as templates


# T5's outputs, as pieces, and the templates LM-BFF's replacements make of them in each form.
CONVERSIONS = [
    ("<extra_id_0> ▁It ▁was <extra_id_1> . </s>", {
        ts.SENTENCE_THEN_MASK: "*cls**sent_0*_It_was*mask*.*sep+*",  # LM-BFF's manual SST-2 template
        ts.MASK_THEN_SENTENCE: "*cls*_It_was*mask*.*+sent_0**sep+*",
        ts.PAIR: "*cls**sent-_0*_It_was*mask*.*+sentl_1**sep+*"}),
    ("<extra_id_0> ▁This ▁is <extra_id_1> . <extra_id_2>", {
        ts.SENTENCE_THEN_MASK: "*cls**sent_0*_This_is*mask*.*sep+*"}),  # Subj's and CoLA's
    ("<extra_id_0> <extra_id_1> : </s>", {ts.MASK_THEN_SENTENCE: "*cls**mask*:*+sent_0**sep+*"}),  # TREC's
    ("<extra_id_0> ? <extra_id_1> , </s>", {ts.PAIR: "*cls**sent-_0*?*mask*,*+sentl_1**sep+*"}),  # RTE's
    ("<extra_id_0> ▁A <extra_id_1> ▁movie ! </s>", {ts.SENTENCE_THEN_MASK: "*cls**sent_0*_A*mask*_movie!*sep+*"}),
    # <extra_id_2> does not end the first span, nor <extra_id_1> the second; </s> ends either.
    ("<extra_id_0> ▁It <extra_id_2> ▁was <extra_id_1> . </s>", {
        ts.SENTENCE_THEN_MASK: "*cls**sent_0*_It*sep+*_was*mask*.*sep+*"}),
    ("<extra_id_0> ▁It </s> <extra_id_1> . </s>", {ts.SENTENCE_THEN_MASK: "*cls**sent_0*_It*sep+**mask*.*sep+*"}),
]


@pytest.mark.parametrize("pieces,templates", CONVERSIONS, ids=[c[0] for c in CONVERSIONS])
def test_outputs_become_lm_bff_templates(tok, pieces, templates):
  ids = _ids(tok, pieces)
  padded = [*ids, tok.pad_id, tok.pad_id]  # a finished beam, padded to the cap
  for form, template in templates.items():
    assert ts.template_text(form, padded, tok) == template
    task = RTE if form is ts.PAIR else SST2
    spec = ts.template_task(task, template, "auto")
    assert (spec.pattern, spec.name, spec.verbalizer, spec.sentence_limits) == (
        template, "auto", task.verbalizer, task.sentence_limits)
  assert ts.output_ids(padded, tok) == tuple(ids)


MALFORMED = [
    ("<extra_id_0> ▁It ▁was <extra_id_1> . ▁great ▁movie", "unfinished"),
    ("▁The <extra_id_0> ▁It <extra_id_1> . </s>", "text before <extra_id_0>"),
    ("<extra_id_0> <extra_id_3> <extra_id_1> . </s>", "not a text piece"),
    ("<extra_id_0> <unk> <extra_id_1> . </s>", "not a text piece"),
    ("<extra_id_0> <pad> <extra_id_1> . </s>", "not a text piece"),
    ("<extra_id_0> ▁* <extra_id_1> . </s>", "'*' in the text"),
    ("<extra_id_0> ▁great </s> ▁movie </s>", "no mask"),
    ("<extra_id_0> </s> <extra_id_1> <extra_id_1> </s>", "several masks"),
    ("<extra_id_0> <extra_id_0> <extra_id_1> . </s>", "a sentence missing or repeated"),
    ("<extra_id_0> <extra_id_1> sent </s>", "unreadable"),  # "*sent*" is a sentence piece LM-BFF lacks
]


@pytest.mark.parametrize("pieces,reason", MALFORMED, ids=[m[1] for m in MALFORMED])
def test_outputs_that_make_no_template_say_why(tok, pieces, reason):
  ids = [*(tok.piece_to_id(p) for p in pieces.split()), tok.pad_id]
  with pytest.raises(ts.MalformedOutput) as e:
    ts.template_task(SST2, ts.template_text(ts.SENTENCE_THEN_MASK, ids, tok), "auto")
  assert e.value.reason == reason


def test_ids_past_the_vocabulary_are_no_text(tok):
  with pytest.raises(ts.MalformedOutput, match="not a text piece: id 32100"):
    ts.template_text(ts.SENTENCE_THEN_MASK, [32099, 32100, 32098, 1], tok)


def test_templates_run_as_cloze_tasks_on_a_masked_lm(sst2_rows, rte_rows):
  bert = load_hf_tokenizer(minilm_dir())
  tokens = ClozeTokens.from_hf(bert)
  row = sst2_rows[2]
  cases = [(SST2, row, "*cls**sent_0*_It_was*mask*.*sep+*",
            "[CLS] that loves its characters and communicates something rather beautiful about human nature it"
            " was [MASK]. [SEP]"),
           (SST2, row, "*cls*_It_was*mask*.*+sent_0**sep+*",
            "[CLS] it was [MASK]. that loves its characters and communicates something rather beautiful about"
            " human nature [SEP]"),
           (RTE, rte_rows[[r.fields["sentence2"] for r in rte_rows].index("Kerry shot Bush.")],
            "*cls**sent-_0*_It_was*mask*.*+sentl_1**sep+*",
            "[CLS] kerry hit bush hard on his conduct on the war in iraq it was [MASK]. kerry shot bush. [SEP]")]
  for task, record, template, text in cases:
    spec = ts.template_task(task, template, "auto")
    example = cloze.encode_example(record, spec, tokens, 1, 128)
    assert bert.decode(example.ids, skip_special_tokens=False) == text
    assert [example.ids[p] for p in example.mask_positions] == [bert.mask_id]


# ---------------------------------------------------------------------------------------------
# Search


@pytest.fixture(scope="module")
def bigram_t5(tok):
  """A tiny T5 whose decoder mostly follows a bigram table over a few tokens, preferring the banned ones.

  Each listed token's embedding is a large basis vector, which outweighs what the (random) layers
  add, and the output projection maps it to the next tokens' logits; the layers, which read the
  input, shift every logit a little.
  """
  x, piece = tok.extra_id, tok.piece_to_id
  high = 20.0
  table = {
      0: {x(0): high},  # the decoder's start
      x(0): {3: high + 2, piece("▁It"): high, piece("▁This"): high - 1.5},  # 3: "▁", banned
      piece("▁It"): {piece("▁was"): high},
      piece("▁This"): {piece("▁is"): high},
      piece("▁was"): {x(1): high},
      piece("▁is"): {x(1): high},
      x(1): {19794: high + 2, 5: high},  # 19794: "........", banned
      5: {5: high + 2, tok.eos_id: high, x(2): high - 3},  # ". ." is banned
  }
  ids = jnp.ones((1, 4), jnp.int32)
  params = nn.meta.unbox(jax.jit(T5(CONFIG).init)(jax.random.key(0), ids, ids > 0, ids))
  embedding = np.array(params["params"]["token_embedder"]["embedding"])
  kernel = np.array(params["params"]["decoder"]["logits_dense"]["kernel"])
  kernel[:, sorted({n for row in table.values() for n in row})] = 0.0
  for axis, (token, row) in enumerate(table.items()):
    embedding[token] = 0.0
    embedding[token, axis] = 20.0
    for n, logit in row.items():
      kernel[axis, n] = logit / np.sqrt(CONFIG.d_model)  # the final norm scales the basis vector to sqrt(d)
  params["params"]["token_embedder"]["embedding"] = jnp.asarray(embedding)
  params["params"]["decoder"]["logits_dense"]["kernel"] = jnp.asarray(kernel)
  return T5(CONFIG), params


def _summed_logprobs(model, params, inputs, outputs) -> tuple[np.ndarray, np.ndarray]:
  """Teacher-forced log P(output | input) summed over the inputs [O], and the logits [N, O, T, V]."""
  length = max(map(len, inputs))
  ids = np.array([[*i, *[0] * (length - len(i))] for i in inputs])
  mask = np.arange(length)[None] < np.array([len(i) for i in inputs])[:, None]
  width = max(map(len, outputs))
  targets = np.array([[*o, *[0] * (width - len(o))] for o in outputs])
  live = np.arange(width)[None] < np.array([len(o) for o in outputs])[:, None]
  num, count = len(inputs), len(outputs)
  logits = model.apply(params, np.repeat(ids, count, 0), np.repeat(mask, count, 0),
                       jnp.tile(shift_right(jnp.asarray(targets), 0), (num, 1)))
  logprobs = np.asarray(jax.nn.log_softmax(logits)).reshape(num, count, width, -1)
  picked = np.take_along_axis(logprobs, targets[None, :, :, None], -1)[..., 0]
  return np.where(live[None], picked, 0.0).sum(axis=(0, 2)), np.asarray(logits).reshape(num, count, width, -1)


def test_search_finds_well_formed_templates_best_first_without_banned_ids(tok, sst2_rows, bigram_t5, tmp_path):
  model, params = bigram_t5
  search = ts.search_templates(model, params, tok, SST2, sst2_rows, beam_width=6, max_decode_len=8)
  assert search.task == SST2 and [f.form for f in search.forms] == ["sentence_then_mask", "mask_then_sentence"]
  for form, found in zip(ts.forms_of(SST2), search.forms):
    # Beam width 6 keeps 3 outputs per form; the third ends in <extra_id_2> rather than </s>, which
    # makes the best template again.
    assert [t.template for t in found.templates] == [
        ts.template_text(form, _ids(tok, "<extra_id_0> ▁It ▁was <extra_id_1> . </s>"), tok),
        ts.template_text(form, _ids(tok, "<extra_id_0> ▁This ▁is <extra_id_1> . </s>"), tok)]
    assert found.dropped == {"duplicate": 1}
    scores = [t.score for t in found.templates]
    assert scores == sorted(scores, reverse=True)
    inputs = [ts.t5_input_ids(form, SST2, r, tok) for r in sst2_rows]
    rescored, logits = _summed_logprobs(model, params, inputs, [t.ids for t in found.templates])
    np.testing.assert_allclose(scores, rescored, rtol=1e-5)  # the sum over these very inputs
    for t in found.templates:
      assert not set(t.ids) & set(ts.BANNED_IDS) and (ts.DOT_ID, ts.DOT_ID) not in zip(t.ids, t.ids[1:])
      assert t.task == ts.template_task(SST2, t.template, t.task.name)
    # The bans bind: where the best output has "▁", "........" and ". ." the model prefers them.
    assert list(logits[0, 0, [1, 4, 5]].argmax(-1)) == [3, 19794, ts.DOT_ID]
  assert search.forms[0].templates[0].template == LM_BFF_PRESETS["sst2"].pattern.text

  ts.write_templates(search, tmp_path / "templates.json")
  written = json.loads((tmp_path / "templates.json").read_text())
  assert written["task"] == "sst2"
  assert written["forms"][1] == {
      "form": "mask_then_sentence", "dropped": {"duplicate": 1},
      "templates": [{"template": t.template, "score": t.score, "ids": list(t.ids)} for t in search.forms[1].templates]}


def test_pair_search_keeps_every_beam(tok, rte_rows, bigram_t5):
  model, params = bigram_t5
  [found] = ts.search_templates(model, params, tok, RTE, rte_rows[:6], beam_width=6, max_decode_len=8).forms
  templates = [t.template for t in found.templates]
  assert templates[:2] == ["*cls**sent-_0*_It_was*mask*.*+sentl_1**sep+*",
                           "*cls**sent-_0*_This_is*mask*.*+sentl_1**sep+*"]
  assert len(templates) + sum(found.dropped.values()) == 6  # LM-BFF keeps all of a pair's beams
  assert found.dropped["duplicate"] == 2  # both again with <extra_id_2> for </s>
  assert all(t.task.pattern_fields == ("sentence1", "sentence2") for t in found.templates)
