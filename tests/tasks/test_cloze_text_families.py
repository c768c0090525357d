"""Cloze tasks on T5 (the mask as a sentinel, span-corruption targets) and on decoders (the label word
continues the pattern), over the real T5 and SmolLM2 vocabularies and real SST-2 / BoolQ / RTE records."""

from __future__ import annotations

import string
from pathlib import Path

import numpy as np
import pytest

from jaxprompt.backbones import FAMILIES
from jaxprompt.tasks import cloze, readers
from jaxprompt.tasks.codec import TextCodec, decoder_codec
from jaxprompt.tasks.cloze_presets import LM_BFF_PRESETS, PET_PATTERNS
from jaxprompt.tasks.features import featurize, label_targets
from jaxprompt.tasks.records import DataError, Record
from jaxprompt.tasks.task_spec import DataSource, TaskSpec


@pytest.fixture(scope="module")
def t5(tokenizer) -> TextCodec:
  """T5's codec as its family builds it (with the sentinels a cloze pattern reads as)."""
  return FAMILIES["t5"].codec(tokenizer, None)


@pytest.fixture(scope="module")
def decoder(smollm_tokenizer) -> TextCodec:
  """SmolLM2's byte-level BPE codec (no BOS, so that inputs decode to exactly their text)."""
  return decoder_codec(smollm_tokenizer, add_bos=False)


def _records(shared_data: Path, folder: str, name: str, kind: str = "jsonl", limit: int = 16):
  return readers.read_records(DataSource(kind, (str(shared_data / folder / name),)))[:limit]


SST2 = LM_BFF_PRESETS["sst2"].task_spec("sst2")
BOOLQ = PET_PATTERNS["boolq", 0].task_spec("boolq")


def test_t5_reads_lm_bff_sst2_with_its_sentinel_at_the_mask(shared_data, t5, tokenizer):
  records = _records(shared_data, "sst2", "dev.tsv", "tsv")
  feats, stats = featurize(records, SST2, t5, 128, 8)
  assert stats.kept == 16 and stats.truncated_inputs == 0
  words = ("terrible", "great")
  for record, f in zip(records, feats, strict=True):
    sentence = record.fields["sentence"].strip()
    assert f.inputs == tokenizer.encode(f"{sentence} It was <extra_id_0>.")
    assert f.inputs.count(tokenizer.extra_id(0)) == 1 and f.inputs[-1] == tokenizer.eos_id
    assert tokenizer.decode(f.inputs).replace("<extra_id_0>", " <extra_id_0> ").split() == [
        *sentence.split(), "It", "was", "<extra_id_0>", "."]
    assert f.targets == tokenizer.encode(f"<extra_id_0> {words[f.label]} <extra_id_1>")
    pieces = [tokenizer.id_to_piece(i) for i in f.targets]
    assert pieces == ["<extra_id_0>", "▁" + words[f.label], "<extra_id_1>", "</s>"]
  targets_CxT, mask_CxT = label_targets(SST2, t5, 6)
  for c, word in enumerate(words):
    assert targets_CxT[c, : mask_CxT[c].sum()].tolist() == tokenizer.encode(f"<extra_id_0> {word} <extra_id_1>")
  assert mask_CxT.sum(1).tolist() == [4, 4]


def test_t5_reads_pet_boolq_and_rte_as_a_reader_writes_them(shared_data, t5, tokenizer):
  boolq = _records(shared_data, "superglue/BoolQ", "val.jsonl", limit=8)
  feats, stats = featurize(boolq, BOOLQ, t5, 4096, 8)
  assert stats.kept == 8 and stats.truncated_inputs == 0
  for record, f in zip(boolq, feats, strict=True):
    passage, question = record.fields["passage"], record.fields["question"]
    assert f.inputs == tokenizer.encode(f"{passage} . Question: {question} ? Answer: <extra_id_0> .")
    assert f.targets == tokenizer.encode(f"<extra_id_0> {('No', 'Yes')[f.label]} <extra_id_1>")
  rte_spec = PET_PATTERNS["rte", 0].task_spec("rte")
  rte = _records(shared_data, "superglue/RTE", "val.jsonl", limit=8)
  feats, _ = featurize(rte, rte_spec, t5, 512, 8)
  for record, f in zip(rte, feats, strict=True):  # sequences A and B joined with a space
    hypothesis = record.fields["hypothesis"].rstrip(string.punctuation)
    assert f.inputs == tokenizer.encode(f'" {hypothesis} " ? <extra_id_0> , " {record.fields["premise"]} "')
    assert f.targets == tokenizer.encode(f"<extra_id_0> {('Yes', 'No')[f.label]} <extra_id_1>")


def test_t5_keeps_the_start_and_refuses_a_cut_that_drops_the_sentinel(shared_data, t5, tokenizer):
  records = _records(shared_data, "superglue/BoolQ", "val.jsonl", limit=8)
  with pytest.raises(DataError, match=r"val.jsonl:1: .* would drop the mask's sentinel <extra_id_0>"):
    featurize(records, BOOLQ, t5, 64, 8)
  feats, stats = featurize(records, BOOLQ, t5, 64, 8, skip_bad_examples=True)
  assert feats == [] and stats.skipped == 8
  # Yelp's text follows the mask: T5 may cut it, keeping the start (the sentinel) and EOS.
  yelp = PET_PATTERNS["yelp_polarity", 0].task_spec("yelp")
  record = Record({"text": "The soup was cold\\nand the waiter rude. " * 20, "label": "1"}, "yelp.csv:1")
  (f,), stats = featurize([record], yelp, t5, 16, 8)
  assert stats.truncated_inputs == 1 and len(f.inputs) == 16 and f.inputs[-1] == tokenizer.eos_id
  assert f.inputs[:15] == tokenizer.encode("It was <extra_id_0> . The soup was cold and the waiter rude.")[:15]


def test_a_decoder_reads_the_pattern_up_to_the_mask_and_scores_one_token_words(shared_data, decoder, smollm_tokenizer):
  records = _records(shared_data, "sst2", "dev.tsv", "tsv")
  feats, stats = featurize(records, SST2, decoder, 128, 4)
  assert stats.kept == 16 and stats.truncated_inputs == 0
  word_ids = [smollm_tokenizer.encode(" terrible"), smollm_tokenizer.encode(" great")]
  assert [len(ids) for ids in word_ids] == [1, 1]
  for record, f in zip(records, feats, strict=True):
    assert smollm_tokenizer.decode(f.inputs) == record.fields["sentence"].strip() + " It was"
    assert f.targets == word_ids[f.label]
  targets_CxT, mask_CxT = label_targets(SST2, decoder, 4)
  assert mask_CxT.sum(1).tolist() == [1, 1] and targets_CxT[:, 0].tolist() == [ids[0] for ids in word_ids]
  # PET's label-word loss encodes these texts: one distinct token per class.
  assert [decoder.encode_label(t) for t in cloze.label_texts(SST2, decoder)] == word_ids
  rte_spec = PET_PATTERNS["rte", 4].task_spec("rte")
  rte = _records(shared_data, "superglue/RTE", "val.jsonl", limit=8)
  feats, _ = featurize(rte, rte_spec, decoder, 512, 4)
  for record, f in zip(rte, feats, strict=True):
    premise, hypothesis = record.fields["premise"], record.fields["hypothesis"]
    assert smollm_tokenizer.decode(f.inputs) == f"{premise} question: {hypothesis} True or False? answer:"
    assert [smollm_tokenizer.decode(f.targets)] == [(" true", " false")[f.label]] and len(f.targets) == 1


def test_a_long_decoder_input_keeps_its_end_where_the_answer_follows(shared_data, decoder, smollm_tokenizer):
  records = _records(shared_data, "superglue/BoolQ", "val.jsonl")
  feats, stats = featurize(records, BOOLQ, decoder, 32, 4)
  assert stats.kept == 16 and stats.truncated_inputs == 16 and all(len(f.inputs) == 32 for f in feats)
  for record, f in zip(records, feats, strict=True):
    full = f"{record.fields['passage']} . Question: {record.fields['question']} ? Answer:"
    assert f.inputs == smollm_tokenizer.encode(full)[-32:] and smollm_tokenizer.decode(f.inputs).endswith("? Answer:")
    assert smollm_tokenizer.decode(f.targets) == (" No", " Yes")[f.label]


def test_a_decoder_refuses_a_field_after_the_mask(decoder):
  yelp = PET_PATTERNS["yelp_polarity", 0].task_spec("yelp_polarity")
  record = Record({"text": "Great food.", "label": "2"}, "yelp.csv:1")
  message = r"Task 'yelp_polarity': the pattern 'It was \[MASK\] \. \{~text\|.*\}' has \{~text\|.*\} after its mask"
  with pytest.raises(ValueError, match=message):
    featurize([record], yelp, decoder, 64, 4)
  with pytest.raises(ValueError, match=message):
    label_targets(yelp, decoder, 4)


def test_several_label_words_per_class_and_candidates_are_refused(shared_data, t5, decoder):
  records = _records(shared_data, "sst2", "dev.tsv", "tsv", 2)
  several = TaskSpec(name="sst2", template="", pattern="{~sentence} It was [MASK] .", label_names=("0", "1"),
                     verbalizer=(("terrible", "awful"), "great"))
  copa = PET_PATTERNS["copa", 0].task_spec("copa")
  for codec in (t5, decoder):
    with pytest.raises(ValueError, match=r"Task 'sst2': class '0' has several label words \('terrible', 'awful'\)"):
      featurize(records, several, codec, 64, 8)
    with pytest.raises(ValueError, match=r"class '0' has several label words"):
      label_targets(several, codec, 8)
  # Each example's choices, in the family's answer form (scored in tests/test_decoder_runs.py, test_seq2seq.py).
  records = _records(shared_data, "superglue/COPA", "val.jsonl", limit=2)
  for codec, first in ((decoder, None), (t5, "<extra_id_0>")):
    feats, _ = featurize(records, copa, codec, 64, 24)
    assert all(len(f.candidates) == 2 and f.candidates[0] != f.candidates[1] for f in feats)
    assert all(f.targets == f.candidates[f.label] for f in feats)
    if first:
      assert all(codec.encode_words(first)[0] == f.candidates[0][0] for f in feats)


def test_the_text_around_the_mask_keeps_glued_text_and_drops_specials():
  nli = LM_BFF_PRESETS["rte"].task_spec("rte")
  record = Record({"sentence1": "It rains.", "sentence2": "The ground is wet.", "label": "entailment"}, "rte.tsv:1")
  assert cloze.text_before_and_after_mask(record, nli) == ("It rains?", ", the ground is wet.")
  glued = TaskSpec(name="t", template="", pattern="{a} Question:{_} {~b} ? || [MASK]. {_}done", label_names=("0", "1"),
                   verbalizer=("no", "yes"))
  assert cloze.text_before_and_after_mask(Record({"a": "x", "b": "y"}, "r:1"), glued) == ("x Question: y ?", ". done")
  with pytest.raises(DataError, match=r"r:2: empty input: the fields \['a', 'b'\]"):
    cloze.text_before_and_after_mask(Record({"a": " ", "b": ""}, "r:2"), glued)
  assert cloze.label_texts(TaskSpec(name="t", template="{s}", label_names=("0",), verbalizer=("x",)), None) == ("x",)


def test_label_targets_pad_to_max_target_len(t5, decoder):
  targets_CxT, mask_CxT = label_targets(BOOLQ, decoder, 3)
  assert targets_CxT.shape == (2, 3) and (targets_CxT[:, 1:] == decoder.pad_id).all() and not mask_CxT[:, 1:].any()
  with pytest.raises(ValueError, match="more than max_target_len=3"):
    label_targets(BOOLQ, t5, 3)
  np.testing.assert_array_equal(label_targets(BOOLQ, t5, 4)[1], np.ones((2, 4), bool))
