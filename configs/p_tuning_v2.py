"""P-tuning v2 (Liu et al. 2022): deep prompts (keys and values in every layer, no
reparameterisation) and a linear head, trained together on a frozen encoder: sequence
classification on the pooled [CLS] output, or sequence labelling (NER) on every token.

    python -m jaxprompt.train --config=configs/p_tuning_v2.py:task=rte --workdir=/tmp/ptv2-rte
    python -m jaxprompt.train --config=configs/p_tuning_v2.py:task=conll2003 \
        --config.data.train.files="('/data/conll2003/train.txt',)" \
        --config.data.eval.files="('/data/conll2003/valid.txt',)" --workdir=/tmp/ptv2-ner

Arguments after the colon (comma-separated key=value):
  task  sst2 | boolq | cb | copa | rte | wic | wsc | multirc | agnews | conll2003
  data  tfds (downloads) | local (../shared/data; conll2003 always reads CoNLL files you name)
Offline, any local BERT/RoBERTa folder works: --config.model.checkpoint=/path/to/model.

The defaults are the authors' scripts (THUDM/P-tuning-v2, run_script/run_rte_roberta.sh and
run_conll03_roberta.sh): RoBERTa-large, AdamW with linear decay, and per task the prefix length,
learning rate, batch, epochs and maximum length below. The frozen encoder keeps their hidden dropout
of 0.1 while training.
"""

from __future__ import annotations

import ml_collections

from configs.base import base_config, data_source, parse_args
from configs.t5_prompt import task_data
from jaxprompt.tasks.catalog import TAGGING_TASKS, TASKS

# task: (prefix length, learning rate, batch, epochs, max length), from the authors' scripts.
_SCRIPTS = {
    "rte": (128, 5e-3, 32, 100, 128),  # run_rte_roberta.sh
    "conll2003": (11, 3e-2, 16, 30, 152),  # run_conll03_roberta.sh
}
_SEQUENCE_DEFAULT = _SCRIPTS["rte"]  # other classification tasks start from RTE's settings


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = parse_args(arg, task="rte", data="tfds")
  task = args["task"]
  config = base_config()
  config.model.family = "bert"
  config.model.checkpoint = "roberta-large"
  config.model.dtype = "float32"
  config.model.param_dtype = "float32"
  config.model.dropout_rate = 0.1  # the scripts' --hidden_dropout_prob

  if task in TAGGING_TASKS:
    config.task = ml_collections.ConfigDict(vars(TAGGING_TASKS[task]))
    config.data.train, config.data.eval = data_source("conll"), data_source("conll")
    config.best_metric = "eval/span_f1"
  elif task in TASKS:
    config.task = ml_collections.ConfigDict(vars(TASKS[task]))
    config.data.train, config.data.eval = task_data(task, args["data"])
    config.best_metric = "eval/f1a" if TASKS[task].metric == "multirc" else f"eval/{TASKS[task].metric}"
  else:
    raise ValueError(f"task={task!r} is not one of {sorted(TASKS) + sorted(TAGGING_TASKS)}")
  length, lr, batch, epochs, max_len = _SCRIPTS.get(task, _SEQUENCE_DEFAULT)

  config.prompt.method = "p_tuning_v2"
  config.prompt.length = length  # --pre_seq_len
  config.optimizer.name = "adam"  # Hugging Face Trainer's AdamW, no weight decay, linear decay
  config.optimizer.learning_rate = lr
  config.optimizer.schedule = "linear"
  config.optimizer.weight_decay = 0.0
  config.batch_size = batch
  config.eval_batch_size = 32
  config.num_steps = epochs * 2_500 // batch  # RTE's 2,490 training examples, `epochs` times
  config.data.max_input_len = max_len  # --max_seq_length
  config.data.bucket_lengths = (64, max_len)
  config.data.max_target_len = 1  # a head reads no targets
  config.max_decode_len = 1
  config.eval_every = 500
  config.checkpoint_every = 500
  return config
