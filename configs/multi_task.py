"""Multi-task prompt tuning: one prompt shared by all tasks plus one per task, trained on a mixture
and chosen per example by its task id (the shared-plus-task-specific composition of multi-task
prompt tuning, e.g. Vu et al.'s SPoT and Asai et al.'s ATTEMPT setups), on a frozen T5.

    python -m jaxprompt.train --config=configs/multi_task.py:size=base,tasks=rte+cb+boolq --workdir=/tmp/mt

Arguments after the colon (comma-separated key=value):
  size   tiny | small | base | large | xl | xxl   (T5 v1.1 LM-adapted, as configs/t5_prompt.py)
  tasks  "+"-separated tasks of configs/t5_prompt.py (sst2, boolq, cb, copa, rte, wic, wsc, multirc, agnews)
  data   tfds (downloads) | local (../shared/data)

Each task is evaluated on its own (eval/<task>/...); eval/<metric> is the mean over the tasks that
report it. Task ids follow the tasks' sorted names.
"""

from __future__ import annotations

import ml_collections

from configs import t5_prompt
from configs.base import parse_args


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = parse_args(arg, size="tiny", tasks="rte+cb+boolq", data="tfds")
  names = args["tasks"].split("+")
  if len(names) < 2 or len(set(names)) != len(names):
    raise ValueError(f"tasks={args['tasks']!r}: name two or more distinct tasks, '+'-separated")
  config = t5_prompt.get_config(f"size={args['size']},task={names[0]},data={args['data']}")
  tiny = args["size"] == "tiny"
  for name in names:
    single = t5_prompt.get_config(f"size={args['size']},task={name},data={args['data']}")
    config.mixture[name] = ml_collections.ConfigDict(dict(task=single.task, train=single.data.train,
                                                          eval=single.data.eval))
  config.task = ml_collections.ConfigDict()  # the mixture's tasks replace the single task
  config.best_metric = "eval/accuracy"  # the mean over the tasks reporting accuracy

  config.prompt.method = "multi_task"
  # Lester et al.'s 100-token prompt, split: 50 shared by all tasks, then 50 of the example's task.
  config.prompt.shared_length = 4 if tiny else 50
  config.prompt.length = 4 if tiny else 50
  config.prompt.combine = "concat"
  config.prompt.init = "vocab"  # sampled vocabulary: label-word init would favour the first tasks
  # Raffel et al.'s examples-proportional mixing caps each task at K examples (they try 2^16-2^21).
  config.data.examples_per_task_limit = 2**19
  return config
