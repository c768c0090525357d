"""Our T5 prompt-tuning step against Hugging Face PEFT's `PromptTuning` on transformers' PyTorch T5,
side by side in one run on the same machine: same shapes, float32, a whole optimizer step each.

    python bench/t5_peft_throughput.py --size=small --batch=8 --input_len=128 --prompt_len=20 --target_len=8

Both use T5 v1.1 dimensions with random weights (speed does not depend on their values) and Adam on
the prompt only, in float32 (`--dtype=bfloat16`: both sides' weights and compute in bfloat16).
Ours is the product's train step (bench/t5_prompt_step.py: the step `python -m jaxprompt.train`
runs), with the layers scanned (the configs' default) and unrolled
(`model.scan_layers=False`); PEFT's is `loss.backward()` and `optimizer.step()` with every backbone
weight frozen (`requires_grad=False`). Tokens are non-pad tokens, prompt included.

The machines these run on are shared and their speed drifts by tens of percent within minutes, so
the sides take turns: each round times a few steps of every side, and the ratio is taken within
each round; the report gives the medians over rounds.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.t5_forward_backward import machine, time_call  # noqa: E402
from bench.t5_prompt_step import PromptStep, Shape, add_shape_arguments, random_batch, shape_from  # noqa: E402
from jaxprompt.models.t5_config import T5Config  # noqa: E402


def peft_step(config: T5Config, shape: Shape, dtype: str):
  """PEFT PromptTuning on transformers' T5 of the same dimensions: one Adam step per call."""
  import peft
  import torch
  import transformers

  torch.set_num_threads(os.cpu_count())
  torch.manual_seed(0)
  hf_config = transformers.T5Config(
      vocab_size=config.vocab_size, d_model=config.d_model, d_kv=config.d_kv, d_ff=config.d_ff,
      num_layers=config.num_encoder_layers, num_decoder_layers=config.num_decoder_layers,
      num_heads=config.num_heads, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
      dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0,
  )
  model = peft.get_peft_model(transformers.T5ForConditionalGeneration(hf_config), peft.PromptTuningConfig(
      task_type=peft.TaskType.SEQ_2_SEQ_LM, num_virtual_tokens=shape.prompt_len))
  model.train()
  model.to(getattr(torch, dtype))
  optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
  batch = {k: torch.tensor(v).long() for k, v in random_batch(shape, config.vocab_size).items()}

  def step():
    out = model(input_ids=batch["inputs"], attention_mask=batch["input_mask"], labels=batch["targets"])
    out.loss.backward()
    optimizer.step()
    optimizer.zero_grad()

  versions = {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}
  return step, versions


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  add_shape_arguments(parser, batch=8, prompt_len=20, input_len=128, target_len=8)
  parser.add_argument("--rounds", type=int, default=6)
  parser.add_argument("--steps_per_round", type=int, default=3)
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  args = parser.parse_args()

  config = T5Config.preset(args.size, dtype=args.dtype, param_dtype=args.dtype)
  shape = shape_from(args)
  sides = {
      "ours_scanned": PromptStep(config, shape),
      "ours_unrolled": PromptStep(config.replace(scan_layers=False), shape),
  }
  sides["peft"], versions = peft_step(config, shape, args.dtype)
  times = {name: [] for name in sides}
  for _ in range(args.rounds):  # take turns, so a slow spell of the machine hits every side
    for name, step in sides.items():
      times[name].append(time_call(step, repeats=args.steps_per_round))  # median after a warm-up

  def ratio(ours: str) -> float:  # PEFT's time over ours, within each round
    return statistics.median(p / o for p, o in zip(times["peft"], times[ours]))

  seconds = {name: statistics.median(t) for name, t in times.items()}
  print(json.dumps({
      "date": datetime.date.today().isoformat(),
      "machine": machine(),
      "versions": {"jax": jax.__version__, **versions},
      "model": f"T5 v1.1 {args.size} dimensions, {args.dtype}, random weights",
      "shape": shape.describe(),
      "rounds": f"{args.rounds} x (median of {args.steps_per_round} steps after a warm-up) per side",
      "s_per_step": {name: round(s, 4) for name, s in seconds.items()},
      "tokens_per_s": {name: round(shape.tokens / s) for name, s in seconds.items()},
      "ours_over_peft": {"scanned": round(ratio("ours_scanned"), 2), "unrolled": round(ratio("ours_unrolled"), 2)},
      "ours_over_peft_per_round": {
          ours: [round(p / o, 2) for p, o in zip(times["peft"], times[ours])] for ours in ("ours_scanned", "ours_unrolled")
      },
  }, indent=2))


if __name__ == "__main__":
  main()
