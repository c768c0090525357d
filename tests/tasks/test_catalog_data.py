"""Every preset task reads and featurizes the real files with the real T5 vocabulary."""

import collections
import json

import pytest

from jaxprompt.tasks.codec import t5_codec
from jaxprompt.tasks.catalog import TASKS
from jaxprompt.tasks.features import featurize
from jaxprompt.tasks.readers import flatten_multirc
from jaxprompt.tasks.readers import read_records
from jaxprompt.tasks.task_spec import DataSource

SUPERGLUE_DIRS = {
    "boolq": "BoolQ", "cb": "CB", "copa": "COPA", "rte": "RTE", "wic": "WiC", "wsc": "WSC", "multirc": "MultiRC"
}
# Class counts of the full validation sets (and SST-2 dev, AG News test), by class index.
CLASS_COUNTS = {
    "boolq": {0: 1237, 1: 2033},
    "cb": {0: 23, 1: 28, 2: 5},
    "copa": {0: 55, 1: 45},
    "rte": {0: 146, 1: 131},
    "wic": {0: 319, 1: 319},
    "wsc": {0: 66, 1: 38},
    "multirc": {0: 2773, 1: 2075},
    "sst2": {0: 428, 1: 444},
    "agnews": {0: 1900, 1: 1900, 2: 1900, 3: 1900},
}


def featurized(source, task, tokenizer, max_input_len=512):
  records = read_records(source)
  features, stats = featurize(records, TASKS[task], t5_codec(tokenizer), max_input_len, 8)
  assert stats.skipped == 0 and stats.kept == stats.records == len(features)
  prefix = TASKS[task].template.split(":")[0]
  for feature in features[:20]:
    assert tokenizer.decode(feature.inputs).startswith(prefix + ":")
    assert feature.inputs[-1] == tokenizer.eos_id and feature.targets[-1] == tokenizer.eos_id
    assert tokenizer.decode(feature.targets) == TASKS[task].verbalizer[feature.label]
  return records, features, stats


@pytest.mark.parametrize("task", sorted(SUPERGLUE_DIRS))
@pytest.mark.parametrize("split", ["train32", "dev32", "val"])
def test_superglue(shared_data, tokenizer, task, split):
  path = shared_data / "superglue" / SUPERGLUE_DIRS[task] / f"{split}.jsonl"
  records, features, _ = featurized(DataSource("jsonl", (str(path),)), task, tokenizer)
  lines = path.read_text(encoding="utf-8").splitlines()
  if task == "multirc":
    questions = [q for line in lines for q in json.loads(line)["passage"]["questions"]]
    assert len(features) == sum(len(q["answers"]) for q in questions)
    assert len({f.group for f in features}) == len(questions)
  else:
    assert len(features) == len(lines) == (32 if split != "val" else sum(CLASS_COUNTS[task].values()))
  if split == "val":
    assert collections.Counter(f.label for f in features) == CLASS_COUNTS[task]


def test_sst2_dev(shared_data, tokenizer):
  path = str(shared_data / "sst2" / "dev.tsv")
  records, features, _ = featurized(DataSource("tsv", (path,)), "sst2", tokenizer, 128)
  assert collections.Counter(f.label for f in features) == CLASS_COUNTS["sst2"]
  assert records[0].where == f"{path}:2"  # line 1 is the header
  assert tokenizer.decode(features[0].inputs) == "sst2 sentence: it 's a charming and often affecting journey ."
  assert features[0].inputs == [3, 7, 7, 17, 357, 7142, 10, 34, 3, 31, 7, 3, 9, 12216, 11, 557, 3, 13403, 2027, 3, 5, 1]
  assert features[0].targets == [1465, 1]  # "positive"
  assert features[1].targets == [2841, 1]  # "negative"


def test_agnews_test(shared_data, tokenizer):
  path = str(shared_data / "agnews" / "test.tsv")
  source = DataSource("tsv", (path,), columns=("text", "label"))
  records, features, stats = featurized(source, "agnews", tokenizer, 256)
  assert len(features) == 7600 and records[-1].where == f"{path}:7600"
  assert collections.Counter(f.label for f in features) == CLASS_COUNTS["agnews"]
  assert stats.truncated_inputs > 0  # a few articles are longer than 256 tokens
  assert records[0].fields["text"].startswith("Unions representing workers at Turner   Newall say")
  assert len(features[0].inputs) == 37 and features[0].label == 2  # Business
  # A CSV-quoted row: the quotes are gone, doubled quotes are one.
  quoted = [r for r in records if r.fields["text"].startswith("The British Department for Education")]
  assert len(quoted) == 1 and '"Music Manifesto" campaign' in quoted[0].fields["text"]


def test_exact_inputs(shared_data, tokenizer, codec):
  def first(task, split="val"):
    path = shared_data / "superglue" / SUPERGLUE_DIRS[task] / f"{split}.jsonl"
    return featurize(read_records(DataSource("jsonl", (str(path),))), TASKS[task], codec, 512, 8)[0][0]

  copa = first("copa")
  assert tokenizer.decode(copa.inputs) == (
      "copa choice1: The toilet filled with water. choice2: Water flowed from the spout."
      " premise: The man turned on the faucet. question: effect"
  )
  assert len(copa.inputs) == 39 and copa.label == 1 and tokenizer.decode(copa.targets) == "choice2"
  rte = first("rte")
  assert tokenizer.decode(rte.inputs) == (
      "rte hypothesis: Christopher Reeve had an accident. premise: Dana Reeve, the widow of the actor"
      " Christopher Reeve, has died of lung cancer at age 44, according to the Christopher Reeve Foundation."
  )
  assert len(rte.inputs) == 52 and tokenizer.decode(rte.targets) == "not_entailment"
  cb = first("cb")
  assert tokenizer.decode(cb.inputs).startswith("cb hypothesis: Valence was helping premise: Valence the void-brain,")
  assert len(cb.inputs) == 59 and tokenizer.decode(cb.targets) == "contradiction"
  wic = first("wic")
  assert tokenizer.decode(wic.inputs) == (
      "wic sentence1: An emerging professional class. sentence2: Apologizing for losing your temper, even though"
      " you were badly provoked, showed real class. word: class"
  )
  assert len(wic.inputs) == 38 and tokenizer.decode(wic.targets) == "False"
  wsc = first("wsc")
  assert tokenizer.decode(wsc.inputs).endswith("could take his claim away from him . span1: anyone span2: him")
  assert len(wsc.inputs) == 77
  boolq = first("boolq", "dev32")
  assert tokenizer.decode(boolq.inputs).startswith("boolq passage: Real image -- In optics, a real image")
  assert tokenizer.decode(boolq.inputs).endswith(" question: can a real image be obtained on a screen")
  assert len(boolq.inputs) == 215 and tokenizer.decode(boolq.targets) == "True"


def test_multirc_flattening_matches_the_file(shared_data, tokenizer, codec):
  path = shared_data / "superglue" / "MultiRC" / "val.jsonl"
  records = read_records(DataSource("jsonl", (str(path),)))
  flat = flatten_multirc(records)
  assert len(records) == 83 and len(flat) == 4848 and len({r.fields["group"] for r in flat}) == 953
  first = flat[0]
  assert first.where == f"{path}:1 (question 0, answer 0)"
  assert first.fields["question"] == "Would the mass of a baseball affect how much force you have to use to pick it up?"
  assert (first.fields["answer"], first.fields["label"], first.fields["group"]) == ("No", 0, 0)
  assert first.fields["idx"] == {"paragraph": 0, "question": 0, "answer": 0}
  # Groups number the questions in file order, and each question's answers are adjacent.
  groups = [r.fields["group"] for r in flat]
  assert groups == sorted(groups) and groups[-1] == 952
  assert flatten_multirc(flat) == flat  # TFDS-style flat records pass through
  features, _ = featurize(records, TASKS["multirc"], codec, 512, 8)
  assert [f.group for f in features] == groups
  assert tokenizer.decode(features[0].inputs).startswith(
      "multirc question: Would the mass of a baseball affect how much force you have to use to pick it up?"
      " answer: No paragraph: What causes a change in motion?"
  )


def test_unlabeled_pool(shared_data, tokenizer, codec):
  path = shared_data / "superglue" / "COPA" / "unlabeled.jsonl"
  features, stats = featurize(read_records(DataSource("jsonl", (str(path),))), TASKS["copa"], codec, 128, 8)
  assert len(features) == stats.unlabeled == 400 and {f.label for f in features} == {-1}
