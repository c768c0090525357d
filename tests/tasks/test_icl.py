"""GPT-3-style k-shot demonstrations: seeded, rendered with the task's template and verbalizer."""

from __future__ import annotations

import pytest

from jaxprompt.tasks.catalog import TASKS
from jaxprompt.tasks.icl import Demonstrations
from jaxprompt.tasks.readers import read_records
from jaxprompt.tasks.records import Record
from jaxprompt.tasks.task_spec import DataSource


@pytest.fixture(scope="module")
def pool(shared_data):
  return read_records(DataSource("jsonl", (str(shared_data / "superglue" / "RTE" / "train32.jsonl"),)))


def test_demonstrations_are_deterministic_per_seed_and_example(pool):
  a, b = Demonstrations(pool, TASKS["rte"], 3, seed=0), Demonstrations(pool, TASKS["rte"], 3, seed=0)
  assert [a.text_before(i) for i in range(10)] == [b.text_before(i) for i in range(10)]
  other_seed = Demonstrations(pool, TASKS["rte"], 3, seed=1)
  assert [a.draw(i) for i in range(10)] != [other_seed.draw(i) for i in range(10)]
  assert a.draw(0) != a.draw(1)  # each example gets its own draw
  assert all(len(set(a.draw(i))) == 3 for i in range(50))  # no demonstration twice


def test_a_demonstration_is_the_rendered_input_then_its_answer(pool):
  demos = Demonstrations(pool, TASKS["rte"], 2, seed=0, separator=" || ")
  first = pool[demos.draw(7)[0]].fields
  answer = {"entailment": "entailment", "not_entailment": "not_entailment"}[first["label"]]
  expected = f"rte hypothesis: {first['hypothesis'].strip()} premise: {first['premise'].strip()}{answer}"
  text = demos.text_before(7)
  assert text.startswith(expected + " || ") and text.count(" || ") == 2


def test_unlabelled_records_are_not_demonstrations():
  spec = TASKS["sst2"]
  pool = [Record({"sentence": "good", "label": "1"}, "p:1"), Record({"sentence": "meh"}, "p:2")]
  assert Demonstrations(pool, spec, 1, seed=0).rendered == ["sst2 sentence: goodpositive"]
  with pytest.raises(ValueError, match="2-shot prompts need 2 labelled training examples; the pool has 1"):
    Demonstrations(pool, spec, 2, seed=0)
