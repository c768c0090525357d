"""Throughput, FLOPs, MFU and memory of the product's T5 prompt-tuning step, one JSON report per run.

    python bench/t5_prompt_throughput.py --size=small --dtype=float32 --batch=8 --input_len=128 --prompt_len=20 --target_len=8 --profile
    python bench/t5_prompt_throughput.py --size=large --batch=32 --input_len=512 --prompt_len=100 --target_len=8   # a GPU
    python bench/t5_prompt_throughput.py --size=xxl --remat_policy=full --largest_batch --input_len=512 --prompt_len=100

Reports examples/s and tokens/s (non-pad tokens, prompt included), the analytic FLOPs of a
prompt-tuning step (forward + activation gradients, jaxprompt/flops.py) and the achieved TFLOP/s,
MFU against the device's peak (a table of published dense bf16 peaks for accelerators; on a CPU
the best rate of a large matmul measured in the same run), the step's compile time, the compiled
FLOPs (XLA's cost_analysis of the same step with unrolled layers, since a scanned step's count
holds one layer), and memory: XLA's plan for the step (arguments + outputs - donated + temporaries) and, on
a GPU or TPU, the allocator's peak. `--profile` adds where the busy time goes (bench/step_profile.py)
and the host's cost of assembling one batch. `--largest_batch` doubles the batch until a step no
longer fits in device memory, then bisects, and reports the largest batch that trained.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import step_profile  # noqa: E402
from bench.t5_forward_backward import compiled_flops, machine, time_call  # noqa: E402
from bench.t5_prompt_step import PromptStep, Shape, abstract_frozen, add_shape_arguments, random_frozen, shape_from  # noqa: E402
from jaxprompt.flops import t5_prompt_tuning_flops  # noqa: E402
from jaxprompt.models.t5_config import T5Config  # noqa: E402
from jaxprompt.tasks import pipeline  # noqa: E402
from jaxprompt.tasks.features import Feature  # noqa: E402

GIB = 2.0**30
# Published dense bf16 peak TFLOP/s per chip, matched against jax's device_kind.
PEAK_BF16_TFLOPS = {
    "H200": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0, "L4": 121.0,
    "TPU v4": 275.0, "TPU v5 lite": 197.0, "TPU v5e": 197.0, "TPU v5p": 459.0, "TPU v5": 459.0,
    "TPU v6 lite": 918.0, "TPU v6e": 918.0,
}


def measured_matmul_tflops(dtype: str, size: int = 2048, repeats: int = 5) -> float:
  """The best rate of a [size, size] @ [size, size] matmul here: a CPU's attainable peak."""
  a = jnp.ones((size, size), dtype)
  matmul = jax.jit(lambda x, y: x @ y)
  jax.block_until_ready(matmul(a, a))
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(matmul(a, a))
    best = min(best, time.perf_counter() - start)
  return 2 * size**3 / best / 1e12


def device_peak_tflops(dtype: str) -> tuple[float, str]:
  device = jax.devices()[0]
  if device.platform == "cpu":
    return measured_matmul_tflops(dtype), f"measured {dtype} 2048x2048 matmul, this run"
  for kind, tflops in PEAK_BF16_TFLOPS.items():  # "H100 PCIe" is tried before "H100"
    if kind in device.device_kind:
      return tflops, f"published dense bf16 peak of {device.device_kind}"
  raise ValueError(f"no published peak for device {device.device_kind!r}: pass --peak_tflops")


def compiled_gflops(step: PromptStep) -> float:
  """XLA's FLOP count of the step with the layers unrolled (lowered only: no compile needed)."""
  unrolled = step.config.replace(scan_layers=False)
  counted = PromptStep(unrolled, step.shape, frozen=abstract_frozen(unrolled))
  return compiled_flops(counted.step, *counted.arguments()) / 1e9


def memory_gib(step: PromptStep) -> dict[str, float]:
  memory = step.compiled.memory_analysis()
  planned = (memory.argument_size_in_bytes + memory.output_size_in_bytes - memory.alias_size_in_bytes
             + memory.temp_size_in_bytes)
  report = {"planned_peak": round(planned / GIB, 3), "temporaries": round(memory.temp_size_in_bytes / GIB, 3)}
  stats = jax.devices()[0].memory_stats()  # None on CPU
  if stats and "peak_bytes_in_use" in stats:
    report["device_peak_in_use"] = round(stats["peak_bytes_in_use"] / GIB, 3)
  return report


def host_seconds_per_batch(shape: Shape, vocab_size: int, batches: int = 50) -> float:
  """The host's cost of assembling one padded batch from tokenized features (the train pipeline)."""
  rng = np.random.default_rng(0)
  features = [Feature(list(rng.integers(2, vocab_size, shape.input_len)), list(rng.integers(2, vocab_size, shape.target_len)),
                      label=0, group=i) for i in range(shape.batch * (batches + 1))]
  stream = pipeline.train_iterator(features, shape.batch, 0, shape.input_len, shape.target_len, (shape.input_len,))
  next(stream)  # start-up
  start = time.perf_counter()
  for _ in range(batches):
    next(stream)
  return (time.perf_counter() - start) / batches


def is_out_of_memory(error: Exception) -> bool:
  return "RESOURCE_EXHAUSTED" in str(error) or "Out of memory" in str(error)


def largest_batch(config: T5Config, shape: Shape, frozen, limit: int = 4096) -> dict:
  """Doubles the batch until a step fails for memory, then bisects; every size is really run."""
  if jax.devices()[0].platform == "cpu":
    raise SystemExit("--largest_batch needs an accelerator: on a CPU the host's memory runs out, not the device's")
  def trains(batch: int) -> bool:
    try:
      step = PromptStep(config, Shape(batch, shape.prompt_len, shape.input_len, shape.target_len), frozen)
      step()
      return True
    except Exception as error:  # noqa: BLE001 - only running out of memory ends the search
      if not is_out_of_memory(error):
        raise
      return False

  fits, fails = 0, 1
  while fails <= limit and trains(fails):
    fits, fails = fails, fails * 2
  if fails > limit:
    return {"largest_batch": fits, "first_failing_batch": f"none up to {limit}"}
  while fails - fits > 1:
    middle = (fits + fails) // 2
    fits, fails = (middle, fails) if trains(middle) else (fits, middle)
  return {"largest_batch": fits, "first_failing_batch": fails}


def report(config: T5Config, shape: Shape, args) -> dict:
  frozen = random_frozen(config)
  result = {
      "date": datetime.date.today().isoformat(),
      "machine": machine(),
      "jax": jax.__version__,
      "model": f"T5 v1.1 {args.size}, {args.dtype} compute, {args.param_dtype} frozen weights",
      "scan_layers": config.scan_layers,
      "remat_policy": config.remat_policy,
  }
  if args.largest_batch:
    return {**result, "tokens": f"{shape.prompt_len}+{shape.input_len}/{shape.target_len}",
            **largest_batch(config, shape, frozen)}

  step = PromptStep(config, shape, frozen)
  start = time.perf_counter()
  step.compiled  # lowered and compiled once, for the memory analysis and the profile
  compile_s = time.perf_counter() - start
  seconds = time_call(step, repeats=args.repeats)  # median after a warm-up (jit's own compile)
  flops = t5_prompt_tuning_flops(config, shape.batch, shape.prompt_len, shape.input_len, shape.target_len)
  peak, peak_source = (args.peak_tflops, "given") if args.peak_tflops else device_peak_tflops(args.dtype)
  achieved = flops.prompt_step / seconds / 1e12
  result.update({
      "shape": shape.describe(),
      "compile_s": round(compile_s, 1),
      "s_per_step": round(seconds, 4),
      "examples_per_s": round(shape.batch / seconds, 2),
      "tokens_per_s": round(shape.tokens / seconds),
      "analytic_gflops_per_step": round(flops.prompt_step / 1e9, 2),
      "analytic_gflops_all_weights_step": round(flops.all_weights_step / 1e9, 2),
      "compiled_gflops_per_step": round(compiled_gflops(step), 2),
      "achieved_tflops_per_s": round(achieved, 3),
      "peak_tflops_per_s": round(peak, 3),
      "peak_source": peak_source,
      "mfu": round(achieved / peak, 3),
      "memory_gib": memory_gib(step),
  })
  if args.profile:
    result["busy_ms_per_step"] = step_profile.profile(step, step.compiled.as_text())
    result["host_ms_per_batch"] = round(host_seconds_per_batch(shape, config.vocab_size) * 1e3, 2)
  return result


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  add_shape_arguments(parser, batch=32, prompt_len=100, input_len=512, target_len=8)
  parser.add_argument("--dtype", default="bfloat16", help="compute dtype")
  parser.add_argument("--param_dtype", default=None, help="frozen weights' dtype (default: --dtype)")
  parser.add_argument("--scan_layers", type=int, default=1, help="1: nn.scan over layers; 0: unrolled")
  parser.add_argument("--remat_policy", default="none")
  parser.add_argument("--repeats", type=int, default=10)
  parser.add_argument("--peak_tflops", type=float, default=0.0, help="device peak TFLOP/s (default: known or measured)")
  parser.add_argument("--profile", action="store_true")
  parser.add_argument("--largest_batch", action="store_true")
  args = parser.parse_args()
  args.param_dtype = args.param_dtype or args.dtype

  config = T5Config.preset(args.size, dtype=args.dtype, param_dtype=args.param_dtype,
                           scan_layers=bool(args.scan_layers), remat_policy=args.remat_policy)
  shape = shape_from(args)
  print(json.dumps(report(config, shape, args), indent=2))


if __name__ == "__main__":
  main()
