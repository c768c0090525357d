"""PET / iPET (Schick & Schütze 2021), whole: one model per pattern and repetition, their merged
scores of the unlabeled set as soft labels, one sequence classifier distilled from them.

    python -m jaxprompt.split --protocol=pet --input=../shared/data/agnews/test.tsv --columns=text,label \\
        --num_labeled=10 --num_unlabeled=1000 --out=/tmp/agnews-10
    python -m jaxprompt.pet --config=configs/pet.py:task=agnews_text,split=/tmp/agnews-10 --workdir=/tmp/pet-ag10
    python -m jaxprompt.pet --config=configs/pet.py:task=rte,data=fewglue,generations=3 --workdir=/tmp/ipet-rte

Arguments after the colon (comma-separated key=value):
  task         agnews (title + description) | agnews_text (AG News files without titles) | yelp_polarity |
               yelp_full | yahoo | mnli | rte | cb | boolq (PET's patterns: cloze_presets.py)
  patterns     PET's pattern ids, '+'-separated (default: all of the task's)
  repetitions  models per pattern (PET: 3)
  generations  1: PET; 2 or more: iPET (the paper-era script: 3 extra generations for 10 examples)
  train        what each member trains: all (PET's full fine-tuning) | bias | prompt (a soft prompt
               on the frozen MLM: the cheap variant)
  classifier   the final model: all (a fine-tuned sequence classifier, PET's) | prompt (P-tuning v2's
               deep prompt + head on the frozen backbone) | head (a linear probe)
  data         split (labeled / unlabeled / test files from `python -m jaxprompt.split pet`, in the
               folder `split`) | fewglue (../shared/data/superglue: train32, unlabeled, val)
  split        the folder of data=split
The members' recipe is configs/cloze.py's recipe=pet (RoBERTa-large; ALBERT-xxlarge-v2 for the
SuperGLUE tasks); any local MLM with --config.model.checkpoint. Records of the unlabeled set keep
any labels they have, but nothing reads them.
"""

from __future__ import annotations

import ml_collections

from configs import cloze
from configs.base import data_source, parse_args
from jaxprompt.tasks.cloze_presets import PET_PATTERNS

_FEWGLUE = {"rte": "RTE", "cb": "CB", "boolq": "BoolQ"}  # the FewGLUE tasks PET's classifier reads as one text
# The final classifier's input: the task's text fields, as PET's sequence classifier reads them.
_CLASSIFIER_TEMPLATES = {
    "agnews": "{title} {description}", "agnews_text": "{text}", "yelp_polarity": "{text}", "yelp_full": "{text}",
    "yahoo": "{question_title} {question_content} {best_answer}", "mnli": "{sentence1} {sentence2}",
    "rte": "{premise} {hypothesis}", "cb": "{premise} {hypothesis}", "boolq": "{passage} {question}",
}
_SPLIT_COLUMNS = {"agnews_text": ("text", "label")}  # header-less tsv files; other tasks' files are jsonl
_CLASSIFIERS = {"all": ("classifier", "all"), "prompt": ("p_tuning_v2", "none"), "head": ("classifier", "none")}


def _split_sources(task: str, folder: str) -> tuple[ml_collections.ConfigDict, ...]:
  columns = _SPLIT_COLUMNS.get(task, ())
  kind, ext = ("tsv", "tsv") if columns else ("jsonl", "jsonl")
  unlabeled_columns = columns[:1] if columns else ()  # jaxprompt.split writes unlabeled rows without their label
  return (data_source(kind, (f"{folder}/labeled.{ext}",), columns),
          data_source(kind, (f"{folder}/unlabeled.{ext}",), unlabeled_columns),
          data_source(kind, (f"{folder}/test.{ext}",), columns))


def _fewglue_sources(task: str) -> tuple[ml_collections.ConfigDict, ...]:
  if task not in _FEWGLUE:
    raise ValueError(f"data=fewglue has {sorted(_FEWGLUE)}, not task={task!r}")
  folder = f"../shared/data/superglue/{_FEWGLUE[task]}"
  unlabeled = "unlabeled.jsonl" if task != "rte" else "val.jsonl"  # FewGLUE has no RTE pool: its labels go unread
  return tuple(data_source("jsonl", (f"{folder}/{name}",)) for name in ("train32.jsonl", unlabeled, "val.jsonl"))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = parse_args(arg, task="agnews", patterns="", repetitions="3", generations="1", labeled="-1", train="all",
                    classifier="all", data="split", split="")
  task = args["task"]
  if task not in _CLASSIFIER_TEMPLATES:
    raise ValueError(f"task={task!r} is not one of {sorted(_CLASSIFIER_TEMPLATES)}")
  ids = tuple(int(i) for i in args["patterns"].split("+")) if args["patterns"] else tuple(
      sorted(i for t, i in PET_PATTERNS if t == task))
  if args["classifier"] not in _CLASSIFIERS:
    raise ValueError(f"classifier={args['classifier']!r} is not one of {tuple(_CLASSIFIERS)}")
  preset_task = "agnews" if task == "agnews_text" else task  # cloze.py knows the task's recipe by this name
  config = cloze.get_config(f"recipe=pet,task={preset_task},pattern={ids[0]},train={args['train']}")
  config.task = ml_collections.ConfigDict()  # each member's task is its pattern's (config.pet)
  if args["data"] == "split":
    if not args["split"]:
      raise ValueError("data=split needs split=<folder written by python -m jaxprompt.split pet>")
    labeled, unlabeled, test = _split_sources(task, args["split"])
  elif args["data"] == "fewglue":
    labeled, unlabeled, test = _fewglue_sources(task)
  else:
    raise ValueError(f"data={args['data']!r} is not one of ('split', 'fewglue')")
  method, trainable = _CLASSIFIERS[args["classifier"]]
  config.pet = ml_collections.ConfigDict(dict(
      task=task,
      pattern_ids=ids,  # PET's presets of `task`
      patterns=(),  # or pattern texts of your own, for config.task's labels and label words
      repetitions=int(args["repetitions"]),
      generations=int(args["generations"]),
      reduction="wmean",  # mean | wmean (weighted by each model's training-set accuracy before training)
      scale_factor=5.0,  # iPET: the training set grows this much a generation
      labeller_fraction=0.25,  # iPET: the share of the previous generation's other models that label a new set
      n_most_likely=100,  # zero-shot iPET: each label's pool in the first step, its most likely examples
      # False: a finished member's checkpoints and exported backbone are removed once its scores
      # are saved, when backbone weights trained (GBs a member); the final classifier keeps its own.
      keep_run_checkpoints=False,
      num_labeled=int(args["labeled"]),  # the first n labelled records (-1: all; 0: none, zero-shot)
      labeled=labeled, unlabeled=unlabeled, test=test,
      classifier=ml_collections.ConfigDict(dict(
          template=_CLASSIFIER_TEMPLATES[task],
          method=method,  # classifier (a head; trainable=all: a sequence classifier) | p_tuning_v2
          trainable=trainable,
          # PET's final classifier: 5000 steps of 16 (FewGLUE) at the members' learning rate; a prompt's rate otherwise
          num_steps=5000, batch_size=16, learning_rate=1e-5 if trainable == "all" else 1e-2,
      )),
  ))
  config.distill_temperature = 2.0  # PET's T
  return config
