"""Task mixtures: task ids by position, a seeded cap per task, order kept; the pipeline carries the ids."""

import numpy as np
import pytest

from jaxprompt.tasks.features import Feature
from jaxprompt.tasks.mixing import mix_tasks
from jaxprompt.tasks.pipeline import train_iterator


def task(n: int, tag: int) -> list[Feature]:
  """n features whose group is tag * 1000 + position, so that they can be traced through the mixture."""
  return [Feature([5, 1], [7, 1], 0, tag * 1000 + i) for i in range(n)]


def test_task_ids_and_cap():
  tasks = [task(5, 0), task(50, 1), task(20, 2)]
  mixed = mix_tasks(tasks, seed=0, max_examples_per_task=10)
  assert [f.task_id for f in mixed] == [0] * 5 + [1] * 10 + [2] * 10  # min(n_i, K) examples of task i
  groups = [f.group for f in mixed]
  assert groups[:5] == list(range(5))  # a task under the cap keeps everything
  for t in (1, 2):
    kept = [g - t * 1000 for g, f in zip(groups, mixed) if f.task_id == t]
    assert kept == sorted(set(kept)) and max(kept) < len(tasks[t])  # a subset, in the original order
  assert [f.group for f in mix_tasks(tasks, seed=0)] == [f.group for t in tasks for f in t]  # no cap
  assert all(f.task_id == 0 for f in tasks[1])  # the inputs are left alone


def test_deterministic_per_seed_and_independent_across_tasks():
  tasks = [task(50, 0), task(50, 1)]
  groups = lambda seed, tasks: [f.group for f in mix_tasks(tasks, seed, 10)]
  assert groups(3, tasks) == groups(3, tasks)
  assert groups(3, tasks) != groups(4, tasks)
  # Task 1's draw does not change when task 0 changes.
  assert groups(3, tasks)[10:] == groups(3, [task(60, 0), task(50, 1)])[10:]


def test_bad_mixtures():
  with pytest.raises(ValueError, match="max_examples_per_task must be positive"):
    mix_tasks([task(3, 0)], 0, 0)
  with pytest.raises(ValueError, match="Task 1 of the mixture has no features"):
    mix_tasks([task(3, 0), []], 0)


def test_batches_carry_task_ids():
  mixed = mix_tasks([task(6, 0), task(6, 1), task(6, 2)], seed=0, max_examples_per_task=4)
  (batch,) = [next(train_iterator(mixed, 12, 0, 4, 2))]
  np.testing.assert_array_equal(batch["task_id"], batch["group"] // 1000)
  assert sorted(batch["task_id"]) == [0] * 4 + [1] * 4 + [2] * 4
