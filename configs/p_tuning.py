"""P-tuning v1 (Liu et al. 2021, "GPT Understands, Too"): a prompt encoder (bidirectional LSTM +
MLP) produces pseudo-token embeddings placed at the template's [P0] [P1] ... markers, between its
anchor words, in front of a frozen decoder (the paper's GPT setting) or T5.

    python -m jaxprompt.train --config=configs/p_tuning.py:task=rte --workdir=/tmp/ptuning-rte

Arguments after the colon (comma-separated key=value):
  model  smollm (SmolLM2-135M, a Llama-style decoder, the default) | t5 (T5 v1.1 LM-adapted)
  size   t5 only: tiny | small | base | large | xl | xxl
  task   sst2 | rte   (templates with anchors below; any template with [Pi] markers works)
  data   tfds (downloads) | local (../shared/data)

The number of pseudo tokens is the template's: its [P0]..[P{N-1}] markers, each used once. The
exported prompt (prompts/*.npy) is the N embeddings the encoder produces, for serving; checkpoints
keep the encoder.
"""

from __future__ import annotations

import ml_collections

from configs import smollm_sst2_prompt, t5_prompt
from configs.base import parse_args
from jaxprompt.tasks.catalog import TASKS

# (template with pseudo tokens and anchors, decoder verbalizer): the anchor words ("?",
# "Sentiment:", "Answer:") stay discrete tokens, as in the paper's "[P] premise ? [P] hypothesis".
_TEMPLATES = {
    "sst2": ("[P0][P1][P2] {sentence} [P3][P4] Sentiment:", (" negative", " positive")),
    "rte": ("[P0][P1] {premise} ? [P2] {hypothesis} [P3] Answer:", (" yes", " no")),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = parse_args(arg, model="smollm", size="tiny", task="sst2", data="tfds")
  if args["task"] not in _TEMPLATES:
    raise ValueError(f"task={args['task']!r} is not one of {sorted(_TEMPLATES)}")
  template, decoder_verbalizer = _TEMPLATES[args["task"]]
  if args["model"] == "smollm":
    config = smollm_sst2_prompt.get_config(f"data={args['data']}")
    config.task = ml_collections.ConfigDict(vars(TASKS[args["task"]]))
    config.task.verbalizer = decoder_verbalizer  # one token each for SmolLM2's tokenizer
    config.data.train, config.data.eval = t5_prompt.task_data(args["task"], args["data"])
    config.data.max_input_len = 256 if args["task"] == "rte" else 128
    config.data.bucket_lengths = (64, 128, 256)
  elif args["model"] == "t5":
    config = t5_prompt.get_config(f"size={args['size']},task={args['task']},data={args['data']}")
  else:
    raise ValueError(f"model={args['model']!r} is not one of ('smollm', 't5')")
  config.task.template = template

  config.prompt.method = "p_tuning"
  config.prompt.encoder = "lstm"  # the paper's: a 2-layer BiLSTM, then Linear-ReLU-Linear
  config.prompt.encoder_hidden = 0  # the MLP as wide as the model
  # Our choice for a frozen model (the paper also tunes the model in its SuperGLUE runs): Adam at
  # 1e-3, linear decay; the encoder's LSTM wants a smaller rate than a bare soft prompt's 0.01-0.3.
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-3
  config.optimizer.schedule = "linear"
  config.optimizer.weight_decay = 0.0
  return config
