"""Scanned against unrolled layers: the product's T5 prompt step at several sizes, in one process.

    python bench/layer_scan_choice.py --sizes=small,base,large --batch=8 --input_len=128

The evidence for `scan_layers="auto"` (jaxprompt/models/layer_scan.py). For each T5 v1.1 size the
step (bench/t5_prompt_step.py, random float32 weights) is built both ways; each is compiled once
(the seconds are reported), then the two take turns, --rounds rounds of (median of
--steps_per_round steps after a warm-up), and the report gives unrolled's time over scanned's within
each round (median over rounds) beside what "auto" picks at that size.
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
from bench.t5_forward_backward import machine, time_call  # noqa: E402
from bench.t5_prompt_step import PromptStep, add_shape_arguments, shape_from  # noqa: E402
from jaxprompt.models.t5_config import T5Config  # noqa: E402


def compiled_seconds(step: PromptStep) -> float:
  start = time.perf_counter()
  step.compiled  # noqa: B018 (cached: lowers and compiles once)
  return time.perf_counter() - start


def run_compiled(step: PromptStep):
  """One step through the compiled executable (its state is donated: keep the new one)."""
  step.state, metrics = step.compiled(*step.arguments())
  return metrics


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  add_shape_arguments(parser, batch=8, prompt_len=20, input_len=128, target_len=8)
  parser.add_argument("--sizes", default="small,base,large", help="T5 v1.1 size presets, comma-separated")
  parser.add_argument("--rounds", type=int, default=4)
  parser.add_argument("--steps_per_round", type=int, default=2)
  args = parser.parse_args()
  shape = shape_from(args)

  report = {"date": datetime.date.today().isoformat(), "machine": machine(), "jax": jax.__version__,
            "shape": shape.describe(), "rounds": f"{args.rounds} x (median of {args.steps_per_round} steps after a warm-up)",
            "sizes": {}}
  for size in args.sizes.split(","):
    config = T5Config.preset(size, dtype="float32", param_dtype="float32")
    steps = {"scanned": PromptStep(config.replace(scan_layers=True), shape)}
    steps["unrolled"] = PromptStep(config.replace(scan_layers=False), shape)
    compile_s = {name: round(compiled_seconds(step), 1) for name, step in steps.items()}
    times = {name: [] for name in steps}
    for _ in range(args.rounds):  # take turns, so a slow spell of the machine hits both
      for name, step in steps.items():
        times[name].append(time_call(run_compiled, step, repeats=args.steps_per_round))
    report["sizes"][size] = {
        "stack_weights": config.stack_weights, "auto_picks": "scanned" if config.replace(scan_layers="auto").scan_layers else "unrolled",
        "compile_s": compile_s, "s_per_step": {name: round(statistics.median(t), 3) for name, t in times.items()},
        "unrolled_over_scanned": round(statistics.median(u / s for u, s in zip(times["unrolled"], times["scanned"])), 3),
    }
    print(json.dumps({size: report["sizes"][size]}), flush=True)
  print(json.dumps(report, indent=2))


if __name__ == "__main__":
  main()
