"""XLA:CPU compiler options on the product's T5 prompt-tuning step, side by side in one process.

    python bench/xla_cpu_options.py --size=small --batch=8 --input_len=128 --prompt_len=20 --target_len=8

The same step (bench/t5_prompt_step.py, layers unrolled) is compiled once per option set with
`Lowered.compile(compiler_options=...)`, so every variant runs in the same process on the same
machine state; XLA_FLAGS would need a process per variant, and on a shared 2-core VM two processes
differ by more than the options do. The variants take turns, each round timing a few steps of
each; the report gives each variant's time over the default's, within rounds, median over rounds.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.t5_forward_backward import machine  # noqa: E402
from bench.t5_prompt_step import PromptStep, add_shape_arguments, shape_from  # noqa: E402
from jaxprompt.models.t5_config import T5Config  # noqa: E402

# DebugOptions fields, as XLA names them. The dots go to YNNPACK by default; the empty fusion type
# hands them back to Eigen. The concurrency scheduler runs independent ops side by side on the thread
# pool; off, each op gets every thread.
VARIANTS = {
    "default": {},
    "dots through Eigen (ynn_fusion_type empty)": {"xla_cpu_experimental_ynn_fusion_type": ""},
    "concurrency scheduler off": {"xla_cpu_enable_concurrency_optimized_scheduler": False},
    "fast math": {"xla_cpu_enable_fast_math": True},
    "512-bit vectors preferred": {"xla_cpu_prefer_vector_width": 512},
}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  add_shape_arguments(parser, batch=8, prompt_len=20, input_len=128, target_len=8)
  parser.add_argument("--rounds", type=int, default=6)
  parser.add_argument("--steps_per_round", type=int, default=3)
  args = parser.parse_args()

  config = T5Config.preset(args.size, dtype="float32", param_dtype="float32").replace(scan_layers=False)
  step = PromptStep(config, shape_from(args))
  lowered = step.step.lower(*step.arguments())
  compiled = {name: lowered.compile(compiler_options=options) for name, options in VARIANTS.items()}
  state = step.state

  def seconds(fn) -> float:  # median of a few steps after one warm-up; the donated state is threaded
    nonlocal state
    times = []
    for i in range(args.steps_per_round + 1):
      start = time.perf_counter()
      state, metrics = fn(state, step.frozen, step.batch, step.rng)
      jax.block_until_ready(metrics)
      if i:
        times.append(time.perf_counter() - start)
    return statistics.median(times)

  times = {name: [] for name in compiled}
  for _ in range(args.rounds):
    for name, fn in compiled.items():
      times[name].append(seconds(fn))
  default = times["default"]
  print(json.dumps({
      "date": datetime.date.today().isoformat(),
      "machine": machine(),
      "jax": jax.__version__,
      "model": f"T5 v1.1 {args.size} dimensions, float32, layers unrolled",
      "shape": step.shape.describe(),
      "s_per_step": {name: round(statistics.median(t), 4) for name, t in times.items()},
      "over_default": {name: round(statistics.median(v / d for v, d in zip(t, default)), 3)
                       for name, t in times.items()},
      "over_default_per_round": {name: [round(v / d, 2) for v, d in zip(t, default)] for name, t in times.items()},
  }, indent=2))


if __name__ == "__main__":
  main()
