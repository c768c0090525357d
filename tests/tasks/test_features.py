"""Labels map predictably; bad examples name their file:line or are counted and skipped; truncation keeps EOS."""

import json

import numpy as np
import pytest

from jaxprompt.tasks.catalog import TASKS
from jaxprompt.tasks.features import featurize, label_index, label_targets
from jaxprompt.tasks.readers import read_records
from jaxprompt.tasks.records import DataError, Record
from jaxprompt.tasks.task_spec import DataSource, TaskSpec

RTE = TASKS["rte"]
SST2 = TASKS["sst2"]  # label names "0", "1"


@pytest.mark.parametrize(
    "raw, spec, index",
    [
        ("entailment", RTE, 0),
        ("not_entailment", RTE, 1),
        (1, RTE, 1),  # a TFDS ClassLabel int is the index
        (np.int64(0), RTE, 0),
        (True, TASKS["boolq"], 1),  # BoolQ / WiC / WSC jsonl booleans
        (False, TASKS["boolq"], 0),
        ("True", TASKS["boolq"], 1),
        ("1", SST2, 1),  # GLUE tsv strings
        (0, SST2, 0),
        ("true", SST2, 1),  # bool spellings, only because SST-2's label names are the indices
        ("False", SST2, 0),
        (np.bool_(True), SST2, 1),
        ("neutral", TASKS["cb"], 2),
        ("Sci/Tech", TASKS["agnews"], 3),
    ],
)
def test_label_index(raw, spec, index):
  assert label_index(raw, spec, "f:1") == index


@pytest.mark.parametrize(
    "raw, spec",
    [
        ("Entailment", RTE),  # names are case-sensitive
        ("1", RTE),  # digits are not indices when the names are words
        ("true", TASKS["boolq"]),
        (2, RTE),
        (-2, RTE),
        (1.0, SST2),
        ("2", SST2),
        ("yes", SST2),
        (True, TaskSpec("one", "{a}", ("only",), ("only",))),
    ],
)
def test_unknown_labels_name_value_place_and_known_labels(raw, spec):
  with pytest.raises(DataError) as e:
    label_index(raw, spec, "val.jsonl:7")
  assert "val.jsonl:7" in str(e.value) and repr(raw) in str(e.value) and str(list(spec.label_names)) in str(e.value)


def write_jsonl(path, rows):
  path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
  return read_records(DataSource("jsonl", (str(path),)))


GOOD = {"premise": "It rained all day.", "hypothesis": "It was wet.", "label": "entailment"}
BAD_ROWS = [
    GOOD,
    {"premise": "It rained.", "label": "entailment"},  # line 2: no hypothesis
    {**GOOD, "label": "maybe"},  # line 3: unknown label
    {"premise": "  ", "hypothesis": "\t", "label": "entailment"},  # line 4: blank input
    {**GOOD, "label": "not_entailment"},
]


@pytest.mark.parametrize(
    "bad_line, message",
    [(2, r":2: missing field 'hypothesis'"), (3, r":3: unknown label 'maybe'"), (4, r":4: empty input")],
)
def test_bad_examples_name_file_and_line(tmp_path, tokenizer, bad_line, message, codec):
  records = write_jsonl(tmp_path / "d.jsonl", [GOOD] * (bad_line - 1) + [BAD_ROWS[bad_line - 1]])
  with pytest.raises(DataError, match=f"{tmp_path / 'd.jsonl'}{message}"):
    featurize(records, RTE, codec, 64, 8)


def test_skip_bad_examples_counts_and_skips(tmp_path, tokenizer, codec):
  records = write_jsonl(tmp_path / "d.jsonl", BAD_ROWS)
  features, stats = featurize(records, RTE, codec, 64, 8, skip_bad_examples=True)
  assert [f.label for f in features] == [0, 1]
  assert [f.group for f in features] == [0, 4]  # the records' positions
  assert (stats.records, stats.kept, stats.skipped) == (5, 2, 3)
  assert [e.split(": ", 1)[0].rsplit(":", 1)[1] for e in stats.errors] == ["2", "3", "4"]
  assert "2/5 examples kept, 3 skipped" in stats.summary() and "missing field" in stats.summary()


def test_rendering_and_tokens(tokenizer, codec):
  record = Record({"premise": "A man sleeps.", "hypothesis": "A man is awake.", "label": "not_entailment"}, "x:1")
  (feature,), stats = featurize([record], RTE, codec, 64, 8)
  assert feature.inputs == tokenizer.encode("rte hypothesis: A man is awake. premise: A man sleeps.")
  assert feature.inputs[-1] == tokenizer.eos_id
  assert feature.targets == tokenizer.encode("not_entailment") == [59, 834, 35, 5756, 297, 1]
  assert (feature.label, feature.group) == (1, 0)
  assert (stats.truncated_inputs, stats.truncated_targets, stats.longest_target) == (0, 0, 6)


def test_truncation_keeps_eos_and_is_counted(tokenizer, codec):
  long = Record({"premise": "one two three four five six", "hypothesis": "seven", "label": "not_entailment"}, "x:1")
  short = Record({"premise": "a", "hypothesis": "b", "label": "entailment"}, "x:2")
  full = tokenizer.encode("rte hypothesis: seven premise: one two three four five six")
  features, stats = featurize([long, short], RTE, codec, max_input_len=6, max_target_len=5)
  assert features[0].inputs == full[:5] + [tokenizer.eos_id]
  assert features[0].targets == [59, 834, 35, 5756, 1]  # "not_entailment" cut, EOS kept
  assert features[1].targets == [3, 35, 5756, 297, 1]  # "entailment" is exactly 5 tokens: not cut
  assert len(features[1].inputs) == 6 and features[1].inputs[-1] == tokenizer.eos_id
  assert (stats.truncated_inputs, stats.truncated_targets, stats.longest_input) == (2, 1, len(full))


def test_unlabeled_examples(tokenizer, codec):
  records = [
      Record({"premise": "a", "hypothesis": "b"}, "x:1"),
      Record({"premise": "a", "hypothesis": "b", "label": None}, "x:2"),
      Record({"premise": "a", "hypothesis": "b", "label": -1}, "x:3"),  # TFDS test splits
  ]
  features, stats = featurize(records, RTE, codec, 64, 8)
  assert [(f.label, f.targets) for f in features] == [(-1, [])] * 3
  assert stats.unlabeled == 3 and "3 unlabeled" in stats.summary()


def test_label_field_and_generation_task(tokenizer, codec):
  spec = TaskSpec("qa", "question: {q}", (), (), target_template="{answer.text}")
  records = [
      Record({"q": "Who?", "answer": {"text": "Tom"}}, "x:1"),
      Record({"q": "Why?", "answer": {"text": " "}}, "x:2"),
  ]
  with pytest.raises(DataError, match="x:2: empty target"):
    featurize(records, spec, codec, 16, 4)
  features, stats = featurize(records, spec, codec, 16, 4, skip_bad_examples=True)
  assert [(f.targets, f.label) for f in features] == [(tokenizer.encode("Tom"), -1)] and stats.skipped == 1
  custom = TaskSpec("s", "s: {text}", ("neg", "pos"), ("bad", "good"), label_field="stars")
  (feature,), _ = featurize([Record({"text": "fine", "stars": "pos"}, "x:1")], custom, codec, 16, 4)
  assert (feature.label, feature.targets) == (1, tokenizer.encode("good"))


def test_label_targets(tokenizer, codec):
  targets_CxT, mask_CxT = label_targets(RTE, codec, 8)
  assert targets_CxT.dtype == np.int32 and mask_CxT.dtype == bool and targets_CxT.shape == (2, 8)
  np.testing.assert_array_equal(targets_CxT[0], [3, 35, 5756, 297, 1, 0, 0, 0])
  np.testing.assert_array_equal(targets_CxT[1], [59, 834, 35, 5756, 297, 1, 0, 0])
  np.testing.assert_array_equal(mask_CxT.sum(1), [5, 6])
  with pytest.raises(ValueError, match="'not_entailment' is 6 tokens"):
    label_targets(RTE, codec, 5)
  with pytest.raises(ValueError, match="generation task"):
    label_targets(TaskSpec("g", "{a}", (), (), target_template="{b}"), codec, 4)
