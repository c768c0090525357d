"""Several tasks' features as one training set (multi-task prompt tuning).

T5's examples-proportional mixing with a limit K (Raffel et al. 2020, sec. 3.5.2) samples task i at
a rate proportional to min(n_i, K). Capping every task at K examples and shuffling the union (the
pipeline's job) gives each epoch exactly those proportions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from jaxprompt.tasks.features import Feature


def mix_tasks(
    features_per_task: Sequence[Sequence[Feature]], seed: int, max_examples_per_task: int | None = None
) -> list[Feature]:
  """The tasks' features, task by task, with task_id = the task's position in `features_per_task`.

  A task with more than `max_examples_per_task` features keeps a random subset of that many, in
  their original order, drawn from (seed, task position) so that one task's draw does not depend on
  the others.
  """
  if max_examples_per_task is not None and max_examples_per_task < 1:
    raise ValueError(f"max_examples_per_task must be positive or None, got {max_examples_per_task}")
  mixed = []
  for task_id, features in enumerate(features_per_task):
    if not features:
      raise ValueError(f"Task {task_id} of the mixture has no features")
    kept = range(len(features))
    if max_examples_per_task is not None and len(features) > max_examples_per_task:
      rng = np.random.default_rng([seed, task_id])
      kept = np.sort(rng.choice(len(features), max_examples_per_task, replace=False))
    mixed.extend(dataclasses.replace(features[int(i)], task_id=task_id) for i in kept)
  return mixed
