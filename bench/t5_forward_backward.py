"""Throughput and compiled FLOPs of a frozen T5: forward, and forward + backward to the input embeddings.

    python bench/t5_forward_backward.py --size=small --batch=8 --input_len=128 --prompt_len=20 --target_len=8

The backward pass differentiates w.r.t. a soft prompt only (the input embeddings a prompt method
trains), never the weights; for reference it also compiles the same loss with gradients for every
weight and reports the FLOP ratio. Weights are random (speed does not depend on their values).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.t5_prompt_step import add_shape_arguments  # noqa: E402
from jaxprompt.models.prompt import Prompt  # noqa: E402
from jaxprompt.models.t5 import T5, shift_right  # noqa: E402
from jaxprompt.models.t5_config import T5Config  # noqa: E402


def xent(logits_BxTxV: jax.Array, labels_BxT: jax.Array) -> jax.Array:
  logp = jax.nn.log_softmax(logits_BxTxV)
  return -jnp.mean(jnp.take_along_axis(logp, labels_BxT[..., None], axis=-1))


def make_loss(model: T5):
  def loss(prompt_PxD, params, ids, mask, labels):
    decoder_inputs = shift_right(labels, model.config.decoder_start_token_id)
    logits = model.apply(params, ids, mask, decoder_inputs, prompt=Prompt(embeddings_BxPxD=prompt_PxD[None]))
    return xent(logits, labels)

  return loss


def time_call(fn, *args, repeats: int) -> float:
  """Median seconds per call after one warm-up call."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def compiled_flops(fn, *args) -> float:
  """XLA's FLOP count of a jitted function (a scanned loop's body counts once: pass unrolled layers)."""
  return float(fn.lower(*args).cost_analysis()["flops"])


def machine() -> str:
  """CPU model, family / model numbers, AVX-512 and core count, or the accelerator kind. The numbers
  matter: these VMs' CPUs all say "AMD EPYC" or "Intel Xeon", and the kinds differ (PyTorch's MKL
  runs far slower on an AMD without AVX-512 than on Zen 4 or an AVX-512 Xeon)."""
  device = jax.devices()[0]
  if device.platform != "cpu":
    return f"{jax.device_count()} x {device.device_kind}"
  fields = {}
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
  except OSError:
    pass
  name = fields.get("model name") or platform.processor() or platform.machine()
  kind = f"family {fields['cpu family']} model {fields['model']}" if "cpu family" in fields else ""
  avx512 = "AVX-512" if "avx512f" in fields.get("flags", "").split() else "no AVX-512" if fields.get("flags") else ""
  details = ", ".join(part for part in (kind, avx512) if part)
  return f"{name} ({details}), {os.cpu_count()} cores (CPU)" if details else f"{name}, {os.cpu_count()} cores (CPU)"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  add_shape_arguments(parser, batch=8, prompt_len=20, input_len=128, target_len=8)
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--repeats", type=int, default=10)
  args = parser.parse_args()

  config = T5Config.preset(args.size, dtype=args.dtype, param_dtype=args.dtype)
  model = T5(config)
  rng = np.random.default_rng(0)
  ids = jnp.asarray(rng.integers(2, 32000, (args.batch, args.input_len)), jnp.int32)
  mask = jnp.ones_like(ids, bool)
  labels = jnp.asarray(rng.integers(2, 32000, (args.batch, args.target_len)), jnp.int32)
  params = nn.meta.unbox(jax.jit(model.init)(jax.random.key(0), ids[:1, :8], mask[:1, :8], labels[:1]))
  prompt = jnp.asarray(rng.normal(size=(args.prompt_len, config.d_model)), jnp.float32)

  loss = make_loss(model)
  forward = jax.jit(loss)
  prompt_grad = jax.jit(jax.value_and_grad(loss))
  batch = (prompt, params, ids, mask, labels)

  forward_s = time_call(forward, *batch, repeats=args.repeats)
  backward_s = time_call(prompt_grad, *batch, repeats=args.repeats)
  # Counted on the same model with its layers unrolled: XLA counts a scanned loop's body once.
  unrolled = T5(config.replace(scan_layers=False))
  unrolled_loss = make_loss(unrolled)
  unrolled_params = nn.meta.unbox(jax.eval_shape(unrolled.init, jax.random.key(0), ids[:1, :8], mask[:1, :8], labels[:1]))
  counted = (prompt, unrolled_params, ids, mask, labels)
  flops = {name: compiled_flops(jax.jit(fn), *counted) for name, fn in [
      ("forward", unrolled_loss), ("prompt_grad", jax.value_and_grad(unrolled_loss)),
      ("all_weights_grad", jax.value_and_grad(unrolled_loss, argnums=(0, 1)))]}
  tokens = args.batch * (args.prompt_len + args.input_len + args.target_len)
  result = {
      "date": datetime.date.today().isoformat(),
      "machine": machine(),
      "jax": jax.__version__,
      "model": f"T5 v1.1 {args.size}, {args.dtype}",
      "shape": f"batch {args.batch}, {args.prompt_len} prompt + {args.input_len} input, {args.target_len} target",
      "forward_tokens_per_s": round(tokens / forward_s),
      "forward_backward_tokens_per_s": round(tokens / backward_s),
      "forward_ms": round(forward_s * 1e3, 1),
      "forward_backward_ms": round(backward_s * 1e3, 1),
      "compiled_gflops": {k: round(v / 1e9, 2) for k, v in flops.items()},
      "prompt_grad_over_all_weights_grad_flops": round(flops["prompt_grad"] / flops["all_weights_grad"], 3),
  }
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  main()
