"""Prompt tuning (Lester et al. 2021) of a frozen T5 v1.1 LM-adapted, any size.

    python -m jaxprompt.train --config=configs/t5_prompt.py:size=base,task=rte --workdir=/tmp/rte

Arguments after the colon (comma-separated key=value):
  size  tiny | small | base | large | xl | xxl   (tiny: a random 2+2-layer T5 for tests and demos)
  task  sst2 | boolq | cb | copa | rte | wic | wsc | multirc | agnews
  data  tfds (downloads) | local (the files in ../shared/data, or override data.*.files)
Any key (all are declared in configs/base.py) can then be overridden on the command line, e.g.
--config.optimizer.learning_rate=0.3.
"""

from __future__ import annotations

import ml_collections

from configs.base import base_config, data_source, parse_args
from jaxprompt.tasks.catalog import TASKS

# TFDS names and splits of each task, and the local files (relative to the repo root).
_TFDS = {
    "sst2": ("glue/sst2", "train", "validation"),
    "agnews": ("ag_news_subset", "train", "test"),
    **{t: (f"super_glue/{t}", "train", "validation") for t in ("boolq", "cb", "copa", "rte", "wic", "wsc", "multirc")},
}
# Where TFDS's fields differ from the local files' (flat WSC spans; AG News as title + description).
_TFDS_TEMPLATES = {
    "wsc": "wsc text: {text} span1: {span1_text} span2: {span2_text}",
    "agnews": "agnews title: {title} description: {description}",
}
_SUPERGLUE_DIRS = {"boolq": "BoolQ", "cb": "CB", "copa": "COPA", "rte": "RTE", "wic": "WiC", "wsc": "WSC", "multirc": "MultiRC"}
_LOCAL = {
    "sst2": (("tsv", ("../shared/data/sst2/train.tsv",), ()), ("tsv", ("../shared/data/sst2/dev.tsv",), ())),
    "agnews": (("tsv", ("../shared/data/agnews/test.tsv",), ("text", "label")),) * 2,
    **{t: (("jsonl", (f"../shared/data/superglue/{d}/train32.jsonl",), ()),
           ("jsonl", (f"../shared/data/superglue/{d}/val.jsonl",), ()))
       for t, d in _SUPERGLUE_DIRS.items()},
}
_SIZES = ("tiny", "small", "base", "large", "xl", "xxl")
_BEST_METRIC = {"accuracy": "accuracy", "f1_macro": "f1_macro", "multirc": "f1a"}  # by task metric


def task_data(task: str, data: str) -> tuple[ml_collections.ConfigDict, ml_collections.ConfigDict]:
  """(train, eval) data sources of a preset task: TFDS, or the local files in ../shared/data."""
  if data == "tfds":
    name, train_split, eval_split = _TFDS[task]
    return data_source("tfds", tfds_name=name, split=train_split), data_source("tfds", tfds_name=name, split=eval_split)
  if data == "local":
    return tuple(data_source(kind, files, columns) for kind, files, columns in _LOCAL[task])
  raise ValueError(f"data={data!r} is not one of ('tfds', 'local')")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = parse_args(arg, size="tiny", task="sst2", data="tfds")
  if args["size"] not in _SIZES:
    raise ValueError(f"size={args['size']!r} is not one of {_SIZES}")
  if args["task"] not in TASKS:
    raise ValueError(f"task={args['task']!r} is not one of {sorted(TASKS)}")
  tiny = args["size"] == "tiny"
  config = base_config()

  config.model.family = "t5"
  config.model.checkpoint = "" if tiny else f"google/t5-{args['size']}-lm-adapt"  # T5 v1.1 LM-adapted
  config.model.size = args["size"]
  config.model.tokenizer = "google/t5-v1_1-small"  # all T5 v1.1 share this spiece.model
  config.model.dtype = "float32" if tiny else "bfloat16"
  config.model.param_dtype = "float32" if tiny else "bfloat16"
  config.model.dropout_rate = 0.0 if tiny else 0.1  # T5X's fine-tuning default

  config.prompt.length = 8 if tiny else 100

  config.task = ml_collections.ConfigDict(vars(TASKS[args["task"]]))
  if args["data"] == "tfds" and args["task"] in _TFDS_TEMPLATES:
    config.task.template = _TFDS_TEMPLATES[args["task"]]
  config.best_metric = "eval/" + _BEST_METRIC[TASKS[args["task"]].metric]

  config.data.train, config.data.eval = task_data(args["task"], args["data"])
  if tiny:
    config.data.max_input_len = 64
    config.data.bucket_lengths = ()
    config.batch_size = 8
    config.num_steps = 20
    config.log_every = 1
    config.eval_every = 10
    config.eval_batch_size = 8
    config.checkpoint_every = 10
  return config
