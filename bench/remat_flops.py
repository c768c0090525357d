"""What each remat policy costs a prompt-tuning step in FLOPs: the work the step does, counted by XLA.

    python bench/remat_flops.py --size=xxl --batch=32 --input_len=512 --prompt_len=100 --target_len=8

Lowers the product's train step (bench/t5_prompt_step.py) with the layers unrolled, once per remat
policy, from abstract weights (nothing is allocated, nothing compiled), and reads XLA's FLOP count
of the lowered program (unrolled, since XLA counts a scanned loop's body once). The step without
remat is the baseline; a policy's extra FLOPs are the forward work it recomputes in the backward
pass. In prompt tuning that is less than in full fine-tuning: a frozen projection's backward
(dx = dy W^T) needs no saved input, so only what the backward actually reads is recomputed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.t5_prompt_step import PromptStep, abstract_frozen, add_shape_arguments, shape_from  # noqa: E402
from jaxprompt.flops import t5_prompt_tuning_flops  # noqa: E402
from jaxprompt.models.layers import REMAT_BY_RECOMPUTATION  # noqa: E402
from jaxprompt.models.t5_config import T5Config  # noqa: E402


def step_tflops(config: T5Config, shape) -> float:
  """XLA's FLOP count of the lowered train step, in TFLOPs."""
  step = PromptStep(config, shape, frozen=abstract_frozen(config))
  return float(step.step.lower(*step.arguments()).cost_analysis()["flops"]) / 1e12


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  add_shape_arguments(parser, batch=32, prompt_len=100, input_len=512, target_len=8)
  parser.add_argument("--dtype", default="bfloat16", help="compute and frozen-weight dtype")
  args = parser.parse_args()
  shape = shape_from(args)
  counted = {}
  for policy in REMAT_BY_RECOMPUTATION:
    config = T5Config.preset(args.size, dtype=args.dtype, param_dtype=args.dtype, scan_layers=False,
                             remat_policy=policy, dropout_rate=0.0)
    counted[policy] = step_tflops(config, shape)
  analytic = t5_prompt_tuning_flops(config, shape.batch, shape.prompt_len, shape.input_len, shape.target_len)
  print(json.dumps({
      "date": datetime.date.today().isoformat(), "jax": jax.__version__,
      "model": f"T5 v1.1 {args.size}, {args.dtype}", "shape": shape.describe(),
      "analytic_step_tflops": round(analytic.prompt_step / 1e12, 2),
      "analytic_forward_tflops": round(analytic.forward / 1e12, 2),
      "xla_step_tflops": {policy: round(tflops, 2) for policy, tflops in counted.items()},
      "recomputed_over_no_remat": {policy: round(tflops / counted["none"] - 1, 3) for policy, tflops in counted.items()},
  }, indent=2))


if __name__ == "__main__":
  main()
