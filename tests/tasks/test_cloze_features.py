"""Cloze tasks from records to batches: the pattern's mask block, token types, label words or per-example
choices, truncation that never cuts the mask, and the errors a PET / LM-BFF user meets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from jaxprompt.backbones import FAMILIES
from jaxprompt.tasks import cloze, pipeline, readers
from jaxprompt.tasks.cloze_presets import LM_BFF_PRESETS, PET_PATTERNS
from jaxprompt.tasks.features import featurize, generation_training_records, with_mirrored_choices
from jaxprompt.tasks.records import DataError
from jaxprompt.tasks.task_spec import DataSource, TaskSpec
from tests.assets import minilm_dir


@pytest.fixture(scope="module")
def mlm_codec(bert_tokenizer):
  """A masked LM's codec over MiniLM's real WordPiece vocabulary ([CLS] A [SEP] B [SEP], [MASK] 103)."""
  model = type("Model", (), {"add_bos": False})()
  return FAMILIES["bert"].codec(bert_tokenizer, model)


def _records(shared_data: Path, folder: str, name: str, kind: str = "jsonl", limit: int = 16):
  return readers.read_records(DataSource(kind, (str(shared_data / folder / name),)))[:limit]


def test_lm_bff_sst2_places_one_mask_after_the_sentence(shared_data, mlm_codec, bert_tokenizer):
  spec = LM_BFF_PRESETS["sst2"].task_spec("sst2")
  feats, stats = featurize(_records(shared_data, "sst2", "dev.tsv", "tsv"), spec, mlm_codec, 128, 1)
  assert stats.kept == 16 and stats.truncated_inputs == 0
  for f in feats:
    assert f.inputs[0] == bert_tokenizer.cls_id and f.inputs[-1] == bert_tokenizer.sep_id
    (mask,) = f.mask_positions
    assert f.inputs[mask] == bert_tokenizer.mask_id and bert_tokenizer.mask_id not in f.inputs[:mask]
    assert bert_tokenizer.decode(f.inputs[mask - 2 : mask]).split() == ["it", "was"] and f.label in (0, 1)
    assert f.token_types == [0] * len(f.inputs) and f.candidates == [] and f.targets == []


def test_a_long_input_loses_its_shortenable_text_never_the_mask_or_the_pattern(shared_data, mlm_codec):
  spec = PET_PATTERNS["boolq", 0].task_spec("boolq")
  feats, stats = featurize(_records(shared_data, "superglue/BoolQ", "val.jsonl"), spec, mlm_codec, 48, 1)
  assert stats.truncated_inputs == sum(len(f.inputs) == 48 for f in feats) >= 12
  assert all(len(f.inputs) <= 48 for f in feats)
  mask_id = mlm_codec.cloze.mask_id
  # "? Answer: [MASK] ." ends every input, [SEP] last.
  assert all(f.inputs[f.mask_positions[0]] == mask_id and f.mask_positions[0] == len(f.inputs) - 3 for f in feats)


def test_copa_has_each_examples_choices_and_as_many_masks_as_the_longer(shared_data, mlm_codec):
  spec = PET_PATTERNS["copa", 0].task_spec("copa")
  feats, _ = featurize(_records(shared_data, "superglue/COPA", "val.jsonl"), spec, mlm_codec, 128, 1)
  for f in feats:
    assert len(f.candidates) == 2 and len(f.mask_positions) == max(map(len, f.candidates))
    assert all(f.inputs[p] == mlm_codec.cloze.mask_id for p in f.mask_positions)
  assert len({len(f.mask_positions) for f in feats}) > 1  # k differs per example
  batch = next(pipeline.eval_batches(feats, 8, 128, 1))
  k = max(len(f.mask_positions) for f in feats)
  assert batch["mask_positions"].shape == (8, k) and batch["candidates"].shape == (8, 2, k)
  short = next(i for i, f in enumerate(feats[:8]) if len(f.mask_positions) < k)
  assert (batch["mask_positions"][short, len(feats[short].mask_positions):] == -1).all()
  np.testing.assert_array_equal(batch["candidate_mask"][0].sum(-1), [len(c) for c in feats[0].candidates])


def test_label_words_must_be_one_token_unless_multi_token(shared_data, mlm_codec):
  spec = TaskSpec(name="sst2", template="", pattern="{~sentence} It was [MASK] .", label_names=("0", "1"),
                  verbalizer=(("terrible", "awful"), "magnificently"))
  records = _records(shared_data, "sst2", "dev.tsv", "tsv", 4)
  with pytest.raises(ValueError, match=r"label word 'magnificently' is 2 tokens \[\d+, \d+\].*config.cloze.multi_token"):
    featurize(records, spec, mlm_codec, 64, 1)
  with pytest.raises(ValueError, match=r"each class has one word, but \('terrible', 'awful'\) are several"):
    featurize(records, spec, mlm_codec, 64, 1, multi_token=True)
  single_words = TaskSpec(name="sst2", template="", pattern=spec.pattern, label_names=("0", "1"),
                          verbalizer=("terrible", "magnificently"))
  feats, _ = featurize(records, single_words, mlm_codec, 64, 1, multi_token=True)
  assert all(len(f.mask_positions) == 2 for f in feats)
  words = cloze.label_words(single_words, mlm_codec.cloze, multi_token=True)
  assert words.ids_CxWxK.shape == (2, 1, 2) and words.mask_CxWxK[:, 0].sum(-1).tolist() == [1, 2]


def test_a_pattern_whose_fixed_text_alone_does_not_fit_names_the_record(shared_data, mlm_codec):
  spec = PET_PATTERNS["boolq", 2].task_spec("boolq")
  records = _records(shared_data, "superglue/BoolQ", "val.jsonl", limit=2)
  with pytest.raises(DataError, match=r"val.jsonl:1: the pattern .* needs \d+ tokens .* more than max_len=8"):
    featurize(records, spec, mlm_codec, 8, 1)
  feats, stats = featurize(records, spec, mlm_codec, 8, 1, skip_bad_examples=True)
  assert feats == [] and stats.skipped == 2


def test_cloze_specs_are_checked_when_built():
  base = dict(name="t", template="", label_names=("0", "1"))
  with pytest.raises(ValueError, match=r"exactly one|has 0 \[MASK\]"):
    TaskSpec(**base, pattern="{~sentence} no mask", verbalizer=("a", "b"))
  with pytest.raises(ValueError, match="takes no template"):
    TaskSpec(**{**base, "template": "{sentence}"}, pattern="{sentence} [MASK]", verbalizer=("a", "b"))
  with pytest.raises(ValueError, match="2 candidates but label_names"):
    TaskSpec(**{**base, "label_names": ("0",)}, pattern="{p} [MASK]", candidates=("c1", "c2"), verbalizer=())
  with pytest.raises(TypeError, match="tuples of label words"):
    TaskSpec(**base, pattern="{s} [MASK]", verbalizer=("a", 3))
  with pytest.raises(TypeError, match="verbalizer must be a sequence of strings, got"):
    TaskSpec(name="t", template="{s}", label_names=("0", "1"), verbalizer=(("a", "b"), "c"))
  with pytest.raises(ValueError, match="pattern_fields and sentence_limits apply to LM-BFF"):
    TaskSpec(**base, pattern="{s} [MASK]", verbalizer=("a", "b"), pattern_fields=("s",))


def test_a_family_without_a_mask_token_refuses_a_cloze_pattern(shared_data, codec):
  spec = LM_BFF_PRESETS["sst2"].task_spec("sst2")
  with pytest.raises(ValueError, match="needs a masked LM's tokenizer"):
    featurize(_records(shared_data, "sst2", "dev.tsv", "tsv", 2), spec, codec, 64, 1)


def test_minilm_tokenizer_has_what_patterns_need():
  from jaxprompt.weights.hf_tokenizer import load_hf_tokenizer  # noqa: PLC0415

  tokenizer = load_hf_tokenizer(minilm_dir())
  assert tokenizer.mask_id == 103 and tokenizer.cls_id == 101 and tokenizer.sep_id == 102


def test_a_regression_reads_scores_within_its_bounds(tmp_path, mlm_codec):
  spec = LM_BFF_PRESETS["stsb"].task_spec("stsb")
  assert spec.bounds == (0.0, 5.0) and spec.metric == "pearson"
  path = tmp_path / "stsb.tsv"
  path.write_text("sentence1\tsentence2\tscore\nA man plays.\tA man sings.\t3.2\nA cat.\tA dog.\t\n")
  records = readers.read_records(DataSource("tsv", (str(path),)))
  feats, stats = featurize(records, spec, mlm_codec, 64, 1)
  assert [f.score for f in feats[:1]] == [pytest.approx(3.2)] and np.isnan(feats[1].score)
  assert all(f.label == -1 for f in feats) and stats.unlabeled == 1
  path.write_text("sentence1\tsentence2\tscore\nA man plays.\tA man sings.\t7.5\n")
  with pytest.raises(DataError, match=r"stsb.tsv:2: the score 7.5 of regression task 'stsb' is outside its bounds"):
    featurize(readers.read_records(DataSource("tsv", (str(path),))), spec, mlm_codec, 64, 1)


def test_copas_training_records_are_doubled_with_their_choices_mirrored(shared_data):
  spec = PET_PATTERNS["copa", 0].task_spec("copa")
  assert spec.mirror_choices
  records = _records(shared_data, "superglue/COPA", "train32.jsonl", limit=4)
  doubled = with_mirrored_choices(records, spec)
  assert doubled[:4] == records and len(doubled) == 8  # PET appends the mirrors after the originals
  for original, mirror in zip(records, doubled[4:]):
    assert (mirror.fields["choice1"], mirror.fields["choice2"]) == (original.fields["choice2"], original.fields["choice1"])
    assert mirror.fields["label"] == 1 - original.fields["label"] and mirror.fields["premise"] == original.fields["premise"]
    assert mirror.where == original.where + " (mirrored)"
  unlabeled = _records(shared_data, "superglue/COPA", "unlabeled.jsonl", limit=2)
  assert all("label" not in r.fields for r in with_mirrored_choices(unlabeled, spec)[2:])
  rte = PET_PATTERNS["rte", 0].task_spec("rte")
  assert with_mirrored_choices(records, rte) is records  # only a task that asks for it


def test_wsc_trains_its_positive_examples_with_pets_random_padding_masks(shared_data, mlm_codec):
  spec = PET_PATTERNS["wsc", 0].task_spec("wsc")
  assert spec.generate and spec.candidates == ("target.span1_text",)
  records = _records(shared_data, "superglue/WSC", "train32.jsonl", limit=32)
  train = generation_training_records(records, spec, seed=0)
  assert len(train) == sum(r.fields["label"] in (True, "True") for r in records) > 0
  assert all(r.fields["label"] in (True, "True") for r in train)
  pads = [r.fields[cloze.GENERATION_PADDING] for r in train]
  assert set(pads) <= {0, 1, 2, 3} and len(set(pads)) > 1  # PET: randint(0, 3) per training example
  assert pads == [r.fields[cloze.GENERATION_PADDING] for r in generation_training_records(records, spec, seed=0)]
  feats, _ = featurize(train, spec, mlm_codec, 256, 1)
  evals, _ = featurize(records, spec, mlm_codec, 256, 1)
  for feature, record in zip(feats, train):
    referent = mlm_codec.cloze.word_ids(record.fields["target"]["span1_text"])
    assert feature.candidates == [referent]
    assert len(feature.mask_positions) == len(referent) + record.fields[cloze.GENERATION_PADDING]
  for feature, record in zip(evals, records):  # evaluation: one padding mask, every example
    assert len(feature.mask_positions) == len(feature.candidates[0]) + 1
    assert feature.label == int(record.fields["label"] in (True, "True"))


def test_wsc_generation_needs_a_masked_lm(bert_tokenizer, smollm_tokenizer):
  spec = PET_PATTERNS["wsc", 0].task_spec("wsc")
  decoder = FAMILIES["llama"].codec(smollm_tokenizer, type("Model", (), {"add_bos": False})())
  with pytest.raises(ValueError, match="generates its candidate into a masked LM's mask block"):
    cloze.check_text_family(spec, decoder)
