"""The TFDS reader on a real array_record dataset prepared on disk here: no TensorFlow, no network.

`tfds.testing.mock_data` cannot help without TensorFlow (it constructs the registered builder,
which imports it), so a tiny builder with super_glue's features writes a genuine dataset, and the
reader opens it by name through `tfds.data_source(..., data_dir=...)` like any prepared dataset.
"""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxprompt.tasks.catalog import TASKS
from jaxprompt.tasks.features import featurize
from jaxprompt.tasks.readers import read_records
from jaxprompt.tasks.task_spec import DataSource

RTE = [
    {"premise": "Paris is in France. é", "hypothesis": "Paris is French.", "idx": 0, "label": 0, "words": ["a", "b"]},
    {"premise": "It rained.", "hypothesis": "It was dry.", "idx": 1, "label": 1, "words": []},
]
# super_glue/multirc as TFDS stores it: one element per answer, HTML left in the paragraph.
PARAGRAPH = "<b>Sent 1: </b>Tom ran.<br><b>Sent 2: </b>He won."
MULTIRC = [
    {"paragraph": PARAGRAPH, "question": question, "answer": answer, "label": label,
     "idx": {"paragraph": 0, "question": q, "answer": a}}
    for a, (q, question, answer, label) in enumerate(
        [(0, "Who ran?", "Tom", 1), (0, "Who ran?", "Ann", 0), (1, "Did he win?", "Yes", 1)]
    )
]

with tfds.core.registered.skip_registration():  # a test dataset, not a catalog entry

  class TinySuperGlue(tfds.core.GeneratorBasedBuilder):
    """Two configs with the features of TFDS's super_glue/rte and super_glue/multirc."""

    VERSION = tfds.core.Version("1.0.0")
    # Where tfds would look for a checksums file; it downloads nothing, and finding its own source
    # file would need the importlib_resources backport, which TFDS does not install.
    code_path = None
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="rte"), tfds.core.BuilderConfig(name="multirc")]

    def _info(self):
      if self.builder_config.name == "rte":
        features = {
            "premise": tfds.features.Text(),
            "hypothesis": tfds.features.Text(),
            "idx": np.int32,
            "label": tfds.features.ClassLabel(names=["entailment", "not_entailment"]),
            "words": tfds.features.Sequence(tfds.features.Text()),
        }
      else:
        features = {
            "paragraph": tfds.features.Text(),
            "question": tfds.features.Text(),
            "answer": tfds.features.Text(),
            "idx": {"paragraph": np.int32, "question": np.int32, "answer": np.int32},
            "label": tfds.features.ClassLabel(names=["False", "True"]),
        }
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager):
      examples = RTE if self.builder_config.name == "rte" else MULTIRC
      unlabeled = [{**ex, "label": -1} for ex in examples]
      return {"validation": self._generate_examples(examples), "test": self._generate_examples(unlabeled)}

    def _generate_examples(self, examples):
      for i, example in enumerate(examples):
        yield i, example


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
  root = tmp_path_factory.mktemp("tfds")
  for config in ("rte", "multirc"):
    TinySuperGlue(data_dir=root, config=config).download_and_prepare(file_format="array_record")
  return str(root)


def test_tfds_records_are_plain_python(data_dir):
  records = read_records(DataSource("tfds", tfds_name="tiny_super_glue/rte", split="validation", data_dir=data_dir))
  assert [r.where for r in records] == ["tiny_super_glue/rte/validation[0]", "tiny_super_glue/rte/validation[1]"]
  # TFDS shuffles examples when it writes them, by a hash of their keys.
  assert sorted((r.fields for r in records), key=lambda fields: fields["idx"]) == RTE
  for value in records[0].fields.values():
    assert type(value) in (str, int, list)


def test_tfds_class_label_ints_featurize(data_dir, tokenizer, codec):
  records = read_records(DataSource("tfds", tfds_name="tiny_super_glue/rte", split="validation", data_dir=data_dir))
  records.sort(key=lambda record: record.fields["idx"])
  features, stats = featurize(records, TASKS["rte"], codec, 64, 8)
  assert [f.label for f in features] == [0, 1]
  assert tokenizer.decode(features[0].inputs) == "rte hypothesis: Paris is French. premise: Paris is in France. é"
  assert tokenizer.decode(features[1].targets) == "not_entailment"
  records = read_records(DataSource("tfds", tfds_name="tiny_super_glue/rte", split="test", data_dir=data_dir))
  features, stats = featurize(records, TASKS["rte"], codec, 64, 8)
  assert [(f.label, f.targets) for f in features] == [(-1, []), (-1, [])] and stats.unlabeled == 2


def test_tfds_multirc_is_grouped_by_question(data_dir, tokenizer, codec):
  records = read_records(DataSource("tfds", tfds_name="tiny_super_glue/multirc", split="validation", data_dir=data_dir))
  assert sorted(r.fields["idx"]["answer"] for r in records) == [0, 1, 2]
  features, _ = featurize(records, TASKS["multirc"], codec, 64, 8)
  # Answers of one question need not be adjacent (TFDS shuffled them): groups come from idx.
  by_answer = {r.fields["idx"]["answer"]: f for r, f in zip(records, features, strict=True)}
  assert [by_answer[a].label for a in range(3)] == [1, 0, 1]
  assert by_answer[0].group == by_answer[1].group != by_answer[2].group
  assert tokenizer.decode(by_answer[0].inputs) == (
      "multirc question: Who ran? answer: Tom paragraph: Sent 1: Tom ran. Sent 2: He won."
  )


def test_missing_tfds_dataset_says_where_it_looked(tmp_path):
  with pytest.raises(FileNotFoundError, match=f"'tiny_super_glue/wsc' is not prepared under data_dir={tmp_path}"):
    read_records(DataSource("tfds", tfds_name="tiny_super_glue/wsc", split="validation", data_dir=str(tmp_path)))
