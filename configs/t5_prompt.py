"""Prompt tuning (Lester et al. 2021) of a frozen T5 v1.1 LM-adapted, any size.

    python -m jaxprompt.train --config=configs/t5_prompt.py:size=base,task=rte --workdir=/tmp/rte

Arguments after the colon (comma-separated key=value):
  size  tiny | small | base | large | xl | xxl   (tiny: a random 2+2-layer T5 for tests and demos)
  task  sst2 | boolq | cb | copa | rte | wic | wsc | multirc | agnews
  data  tfds (downloads) | local (the files in ../shared/data, or override data.*.files)
Any key can then be overridden on the command line, e.g. --config.optimizer.learning_rate=0.3.
"""

from __future__ import annotations

import ml_collections

from jaxprompt.sharding import DEFAULT_RULES
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


def _parse(arg: str | None, **defaults: str) -> dict[str, str]:
  args = dict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, sep, value = item.partition("=")
    if not sep or key not in defaults:
      raise ValueError(f"config argument {item!r}: expected key=value with key in {sorted(defaults)}")
    args[key] = value
  return args


def _source(kind: str, files: tuple[str, ...] = (), columns: tuple[str, ...] = (), tfds_name: str = "",
            split: str = "") -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      kind=kind,  # tfds | jsonl | tsv | csv
      files=files,  # local files, read in order (jsonl / tsv / csv)
      columns=columns,  # column names of header-less tsv/csv files; empty: the first row is the header
      tfds_name=tfds_name,  # e.g. super_glue/rte (kind=tfds)
      split=split,  # TFDS split, e.g. train, validation, train[:1000]
      data_dir="",  # TFDS data_dir; empty: TFDS's default (~/tensorflow_datasets)
  ))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = _parse(arg, size="tiny", task="sst2", data="tfds")
  if args["size"] not in _SIZES:
    raise ValueError(f"size={args['size']!r} is not one of {_SIZES}")
  if args["task"] not in TASKS:
    raise ValueError(f"task={args['task']!r} is not one of {sorted(TASKS)}")
  tiny = args["size"] == "tiny"
  config = ml_collections.ConfigDict()

  config.model = ml_collections.ConfigDict(dict(
      family="t5",  # t5 (encoder-decoder) | llama (decoder-only)
      # Hub id, local HF directory/file or T5X checkpoint of the frozen backbone; empty: random init
      # of the `size` preset (only sensible for tests and demos).
      checkpoint="" if tiny else f"google/t5-{args['size']}-lm-adapt",
      size=args["size"],  # T5 v1.1 preset used when checkpoint is empty
      tokenizer="google/t5-v1_1-small",  # spiece.model, a directory holding it, or a Hub id (all T5 v1.1 share it)
      dtype="float32" if tiny else "bfloat16",  # compute dtype of the backbone
      param_dtype="float32" if tiny else "bfloat16",  # frozen weights are stored in this dtype
      scan_layers=True,  # nn.scan over layers: compile time independent of depth
      remat_policy="none",  # none | full | dots | dots_no_batch | qkv_out: trade compute for memory
      dropout_rate=0.0 if tiny else 0.1,  # dropout inside the frozen model (T5X fine-tuning default)
      init_seed=0,  # seed of the random backbone when checkpoint is empty
  ))

  config.prompt = ml_collections.ConfigDict(dict(
      method="prompt_tuning",  # Lester et al.: a soft prompt before the input
      length=100 if not tiny else 8,  # P, the number of soft tokens (Lester et al.: 100)
      init="class_labels",  # uniform | vocab | class_labels | file (Lester et al.'s best: class_labels)
      init_file="",  # a [P, D] .npy for init=file
      uniform_scale=0.5,  # init=uniform draws from [-scale, scale]
      vocab_population=5000,  # init=vocab/class_labels sample from this many most frequent tokens
      placement="prefix",  # prefix | after_bos | suffix
  ))

  config.task = ml_collections.ConfigDict(vars(TASKS[args["task"]]))  # template, labels, verbalizer, metric
  if args["data"] == "tfds" and args["task"] in _TFDS_TEMPLATES:
    config.task.template = _TFDS_TEMPLATES[args["task"]]

  train_source, eval_source = _data_sources(args["task"], args["data"])
  config.data = ml_collections.ConfigDict(dict(
      train=train_source,
      eval=eval_source,
      max_input_len=512 if not tiny else 64,  # longer inputs are truncated (and counted)
      max_target_len=8,  # verbalizer targets are a few tokens
      bucket_lengths=(128, 256, 512) if not tiny else (),  # pad each batch to the smallest that fits
      skip_bad_examples=False,  # True: count and skip bad records instead of failing with file:line
      max_eval_examples=0,  # evaluate on the first N eval examples (0: all)
  ))

  config.optimizer = ml_collections.ConfigDict(dict(
      name="adafactor",  # adafactor | adam
      learning_rate=0.3,  # Lester et al.: 0.3 constant
      schedule="constant",  # constant | linear | cosine | rsqrt
      warmup_steps=0,  # linear warm-up steps before the schedule
      decay_rate=0.8,  # Adafactor second-moment decay exponent (Lester et al.: 0.8)
      multiply_by_parameter_scale=False,  # Adafactor relative step size (off for prompts)
      update_clipping=1.0,  # Adafactor's clipping of the update RMS
      weight_decay=1e-5,  # Lester et al.: 1e-5 (decoupled, scaled by the learning rate)
      clip_norm=0.0,  # clip gradients by global norm first; 0: off
      b1=0.9,  # Adam only
      b2=0.999,  # Adam only
      eps=1e-8,  # Adam only
  ))

  config.loss_over = "vocabulary"  # vocabulary | label_words (PET: softmax over the label words only)
  config.icl = ml_collections.ConfigDict(dict(
      num_shots=0,  # GPT-3-style demonstrations from the training data before each eval input
      seed=0,  # which demonstrations each eval example gets
      separator="\n\n",  # between demonstrations, and before the input
  ))

  config.seed = 0  # prompt init, data order and dropout
  config.batch_size = 32 if not tiny else 8  # global batch (Lester et al.: 32)
  config.num_microbatches = 1  # gradient accumulation: batch_size / num_microbatches per pass
  config.num_steps = 30_000 if not tiny else 20  # Lester et al.: 30,000
  config.log_every = 50 if not tiny else 1  # steps between training-metric writes

  config.eval_every = 1000 if not tiny else 10  # steps between evaluations (and best-prompt checks)
  config.eval_batch_size = 32 if not tiny else 8
  config.max_decode_len = 8  # greedy decoding length for exact match
  config.best_metric = "eval/" + _BEST_METRIC[TASKS[args["task"]].metric]  # selects the best prompt
  config.early_stopping_patience = 0  # stop after this many evals without a new best; 0: never

  config.checkpoint_every = 1000 if not tiny else 10  # steps between checkpoints (also at every eval)
  config.keep_checkpoints = 3  # the last N are kept, plus the best
  config.async_checkpointing = True  # save in the background while training goes on

  config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))  # one may be -1: the rest
  config.rules = DEFAULT_RULES  # logical axis -> mesh axes; prompts map to no axis (replicated)
  return config


def _data_sources(task: str, data: str) -> tuple[ml_collections.ConfigDict, ml_collections.ConfigDict]:
  if data == "tfds":
    name, train_split, eval_split = _TFDS[task]
    return _source("tfds", tfds_name=name, split=train_split), _source("tfds", tfds_name=name, split=eval_split)
  if data == "local":
    return tuple(_source(kind, files, columns) for kind, files, columns in _LOCAL[task])
  raise ValueError(f"data={data!r} is not one of ('tfds', 'local')")
