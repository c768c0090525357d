"""The T5 prompt-tuning step with attention's batch in one piece or in one piece per core, in one process.

    python bench/attention_pieces.py --size=small --batch=8 --input_len=128 --prompt_len=20 --target_len=8 --dtype=bfloat16

XLA:CPU runs a batched matmul on one thread, so on a single CPU device layers.dot_product_attention cuts
the batch into independent pieces, one per core (layers.attention_batch_chunks). This bench builds the
product's step (bench/t5_prompt_step.py, layers unrolled) twice, with the chooser as it is and forced
to one piece, and times them taking turns: the report gives the pieces' time over one piece's, within
rounds, median over rounds.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

import jax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.t5_forward_backward import machine  # noqa: E402
from bench.t5_prompt_step import PromptStep, add_shape_arguments, shape_from  # noqa: E402
from jaxprompt.models import layers  # noqa: E402
from jaxprompt.models.t5_config import T5Config  # noqa: E402


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  add_shape_arguments(parser, batch=8, prompt_len=20, input_len=128, target_len=8)
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  parser.add_argument("--rounds", type=int, default=10)
  parser.add_argument("--steps_per_round", type=int, default=3)
  args = parser.parse_args()

  config = T5Config.preset(args.size, dtype=args.dtype, param_dtype=args.dtype, scan_layers=False)
  shape = shape_from(args)
  pieces = layers.attention_batch_chunks(shape.batch)
  steps = {f"{pieces} pieces": PromptStep(config, shape)}
  steps[f"{pieces} pieces"]()  # traced and compiled before the patch
  with mock.patch.object(layers, "attention_batch_chunks", lambda batch: 1):
    steps["one piece"] = PromptStep(config, shape, frozen=steps[f"{pieces} pieces"].frozen)
    steps["one piece"]()  # traced and compiled while the patch holds

  times = {name: [] for name in steps}
  for round_ in range(args.rounds):
    order = list(steps.items()) if round_ % 2 == 0 else list(steps.items())[::-1]
    for name, step in order:
      start = time.perf_counter()
      for _ in range(args.steps_per_round):
        step()
      times[name].append((time.perf_counter() - start) / args.steps_per_round)
  one = times["one piece"]
  ratios = [p / o for p, o in zip(times[f"{pieces} pieces"], one)]
  print(json.dumps({
      "date": datetime.date.today().isoformat(),
      "machine": machine(),
      "jax": jax.__version__,
      "model": f"T5 v1.1 {args.size} dimensions, {args.dtype}, layers unrolled",
      "shape": shape.describe(),
      "s_per_step": {name: round(statistics.median(t), 4) for name, t in times.items()},
      "pieces_over_one_piece": round(statistics.median(ratios), 3),
      "per_round": [round(r, 2) for r in ratios],
  }, indent=2))


if __name__ == "__main__":
  main()
