"""Quantising a frozen backbone's kernels while they stream in (config.model.quantization).

Which kernels: every projection kernel except the vocabulary projection (its logical axes name
"vocab"); embeddings, norms, biases and position tables stay float, as prompts are made from and
compared with the embeddings. The blocks run along the kernel's last contracting axis: `embed` or
`mlp` for most kernels, `kv` for an attention output projection ([heads, kv, embed]).

Each kernel is quantised on the host one checkpoint tensor (one layer) at a time, in numpy, and its
codes and scales are placed in the shardings the rules give the float kernel, so host memory peaks
at one kernel's local shards plus one tensor. "gguf" keeps a GGUF file's own blocks where the
quantised matmul reads them directly (Q8_0, Q4_0, Q4_1) and dequantises other tensors to float.

Qwix (Google's successor to AQT) quantises an already-loaded float model through interception of
its dot_generals; it has neither GGUF's affine Q4_1 blocks nor a streaming load, and for weight-only
quantisation with float activations it dequantises and runs a float matmul too, as we do.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from flax import traverse_util
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxprompt.models.quantized import FOUR_BIT, NF4_LEVELS, QuantizedKernel

CONFIG_SCHEMES = ("none", "int8", "int4", "nf4", "gguf")
_INT8_MAX = 127.0
_INT4_MAX = 7.0  # symmetric levels -7..7 of the 16 codes (8 is zero): error at most scale / 2


@dataclasses.dataclass(frozen=True)
class Quantization:
  """config.model.quantization and quantization_block, checked."""

  scheme: str = "none"
  block: int = 64

  @classmethod
  def from_config(cls, model: ml_collections.ConfigDict) -> Quantization:
    scheme, block = model.get("quantization", "none"), model.get("quantization_block", 64)
    if scheme not in CONFIG_SCHEMES:
      raise ValueError(f"config.model.quantization={scheme!r} is not one of {CONFIG_SCHEMES}")
    if block < 2 or block % 2:
      raise ValueError(f"config.model.quantization_block={block}: must be an even number of weights (4-bit codes pack in pairs)")
    if scheme != "none" and model.get("trainable", "none") != "none":
      raise ValueError(
          f"config.model.quantization={scheme!r} with config.model.trainable={model.trainable!r}: weights that "
          "train cannot be quantised (they train as float32 copies); quantise a frozen backbone only"
      )
    if scheme == "gguf" and not str(model.checkpoint).endswith(".gguf"):
      raise ValueError(
          f"config.model.quantization='gguf' keeps a GGUF file's blocks, but config.model.checkpoint="
          f"{model.checkpoint!r} is not a .gguf file; use int8, int4 or nf4"
      )
    return cls(scheme, block)

  @property
  def enabled(self) -> bool:
    return self.scheme != "none"


NONE = Quantization()


def block_axis(path: str, logical_axes: tuple[str | None, ...]) -> int | None:
  """The (negative) axis a kernel's blocks run along; None for weights that stay float."""
  if not path.endswith("kernel") or "vocab" in logical_axes:
    return None
  first = 1 if logical_axes[0] == "layers" else 0  # a stacked (scanned) kernel's layer axis
  two_in = logical_axes[first] in ("heads", "kv_heads")  # [heads, kv, out]: contracts heads and kv
  return first + int(two_in) - len(logical_axes)


def block_size(scheme: str, dim: int, block: int, path: str) -> int:
  """int8 scales each output channel (one block spans the axis); 4-bit blocks are `block` weights,
  or the largest even divisor of both when the axis is narrower or not a multiple."""
  if scheme == "int8":
    return dim
  size = math.gcd(dim, block)
  if size % 2:
    raise ValueError(f"{path}: its blocked axis has {dim} weights, which no even block of config.model."
                     f"quantization_block={block} divides")
  return size


def quantize(w: np.ndarray, scheme: str, block: int, axis: int) -> QuantizedKernel:
  """numpy codes and scales of one kernel (or one layer's slice) in `scheme`."""
  w = np.asarray(w, np.float32)
  ax = axis % w.ndim
  blocks = w.reshape(w.shape[:ax] + (w.shape[ax] // block, block) + w.shape[ax + 1:])
  absmax = np.max(np.abs(blocks), axis=ax + 1, keepdims=True)
  limit = {"int8": _INT8_MAX, "int4": _INT4_MAX, "nf4": 1.0}[scheme]
  # 4-bit scales are float16, as GGUF's (0.25 bits a weight at 64 a block); codes are rounded
  # against the stored scale, so the bound below holds for what is kept.
  scale_dtype = np.float32 if scheme == "int8" else np.float16
  scale = (absmax / limit).astype(scale_dtype)
  safe = np.where(scale == 0, 1, scale).astype(np.float32)
  scaled = blocks / safe
  if scheme == "int8":
    codes = np.clip(np.rint(scaled), -_INT8_MAX, _INT8_MAX).astype(np.int8)
  elif scheme == "int4":
    codes = (np.clip(np.rint(scaled), -_INT4_MAX, _INT4_MAX) + 8).astype(np.uint8)
  else:  # nf4: the nearest level
    midpoints = (NF4_LEVELS[1:] + NF4_LEVELS[:-1]) / 2
    codes = np.searchsorted(midpoints, np.clip(scaled, -1, 1)).astype(np.uint8)
  if scheme in FOUR_BIT:
    codes = codes.take(np.arange(block // 2), ax + 1) | (codes.take(np.arange(block // 2, block), ax + 1) << 4)
  values = codes.reshape(w.shape[:ax] + (-1,) + w.shape[ax + 1:])
  return QuantizedKernel(values, np.squeeze(scale, ax + 1), None, scheme, block, axis - w.ndim if axis >= 0 else axis)


def _part_target(target: jax.ShapeDtypeStruct, shape: tuple[int, ...], dtype: Any) -> jax.ShapeDtypeStruct:
  """A part of a quantised kernel in the kernel's sharding, with any axis the part no longer
  divides evenly (a per-channel scale's single block) replicated."""
  sharding = target.sharding
  if isinstance(sharding, NamedSharding):
    spec = tuple(sharding.spec) + (None,) * (len(shape) - len(sharding.spec))
    sizes = dict(zip(sharding.mesh.axis_names, sharding.mesh.devices.shape))
    ways = lambda entry: math.prod(sizes[a] for a in ((entry,) if isinstance(entry, str) else entry or ()))
    spec = tuple(entry if n % ways(entry) == 0 else None for entry, n in zip(spec, shape))
    sharding = NamedSharding(sharding.mesh, P(*spec))
  return jax.ShapeDtypeStruct(shape, np.dtype(dtype), sharding=sharding)


def kernel_target(target: jax.ShapeDtypeStruct, scheme: str, block: int, axis: int) -> QuantizedKernel:
  """The ShapeDtypeStructs of a kernel's codes, scales (and offsets) in `scheme`."""
  shape = tuple(target.shape)
  ax = axis % len(shape)
  packed = shape[:ax] + (shape[ax] // 2,) + shape[ax + 1:] if scheme in FOUR_BIT else shape
  blocked = shape[:ax] + (shape[ax] // block,) + shape[ax + 1:]
  scale_dtype = np.float32 if scheme == "int8" else np.float16
  values = _part_target(target, packed, np.int8 if scheme == "int8" else np.uint8)
  offset = _part_target(target, blocked, np.float16) if scheme == "uint4" else None
  return QuantizedKernel(values, _part_target(target, blocked, scale_dtype), offset, scheme, block, axis)


def logical_axes(boxed_params: Any) -> dict[str, tuple[str | None, ...]]:
  """'/'-joined param path -> its logical axis names."""
  specs = nn.get_partition_spec(boxed_params)
  return {path: tuple(spec) for path, spec in traverse_util.flatten_dict(specs, sep="/").items()}


def quantized_targets(targets: dict[str, jax.ShapeDtypeStruct], boxed_params: Any, quantization: Quantization,
                      file_schemes: dict[str, tuple[str, int]] | None = None) -> dict[str, Any]:
  """`targets` with each quantised kernel's float target replaced by its QuantizedKernel of targets.
  `file_schemes` (for "gguf"): path -> (scheme, block) of the file's blocks; paths it lacks stay float."""
  if not quantization.enabled:
    return targets
  axes = logical_axes(boxed_params)
  out = dict(targets)
  for path, target in targets.items():
    axis = block_axis(path, axes[path])
    if axis is None:
      continue
    if quantization.scheme == "gguf":
      if path not in (file_schemes or {}):
        continue
      scheme, block = file_schemes[path]
    else:
      scheme = quantization.scheme
      block = block_size(scheme, target.shape[axis], quantization.block, path)
    out[path] = kernel_target(target, scheme, block, axis)
  return out


def place(parts: QuantizedKernel, target: QuantizedKernel) -> QuantizedKernel:
  """Host codes and scales on the devices of their targets' shardings."""
  return jax.tree.map(lambda x, t: jax.device_put(np.asarray(x, t.dtype), t.sharding), parts, target)


def quantize_params(params: dict[str, Any], targets: dict[str, Any]) -> dict[str, Any]:
  """Already-loaded float params (a random backbone) quantised where `targets` says, kernel by kernel."""
  out = dict(params)
  for path, target in targets.items():
    if isinstance(target, QuantizedKernel):
      host = np.asarray(jax.device_get(params[path]), np.float32)
      out[path] = place(quantize(host, target.scheme, target.block, target.axis), target)
  return out
