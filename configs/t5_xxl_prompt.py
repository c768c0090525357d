"""Lester et al. (2021)'s recipe: prompt tuning of the frozen T5 v1.1 XXL LM-adapted (11B).

    python -m jaxprompt.train --config=configs/t5_xxl_prompt.py --workdir=gs://bucket/rte
    python -m jaxprompt.train --config=configs/t5_xxl_prompt.py:task=boolq --workdir=...

P=100 soft tokens with class-label init; Adafactor at a constant 0.3 (decay rate 0.8, no parameter
scaling, weight decay 1e-5); batch 32 of 512-token inputs; 30,000 steps; the best prompt by the
validation metric is kept (checkpoints/ + prompts/best.npy), and the run stops early when it has not
improved for 10 evaluations. The mesh below is for a TPU pod slice: weights sharded over every chip
(fsdp) with 4-way tensor parallelism inside each host's chips; the prompt is replicated.
"""

from __future__ import annotations

from configs import t5_prompt


def get_config(arg: str | None = None):
  config = t5_prompt.get_config(",".join(filter(None, ["size=xxl", arg])))
  config.model.checkpoint = "google/t5-xxl-lm-adapt"  # the paper's backbone
  # Keep projections, recompute the rest. The TPU compiler's plan: 19.2 GiB a chip on a v4-8 (32 GiB),
  # 10.3 on a v5e-8 (16 GiB); less remat does not fit either. `python -m jaxprompt.plan --fit`
  # searches for a slice's setting, BENCHMARKS.md has the plans.
  config.model.remat_policy = "dots_no_batch"
  config.prompt.length = 100
  config.prompt.init = "class_labels"
  config.batch_size = 32
  config.num_steps = 30_000
  config.eval_every = 1000
  config.checkpoint_every = 1000
  config.early_stopping_patience = 10  # evaluations without a new best before stopping
  config.mesh.data = 1
  config.mesh.fsdp = -1  # all remaining chips shard the frozen weights (and the batch)
  config.mesh.tensor = 4  # heads / mlp / vocab split 4 ways: 64 heads, d_ff 10240, vocab 32128
  return config
