"""Cloze patterns on a masked LM (PET, LM-BFF): the label words scored at the pattern's [MASK].

    python -m jaxprompt.train --config=configs/cloze.py:recipe=lm_bff,task=sst2 --workdir=/tmp/sst2-cloze
    python -m jaxprompt.train --config=configs/cloze.py:recipe=pet,task=boolq,pattern=0 --workdir=/tmp/boolq-p0

Arguments after the colon (comma-separated key=value):
  recipe   pet (PET's patterns and verbalizers, pet/pvp.py) | lm_bff (LM-BFF's manual templates)
  task     pet: agnews agnews_text boolq cb copa rte wic wsc multirc mnli yelp_polarity yelp_full yahoo;
           lm_bff: sst2 sst5 mr cr mpqa subj trec cola mnli snli qnli rte mrpc qqp
  pattern  PET's pattern id (pet only; default 0)
  train    all (prompt-based fine-tuning of every weight, as both papers) | bias (biases only,
           BitFit) | prompt (a 20-token soft prompt on the frozen MLM instead)
  data     tfds (downloads) | local (../shared/data where it has the task)
The patterns, label words and maximum lengths are the presets of jaxprompt/tasks/cloze_presets.py.
The backbone: RoBERTa-large (both papers' English experiments), ALBERT-xxlarge-v2 for PET's
SuperGLUE tasks (PET with multiple masks); any local MLM checkpoint with
--config.model.checkpoint=/path and --config.model.family=bert|albert.

Fine-tuning follows the papers' code: AdamW at 1e-5 with linear decay to 0 and no warm-up, no
weight decay on biases and norms (PET: 0.01 on the rest and gradients clipped at norm 1; LM-BFF:
none), PET's FewGLUE batch 16 for 250 steps, LM-BFF's batch 8 for 1000 steps evaluated every 100
(the best kept). COPA's choices of several tokens train with PET's hinge loss over one pass with k
masks and are decoded max-first at evaluation (config.cloze.decoding), its training set doubled
with the choices swapped; WSC's referent is generated: trained on the positive examples (its
tokens and 0-3 padding masks), filled greedily at evaluation and compared as words, as PET does. PET's auxiliary MLM loss:
--config.cloze.mlm_alpha=1e-4 with --config.data.unlabeled.* naming unlabeled records.
"""

from __future__ import annotations

import ml_collections

from configs.base import base_config, data_source, parse_args
from configs.t5_prompt import task_data
from jaxprompt.tasks.cloze_presets import LM_BFF_PRESETS, PET_PATTERNS

_SUPERGLUE = ("boolq", "cb", "copa", "rte", "wic", "wsc", "multirc")
_LOCAL = ("sst2", *_SUPERGLUE)  # tasks ../shared/data has (its AG News file has no titles)
_BEST_METRIC = {"cb": "f1_macro", "multirc": "f1a", "stsb": "pearson"}
_METRIC = {"cb": "f1_macro", "multirc": "multirc"}
# LM-BFF's GLUE tasks in TFDS (train, eval split), and where TFDS's records differ from GLUE's tsv
# files the presets read: MNLI's fields and class order, STS-B's score field.
_GLUE = {"sst2": "validation", "cola": "validation", "mnli": "validation_matched", "qnli": "validation",
         "rte": "validation", "mrpc": "validation", "qqp": "validation", "stsb": "validation"}
_GLUE_TFDS_FIELDS = {
    "mnli": dict(pattern_fields=("premise", "hypothesis"), label_field="label",
                 label_names=("entailment", "neutral", "contradiction"), verbalizer=("Yes", "Maybe", "No")),
    "stsb": dict(label_field="label"),
}
_TRAIN = {"all": "all", "bias": "bias$", "prompt": "none"}  # train= -> config.model.trainable


def _preset(recipe: str, task: str, pattern: int):
  if recipe == "pet":
    if (task, pattern) not in PET_PATTERNS:
      raise ValueError(f"recipe=pet has no task={task!r} pattern={pattern}; it has {sorted(PET_PATTERNS)}")
    return PET_PATTERNS[task, pattern]
  if recipe == "lm_bff":
    if task not in LM_BFF_PRESETS:
      raise ValueError(f"recipe=lm_bff has no task={task!r}; it has {sorted(LM_BFF_PRESETS)}")
    return LM_BFF_PRESETS[task]
  raise ValueError(f"recipe={recipe!r} is not one of ('pet', 'lm_bff')")


def _lm_bff_tfds(task: str):
  """TFDS's GLUE for LM-BFF's GLUE tasks; the others (SST-5, MR, CR, MPQA, Subj, TREC, SNLI) have
  no TFDS GLUE builder: give their files (--config.data.train.kind=tsv --config.data.train.files=...)."""
  if task not in _GLUE:
    return data_source("tsv"), data_source("tsv")
  name = f"glue/{task}"
  return data_source("tfds", tfds_name=name, split="train"), data_source("tfds", tfds_name=name, split=_GLUE[task])


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = parse_args(arg, recipe="lm_bff", task="sst2", pattern="0", train="all", data="tfds")
  recipe, task = args["recipe"], args["task"]
  preset = _preset(recipe, task, int(args["pattern"]))
  if args["train"] not in _TRAIN:
    raise ValueError(f"train={args['train']!r} is not one of {tuple(_TRAIN)}")
  config = base_config()

  albert = recipe == "pet" and task in _SUPERGLUE
  config.model.family = "albert" if albert else "bert"
  config.model.checkpoint = "albert-xxlarge-v2" if albert else "roberta-large"
  config.model.dtype = "float32"
  config.model.param_dtype = "float32"
  config.model.dropout_rate = 0.0 if albert else 0.1  # the checkpoints' own (ALBERT v2 has none)
  config.model.trainable = _TRAIN[args["train"]]

  config.task = ml_collections.ConfigDict(vars(preset.task_spec(task, _METRIC.get(task))))
  config.best_metric = "eval/" + _BEST_METRIC.get(task, "accuracy")
  if args["data"] == "local" and task not in _LOCAL:
    raise ValueError(f"data=local: ../shared/data has no {task}; it has {_LOCAL}")
  if recipe == "lm_bff" and args["data"] == "tfds":
    config.data.train, config.data.eval = _lm_bff_tfds(task)
    config.task.update(_GLUE_TFDS_FIELDS.get(task, {}))
  else:
    config.data.train, config.data.eval = task_data(task, args["data"])
  config.data.max_input_len = preset.max_len  # PET's 256; LM-BFF's 128 (256 for its NLI tasks)
  config.data.bucket_lengths = tuple(n for n in (64, 128, 256) if n < preset.max_len) + (preset.max_len,)
  config.data.max_target_len = 1  # the label words are scored at the mask, not generated
  config.max_decode_len = 1

  config.optimizer.name = "adam"  # AdamW
  config.optimizer.schedule = "linear"
  config.optimizer.decay_biases_and_norms = False
  pet = recipe == "pet"
  config.optimizer.weight_decay = 0.01 if pet else 0.0
  config.optimizer.clip_norm = 1.0 if pet else 0.0
  config.batch_size = 16 if pet else 8
  config.num_steps = 250 if pet else 1000
  if args["train"] == "prompt":  # Lester et al.'s prompt on the frozen MLM, at a prompt's learning rate
    config.prompt.length, config.prompt.init = 20, "vocab"
    config.optimizer.learning_rate, config.optimizer.weight_decay = 3e-3, 0.0
  else:
    config.prompt.method = "none"
    config.optimizer.learning_rate = 1e-5 if args["train"] == "all" else 1e-3  # BitFit's larger rate
  config.eval_batch_size = 32
  config.eval_every = 100
  config.checkpoint_every = 100
  return config
