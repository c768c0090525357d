"""SmolLM2-135M's Q4_1 GGUF file with its blocks kept in memory (config.model.quantization="gguf"):
the same kernels and logits as the file dequantised to float, at a third of the memory; and
quantised again from float as int8 and nf4."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from jaxprompt.models.llama import Llama
from jaxprompt.models.quantized import QuantizedKernel
from jaxprompt.weights.llama_loader import load_llama
from jaxprompt.weights.quantize import Quantization
from tests.assets import smollm2_gguf

is_kernel = lambda x: isinstance(x, QuantizedKernel)


def _load(scheme: str):
  return load_llama(str(smollm2_gguf()), param_dtype="float32", dtype="float32", quantization=Quantization(scheme))


@pytest.fixture(scope="module")
def float_run():
  return _load("none")


@pytest.fixture(scope="module")
def ids():
  rng = np.random.default_rng(0)
  return rng.integers(10, 49152, (2, 24)).astype(np.int32)


def _logits(config, params, ids):
  return jax.jit(functools.partial(Llama(config).apply, method=Llama.forward_logits))(params, ids, ids > 0)


def _flat(params):
  return traverse_util.flatten_dict(params["params"], sep="/")


def test_kept_blocks_equal_the_dequantised_file(float_run, ids):
  config, float_params = float_run
  _, params = _load("gguf")
  flat, float_flat = _flat(params), _flat(float_params)
  kept = {path: x for path, x in flat.items() if is_kernel(x)}
  assert len(kept) == 7 and all(x.scheme == "uint4" and x.block == 32 for x in kept.values())  # Q4_1, every layer kernel
  for path, kernel in kept.items():
    np.testing.assert_array_equal(kernel.dequantize(jnp.float32), float_flat[path], err_msg=path)
  np.testing.assert_allclose(_logits(config, params, ids), _logits(config, float_params, ids), atol=2e-5, rtol=1e-5)
  # 4-bit codes + float16 scale and offset per 32 weights: 5 bits a weight against float32's 32.
  kept_bytes = sum(leaf.nbytes for x in kept.values() for leaf in jax.tree.leaves(x))
  float_bytes = sum(float_flat[path].nbytes for path in kept)
  assert kept_bytes == float_bytes * 5 // 32


def test_requantised_from_float_int8_is_close_and_nf4_beats_int4(float_run, ids):
  """The file's dequantised weights quantised again. int8 stays close; the 4-bit schemes round a
  4-bit model onto another 4-bit grid, which a 135M model feels (hence "gguf" keeps the blocks),
  and NF4 loses less than int4 (measured on 2×24 random ids, root-mean-square logit gap over the
  logits' standard deviation, 64-weight blocks: int8 0.069, nf4 0.57, int4 0.69)."""
  config, float_params = float_run
  want = np.asarray(_logits(config, float_params, ids))

  def gap(scheme):
    _, params = _load(scheme)
    return float(np.sqrt(np.mean((np.asarray(_logits(config, params, ids)) - want) ** 2)) / np.std(want))

  gaps = {scheme: gap(scheme) for scheme in ("int8", "nf4", "int4")}
  assert 1e-3 < gaps["int8"] < 0.1, gaps
  assert gaps["int8"] < gaps["nf4"] < gaps["int4"], gaps
