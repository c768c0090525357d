"""TaskSpec / DataSource validate themselves and build from configs; the presets are valid."""

import dataclasses

import ml_collections
import pytest

from jaxprompt.tasks.catalog import CONLL2003_NER_TAGS, TAGGING_TASKS, TASKS
from jaxprompt.tasks.task_spec import DataSource, TaskSpec, data_source_from_config, task_spec_from_config


def test_presets_are_complete_and_consistent():
  assert set(TASKS) == {"sst2", "boolq", "cb", "copa", "rte", "wic", "wsc", "multirc", "agnews"}
  for name, spec in TASKS.items():
    assert spec.name == name
    assert spec.target_template is None and spec.num_classes == len(spec.verbalizer) >= 2
  assert TASKS["cb"].metric == "f1_macro"
  assert (TASKS["multirc"].metric, TASKS["multirc"].flatten) == ("multirc", "multirc")
  assert TASKS["sst2"].template == "sst2 sentence: {sentence}"
  assert TASKS["sst2"].verbalizer == ("negative", "positive")
  assert TASKS["rte"].template == "rte hypothesis: {hypothesis} premise: {premise}"
  assert TASKS["boolq"].verbalizer == ("False", "True")
  assert TASKS["copa"].verbalizer == ("choice1", "choice2")


def test_task_spec_from_config_dict_and_configdict():
  config = ml_collections.ConfigDict({
      "name": "rte",
      "template": "rte hypothesis: {hypothesis} premise: {premise}",
      "label_names": ["entailment", "not_entailment"],
      "verbalizer": ("entailment", "not_entailment"),
      "label_field": "label",
      "target_template": None,
      "metric": "accuracy",
      "flatten": None,
  })
  assert task_spec_from_config(config) == TASKS["rte"]
  for spec in TASKS.values():
    assert task_spec_from_config(dataclasses.asdict(spec)) == spec
  with pytest.raises(ValueError, match=r"Unknown TaskSpec fields \['verbaliser'\]"):
    task_spec_from_config({"name": "x", "template": "{a}", "label_names": ("a",), "verbaliser": ("a",)})


def test_generation_task():
  spec = TaskSpec("gen", "question: {q}", (), (), target_template="{answer}")
  assert spec.num_classes == 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"label_names": ("a", "b"), "verbalizer": ("x",)}, "2 label_names"),
        ({"label_names": ("a", "a"), "verbalizer": ("x", "y")}, "distinct"),
        ({"label_names": ("a", "b"), "verbalizer": ("x", "x")}, "distinct"),
        ({"label_names": ("a",), "verbalizer": (" ",)}, "non-blank"),
        ({"label_names": (), "verbalizer": ()}, "needs a verbalizer"),
        ({"template": "no slots"}, "no {field} slot"),
        ({"template": "{a"}, "Unbalanced"),
        ({"target_template": "{a"}, "Unbalanced"),
        ({"metric": "f1"}, "unknown metric"),
        ({"flatten": "record"}, "unknown flatten"),
    ],
)
def test_task_spec_rejects(kwargs, match):
  base = {"name": "t", "template": "t: {a}", "label_names": ("0", "1"), "verbalizer": ("no", "yes")}
  with pytest.raises(ValueError, match=match):
    TaskSpec(**{**base, **kwargs})


def test_task_spec_rejects_a_string_as_names():
  with pytest.raises(TypeError, match="sequence of strings"):
    TaskSpec("t", "{a}", "ab", ("x", "y"))


def test_data_source_from_config():
  config = ml_collections.ConfigDict({"kind": "tsv", "files": ["a.tsv", "b.tsv"], "columns": ["text", "label"]})
  assert data_source_from_config(config) == DataSource("tsv", ("a.tsv", "b.tsv"), columns=("text", "label"))
  assert data_source_from_config({"kind": "jsonl", "files": "one.jsonl"}).files == ("one.jsonl",)
  tfds_source = data_source_from_config({"kind": "tfds", "tfds_name": "glue/sst2", "split": "train", "data_dir": None})
  assert tfds_source == DataSource("tfds", tfds_name="glue/sst2", split="train")
  with pytest.raises(ValueError, match=r"Unknown DataSource fields \['file'\]"):
    data_source_from_config({"kind": "jsonl", "file": "x"})


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"kind": "parquet", "files": ("a",)}, "Unknown data source kind"),
        ({"kind": "jsonl"}, "needs at least one file"),
        ({"kind": "tfds", "tfds_name": "glue/sst2"}, "needs tfds_name and split"),
        ({"kind": "tfds", "tfds_name": "x", "split": "train", "files": ("a",)}, "no files"),
        ({"kind": "jsonl", "files": ("a",), "split": "train"}, "no tfds_name"),
        ({"kind": "jsonl", "files": ("a",), "columns": ("x",)}, "tsv/csv files only"),
        ({"kind": "conll", "files": ("a",), "columns": ("x",)}, "tsv/csv files only"),
        ({"kind": "conll"}, "needs at least one file"),
        ({"kind": "tsv", "files": ("a",), "columns": ("x", "x")}, "Duplicate column"),
    ],
)
def test_data_source_rejects(kwargs, match):
  with pytest.raises(ValueError, match=match):
    DataSource(**kwargs)


def test_empty_strings_from_configs_mean_none():
  source = data_source_from_config(
      {"kind": "tfds", "files": (), "columns": (), "tfds_name": "super_glue/rte", "split": "train", "data_dir": ""}
  )
  assert source.data_dir is None
  local = DataSource("jsonl", ("a.jsonl",), tfds_name="", split="", data_dir="")
  assert (local.tfds_name, local.split, local.data_dir) == (None, None, None)


def test_pseudo_token_count():
  spec = TaskSpec("rte_pt", "[P0][P1] {premise} ? [P2] {hypothesis}", ("entailment", "not_entailment"), ("yes", "no"))
  assert spec.num_pseudo_tokens == 3
  assert all(spec.num_pseudo_tokens == 0 for spec in TASKS.values())
  assert task_spec_from_config(dataclasses.asdict(spec)) == spec


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"template": "[P0][P2] {a}"}, r"2 pseudo tokens, so they must be \[P0\] to \[P1\]"),
        ({"template": "[P0] {a} [P0]"}, r"repeated: \['\[P0\]'\]"),
        ({"template": "[P1] {a}"}, r"missing: \['\[P0\]'\]"),
        ({"template": "[P0][P1]"}, "no {field} slot"),
        ({"label_names": (), "verbalizer": (), "target_template": "[P0] {b}"}, "pseudo tokens belong in the input"),
    ],
)
def test_bad_pseudo_token_templates_are_rejected(kwargs, match):
  base = {"name": "t", "template": "t: {a}", "label_names": ("0", "1"), "verbalizer": ("no", "yes")}
  with pytest.raises(ValueError, match=match):
    TaskSpec(**{**base, **kwargs})


def test_tagging_task():
  spec = TAGGING_TASKS["conll2003"]
  assert spec.token_label_names == CONLL2003_NER_TAGS and spec.label_field == "tags" and spec.metric == "span_f1"
  assert spec.num_classes == 0 and spec.num_pseudo_tokens == 0
  assert task_spec_from_config(dataclasses.asdict(spec)) == spec
  chunks = TaskSpec("chunk", "{ words }", (), (), "tags", metric="span_f1", token_label_names=["O", "B-NP"])
  assert chunks.token_label_names == ("O", "B-NP")  # a list from a config becomes a tuple


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"template": "ner: {tokens}"}, "one slot naming the list of words"),
        ({"template": "{tokens} {more}"}, "one slot naming the list of words"),
        ({"label_names": ("a",), "verbalizer": ("a",)}, "takes no label_names, verbalizer"),
        ({"target_template": "{x}"}, "takes no label_names, verbalizer, target_template"),
        ({"metric": "accuracy"}, "must be 'span_f1'"),
        ({"token_label_names": ("O", "PER")}, "BIO tags"),
        ({"token_label_names": ("O", "B-")}, "BIO tags"),
        ({"token_label_names": ("O", "B-PER", "B-PER")}, "distinct BIO tags"),
        ({"token_label_names": "O"}, "sequence of strings"),
    ],
)
def test_bad_tagging_tasks_are_rejected(kwargs, match):
  base = dict(name="ner", template="{tokens}", label_names=(), verbalizer=(), label_field="tags", metric="span_f1",
              token_label_names=("O", "B-PER", "I-PER"))
  with pytest.raises((ValueError, TypeError), match=match):
    TaskSpec(**{**base, **kwargs})


def test_span_f1_needs_token_labels():
  with pytest.raises(ValueError, match="'span_f1' needs token_label_names"):
    TaskSpec("t", "{a}", ("0", "1"), ("no", "yes"), metric="span_f1")
