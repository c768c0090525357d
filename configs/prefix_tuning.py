"""Prefix tuning (Li & Liang 2021): trainable keys and values in every layer of the frozen model.

    python -m jaxprompt.train --config=configs/prefix_tuning.py:size=base,task=rte --workdir=/tmp/prefix
    python -m jaxprompt.train --config=configs/prefix_tuning.py:model=smollm --workdir=/tmp/prefix-smollm

Arguments after the colon (comma-separated key=value):
  model  t5 (T5 v1.1 LM-adapted, the default) | smollm (SmolLM2-135M, a Llama-style decoder, SST-2)
  size   t5 only: tiny | small | base | large | xl | xxl   (as configs/t5_prompt.py)
  task   t5 only: sst2 | boolq | cb | copa | rte | wic | wsc | multirc | agnews
  data   tfds (downloads) | local (../shared/data)

On T5, encoder self-attention, decoder self-attention and decoder cross-attention each get their own
prefixes; config.prompt.prefix_attention picks a subset, e.g. "('decoder_self','decoder_cross')" for
the decoder alone (PEFT 0.21 runs T5's prefixes in decoder self-attention only: jaxprompt/peft_adapters.py). Training reparameterises the prefixes through Linear-Tanh-Linear; the
exported prompt (prompts/*.npz) holds the plain per-layer keys and values it collapses to, while the
checkpoints keep the MLP, so a run resumes where it stopped.
"""

from __future__ import annotations

import ml_collections

from configs import smollm_sst2_prompt, t5_prompt
from configs.base import parse_args


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = parse_args(arg, model="t5", size="tiny", task="sst2", data="tfds")
  if args["model"] == "t5":
    config = t5_prompt.get_config(f"size={args['size']},task={args['task']},data={args['data']}")
  elif args["model"] == "smollm":
    if args["task"] != "sst2" or args["size"] != "tiny":
      raise ValueError("model=smollm is the SST-2 recipe of configs/smollm_sst2_prompt.py: it takes no size or task")
    config = smollm_sst2_prompt.get_config(f"data={args['data']}")
    config.loss_over = "vocabulary"  # PET's label-word loss is a choice of that recipe, not of prefix tuning
  else:
    raise ValueError(f"model={args['model']!r} is not one of ('t5', 'smollm')")
  tiny = args["model"] == "t5" and args["size"] == "tiny"

  config.prompt.method = "prefix_tuning"
  config.prompt.prefix_attention = ()  # every kind the backbone has
  # The authors' released DART run (XiangLi1999/PrefixTuning, data/dart/...prefixtune_n_20...m=512
  # ...lr=5e-05...b=10-e=10): prefix length 20, MLP hidden (mid_dim) 512, AdamW at 5e-5 with linear
  # decay, batch 10, 10 epochs. The paper's summarisation runs use longer prefixes (up to 200).
  config.prompt.length = 4 if tiny else 20
  config.prompt.reparam_hidden = 16 if tiny else 512
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-2 if tiny else 5e-5  # tiny: a random model learns in a few steps
  config.optimizer.schedule = "linear"
  config.optimizer.weight_decay = 0.0
  return config
