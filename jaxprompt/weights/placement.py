"""Streaming checkpoint tensors into sharded jax.Arrays, one param at a time.

Each param of the target tree is described by a `ParamSource`: the checkpoint tensor(s) it comes from
(one per layer when the layers are stacked by nn.scan) and how to turn a checkpoint tensor into the
param's layout. Before any data is read, every source is checked against the target shape, so a bad
checkpoint fails with the tensor's name and both shapes and returns nothing partial. Then each param
is built from the shards this host owns: per distinct shard, a host buffer is filled layer by layer
from memory-mapped tensors, cast, and put on its devices. Peak host memory is one param's local
shards plus one checkpoint tensor, never the model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from jaxprompt.models.quantized import QuantizedKernel
from jaxprompt.weights import quantize
from jaxprompt.weights.tensor_sources import LazyTensor, TensorSource

# How a checkpoint matrix maps onto a param: "plain" (same shape), "in_heads" ([D, H*K] ->
# [D, H, K]) or "heads_out" ([H*K, D] -> [H, K, D]); `transposed` when the file stores the matrix
# transposed (PyTorch nn.Linear keeps [out, in]; T5X keeps relative position tables [heads, buckets]).
LAYOUTS = ("plain", "in_heads", "heads_out")


@dataclasses.dataclass(frozen=True)
class ParamSource:
  """Where one param comes from: a tensor name, or one name per stacked layer."""

  names: tuple[str, ...]  # one name; or one per layer when `stacked`
  layout: str = "plain"
  transposed: bool = False
  stacked: bool = False  # the param has a leading layer axis, one checkpoint tensor per layer

  def file_shape(self, param_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape each checkpoint tensor must have for a param of `param_shape`."""
    shape = param_shape[1:] if self.stacked else param_shape
    if self.layout == "in_heads":
      shape = (shape[0], shape[1] * shape[2])
    elif self.layout == "heads_out":
      shape = (shape[0] * shape[1], shape[2])
    return shape[::-1] if self.transposed else shape

  def convert(self, array: np.ndarray, param_shape: tuple[int, ...]) -> np.ndarray:
    """One checkpoint tensor in the param's layout (one layer's slice when stacked)."""
    if self.transposed:
      array = array.T
    return array.reshape(param_shape[1:] if self.stacked else param_shape)


class CheckpointMismatchError(ValueError):
  """A checkpoint that does not fit the model: a missing tensor or a shape that disagrees."""


def check_sources(
    targets: Mapping[str, jax.ShapeDtypeStruct],
    sources: Mapping[str, ParamSource],
    checkpoint: TensorSource,
    config_summary: str,
) -> None:
  """Fails with every missing tensor and shape mismatch before anything is loaded."""
  problems = []
  for path, target in targets.items():
    if path not in sources:
      problems.append(f"param {path} {tuple(target.shape)} has no source in the checkpoint mapping")
      continue
    src = sources[path]
    if src.stacked and len(src.names) != target.shape[0]:
      problems.append(f"param {path}: {len(src.names)} layer tensors for {target.shape[0]} layers")
    want = src.file_shape(tuple(target.shape))
    for name in src.names:
      if name not in checkpoint:
        problems.append(f"missing tensor {name!r} (for param {path})")
      elif tuple(checkpoint[name].shape) != want:
        problems.append(
            f"tensor {name!r} has shape {tuple(checkpoint[name].shape)} but param {path} of shape "
            f"{tuple(target.shape)} needs {want}"
        )
  if problems:
    listed = "\n  ".join(problems[:20]) + (f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else "")
    raise CheckpointMismatchError(
        f"checkpoint {checkpoint.description} does not fit the model ({config_summary}):\n  {listed}"
    )


def unused_tensors(sources: Mapping[str, ParamSource], checkpoint: TensorSource) -> list[str]:
  """Checkpoint tensors no param reads."""
  used = {name for src in sources.values() for name in src.names}
  return sorted(set(checkpoint) - used)


def _index_key(index: tuple[slice, ...], shape: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
  return tuple(s.indices(n)[:2] for s, n in zip(index, shape))


def _layer_arrays(target: Any, source: ParamSource, tensor: LazyTensor) -> list[np.ndarray]:
  """One checkpoint tensor as the arrays of `target`'s leaves, in the param's layout: the float
  kernel; or, for a quantised kernel, its codes, scales (and offsets), from the file's own blocks
  where it keeps them, else quantised here."""
  if not isinstance(target, QuantizedKernel):
    return [source.convert(tensor.read(), tuple(target.shape))]
  if tensor.block_format == (target.scheme, target.block):
    parts = jax.tree.leaves(tensor.read_blocks())
    return [source.convert(part, tuple(t.shape)) for part, t in zip(parts, jax.tree.leaves(target))]
  kernel = source.convert(tensor.read(), tuple(target.shape))
  return jax.tree.leaves(quantize.quantize(kernel, target.scheme, target.block, target.axis))


def build_param(target: Any, source: ParamSource, checkpoint: TensorSource) -> Any:
  """One param (a jax.Array, or a QuantizedKernel of them) in its target shardings, from this
  host's shards only."""
  leaves, treedef = jax.tree.flatten(target)
  devices_by_key, buffers = [], []
  for leaf in leaves:
    shape, dtype = tuple(leaf.shape), np.dtype(leaf.dtype)
    by_key: dict[tuple, list[Any]] = {}
    for device, index in leaf.sharding.addressable_devices_indices_map(shape).items():
      by_key.setdefault(_index_key(index, shape), []).append(device)
    devices_by_key.append(by_key)
    buffers.append({key: np.empty([b - a for a, b in key], dtype) for key in by_key})

  def fill(tensor: LazyTensor, layer: int | None):
    for full, leaf_buffers in zip(_layer_arrays(target, source, tensor), buffers):
      for key, buf in leaf_buffers.items():
        if layer is None:
          buf[...] = full[tuple(slice(a, b) for a, b in key)]
        elif key[0][0] <= layer < key[0][1]:
          buf[layer - key[0][0]] = full[tuple(slice(a, b) for a, b in key[1:])]

  if source.stacked:
    for layer, name in enumerate(source.names):
      if any(key[0][0] <= layer < key[0][1] for key in buffers[0]):
        fill(checkpoint[name], layer)
  else:
    fill(checkpoint[source.names[0]], None)

  arrays = []
  for leaf, by_key, leaf_buffers in zip(leaves, devices_by_key, buffers):
    shards = [jax.device_put(leaf_buffers[key], d) for key, devices in by_key.items() for d in devices]
    arrays.append(jax.make_array_from_single_device_arrays(tuple(leaf.shape), leaf.sharding, shards))
  return jax.tree.unflatten(treedef, arrays)


def load_params(
    targets: Mapping[str, jax.ShapeDtypeStruct],
    sources: Mapping[str, ParamSource],
    checkpoint: TensorSource,
    config_summary: str,
    quantization: quantize.Quantization = quantize.NONE,
    boxed_params: Any = None,
) -> dict[str, Any]:
  """Checks every source, then builds every param; returns '/'-joined path -> array (a
  QuantizedKernel of arrays for the kernels `quantization` quantises; `boxed_params`, the abstract
  init, names their axes)."""
  check_sources(targets, sources, checkpoint, config_summary)
  if quantization.enabled:
    targets = quantize.quantized_targets(targets, boxed_params, quantization, file_block_formats(sources, checkpoint))
  params = {}
  for path, target in targets.items():
    params[path] = build_param(target, sources[path], checkpoint)
  return params


def file_block_formats(sources: Mapping[str, ParamSource], checkpoint: TensorSource) -> dict[str, tuple[str, int]]:
  """param path -> the (scheme, block) its tensors are stored in, for params whose every tensor is
  in one format the quantised matmul reads as it is (GGUF's Q8_0, Q4_0, Q4_1)."""
  formats = {}
  for path, src in sources.items():
    kinds = {checkpoint[name].block_format for name in src.names if name in checkpoint}
    if len(kinds) == 1 and None not in kinds:
      formats[path] = kinds.pop()
  return formats
