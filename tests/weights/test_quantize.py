"""Quantising kernels: each scheme's error bound, the packing of 4-bit codes, GGUF's blocks read as
they are stored, and the config's checks."""

from __future__ import annotations

import types

import gguf
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxprompt.models.quantized import NF4_LEVELS
from jaxprompt.weights import quantize
from jaxprompt.weights.gguf import KEPT_BLOCKS, _read_blocks, undo_rotary_permutation


def _weights(shape, seed=0) -> np.ndarray:
  """Normal weights with a few large outliers, as trained kernels have."""
  rng = np.random.default_rng(seed)
  w = rng.normal(0, 0.05, shape).astype(np.float32)
  w.flat[rng.choice(w.size, 20, replace=False)] = rng.normal(0, 1.0, 20)
  return w


# The largest error each scheme allows, as a fraction of its block's largest |w|: int8 and int4 round
# to the nearest of 254 / 14 steps; nf4 to the nearest NF4 level, half its widest gap. The 1.002
# leaves room for the float16 rounding of 4-bit scales.
BOUNDS = {"int8": 0.5 / 127, "int4": 0.5 / 7 * 1.002, "nf4": np.max(np.diff(NF4_LEVELS)) / 2 * 1.002}


@pytest.mark.parametrize("scheme", ["int8", "int4", "nf4"])
@pytest.mark.parametrize("axis", [-2, -3])
def test_round_trip_error_is_bounded(scheme, axis):
  w = _weights((128, 4, 64))
  block = quantize.block_size(scheme, w.shape[axis], 32, "w")
  q = quantize.quantize(w, scheme, block, axis)
  back = np.asarray(q.dequantize(jnp.float32))
  ax = axis % w.ndim
  per_block = lambda x: x.reshape(w.shape[:ax] + (-1, block) + w.shape[ax + 1:])
  absmax = np.max(np.abs(per_block(w)), axis=ax + 1, keepdims=True)
  error = np.abs(per_block(back) - per_block(w))
  assert np.all(error <= BOUNDS[scheme] * absmax + 1e-7)
  assert error.max() > BOUNDS[scheme] * absmax.min() / 4  # it does quantise
  assert q.shape == w.shape and q.values.dtype == (np.int8 if scheme == "int8" else np.uint8)
  assert q.values.nbytes == w.size // (1 if scheme == "int8" else 2)


@pytest.mark.parametrize("qtype", list(KEPT_BLOCKS))
@pytest.mark.parametrize("rotary_heads", [None, 4])
def test_gguf_blocks_equal_the_dequantised_tensor(qtype, rotary_heads):
  """A Q8_0 / Q4_0 / Q4_1 tensor's blocks, kept, dequantise to exactly what gguf's float read gives
  (so 4-bit codes are unpacked in GGUF's order: byte j of a block, weights j and j + 16)."""
  shape = (64, 96)  # [out, in]: 3 blocks per row
  raw = gguf.quants.quantize(_weights(shape), qtype)
  tensor = types.SimpleNamespace(data=raw, tensor_type=qtype)
  kept = _read_blocks(tensor, shape, rotary_heads)
  want = gguf.quants.dequantize(raw, qtype).reshape(shape).astype(np.float32)
  if rotary_heads:
    want = undo_rotary_permutation(want, rotary_heads)
  np.testing.assert_array_equal(np.asarray(kept.dequantize(jnp.float32)), want)
  assert (kept.scheme, kept.block) == KEPT_BLOCKS[qtype][:2]


def test_block_axis_is_the_last_contracting_axis():
  assert quantize.block_axis("mlp/wi/kernel", ("embed", "mlp")) == -2
  assert quantize.block_axis("layers/attention/out/kernel", ("layers", "heads", "kv", "embed")) == -2
  assert quantize.block_axis("layers/attention/query/kernel", ("layers", "embed", "heads", "kv")) == -3
  assert quantize.block_axis("lm_head/kernel", ("embed", "vocab")) is None
  assert quantize.block_axis("token_embedder/embedding", ("vocab", "embed")) is None


def test_narrow_axes_take_the_largest_even_divisor():
  assert quantize.block_size("int4", 576, 64, "k") == 64
  assert quantize.block_size("nf4", 8, 64, "k") == 8
  assert quantize.block_size("int8", 8, 64, "k") == 8
  with pytest.raises(ValueError, match="k: its blocked axis has 9 weights"):
    quantize.block_size("int4", 9, 64, "k")


def _model(**keys) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(dict(quantization="int8", quantization_block=64, trainable="none",
                                             checkpoint="t5-small"), **keys))


@pytest.mark.parametrize("keys, message", [
    (dict(quantization="int3"), r"config.model.quantization='int3' is not one of"),
    (dict(quantization_block=33), r"config.model.quantization_block=33: must be an even"),
    (dict(trainable="all"), r"with config.model.trainable='all': weights that train cannot be quantised"),
    (dict(quantization="gguf"), r"config.model.checkpoint='t5-small' is not a .gguf file"),
])
def test_bad_settings_fail_naming_the_key(keys, message):
  with pytest.raises(ValueError, match=message):
    quantize.Quantization.from_config(_model(**keys))
