"""The device mesh and the logical-axis rules that map param and activation axes onto it.

Mesh axes: `data` (pure data parallelism), `fsdp` (data parallelism that also shards the frozen
weights), `tensor` (heads / mlp / vocab split). Logical names are attached to every param and hot
activation by the models; one rules table maps them to mesh axes. Prompts are replicated: their
logical axes (`prompt`, `prompt_embed`) map to no mesh axis.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from flax import traverse_util
from jax.sharding import AxisType, Mesh, NamedSharding, SingleDeviceSharding
from jax.sharding import PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
Rules = Sequence[tuple[str, str | tuple[str, ...] | None]]

# Order matters: a mesh axis is used at most once per array, by the first rule that claims it, so
# `batch` takes (data, fsdp) before `embed` can, and activations [batch, length, embed] shard on
# batch while the weights [vocab, embed] / [embed, mlp] shard embed over fsdp.
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),  # grouped-query attention's key/value heads (num_kv_heads % tensor == 0)
    ("mlp", "tensor"),
    ("embed", "fsdp"),
    ("kv", None),
    ("layers", None),
    ("length", None),
    ("relpos_buckets", None),
    ("positions", None),  # BERT's position and token-type tables: small, replicated
    ("token_types", None),
    ("prompt", None),
    ("prompt_embed", None),
    ("prompt_mlp", None),  # reparameterisation MLPs of prompts and prefixes
    ("prefix_layers", None),  # a per-layer prefix bank: replicated; map to "fsdp" to shard a large one
    ("prefix_heads", None),
    ("prompt_rows", None),  # a prompt bank's rows (serving): replicated; map to a mesh axis to shard them
)


def make_mesh(axis_sizes: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A mesh over `devices` (default: all) with axes data/fsdp/tensor; one size may be -1."""
  unknown = set(axis_sizes) - set(MESH_AXES)
  if unknown:
    raise ValueError(f"mesh axes {sorted(unknown)} are unknown; mesh axes are {MESH_AXES}")
  all_devices = devices is None
  devices = list(jax.devices() if all_devices else devices)
  sizes = [int(axis_sizes.get(name, 1)) for name in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f"mesh {dict(axis_sizes)}: at most one axis may be -1")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(f"mesh {dict(axis_sizes)}: {len(devices)} devices do not divide by {known}")
    sizes[sizes.index(-1)] = len(devices) // known
  if math.prod(sizes) != len(devices):
    raise ValueError(
        f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, "
        f"but {len(devices)} are available"
    )
  axis_types = (AxisType.Auto,) * len(MESH_AXES)  # GSPMD-style: the compiler propagates shardings
  if all_devices:  # jax.make_mesh orders devices by the physical topology (ICI rings on TPU)
    return jax.make_mesh(tuple(sizes), MESH_AXES, axis_types=axis_types)
  return Mesh(np.asarray(devices).reshape(sizes), MESH_AXES, axis_types=axis_types)


@contextlib.contextmanager
def activate(mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Iterator[None]:
  """Makes the mesh and rules current, so the models' logical constraints take effect."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(tuple(rules)):
    yield


def logical_to_shardings(boxed_tree: Any, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Any:
  """NamedShardings for a tree of LogicallyPartitioned (boxed) values, e.g. from eval_shape(init)."""
  specs = nn.get_partition_spec(boxed_tree)
  return nn.logical_to_mesh_sharding(specs, mesh, tuple(rules))


def abstract_with_shardings(boxed_tree: Any, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Any:
  """The unboxed ShapeDtypeStructs of an abstract init, each carrying its target sharding."""
  shardings = logical_to_shardings(boxed_tree, mesh, rules)
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      nn.meta.unbox(boxed_tree),
      shardings,
  )


def batch_shards(mesh: Mesh) -> int:
  """How many ways a batch is split: the mesh's data x fsdp axes (DEFAULT_RULES' "batch")."""
  return mesh.shape["data"] * mesh.shape["fsdp"]


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def param_targets(boxed_tree: Any, mesh: Mesh | None, rules: Rules = DEFAULT_RULES) -> dict[str, jax.ShapeDtypeStruct]:
  """'/'-joined param path -> ShapeDtypeStruct carrying the sharding the rules give it on `mesh`
  (on the first device when `mesh` is None): what a loader fills."""
  if mesh is None:
    device = SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), nn.meta.unbox(boxed_tree))
  else:
    abstract = abstract_with_shardings(boxed_tree, mesh, rules)
  return traverse_util.flatten_dict(abstract, sep="/")


def box_values(tree: Any) -> Any:
  """The values of a tree's boxed (logically partitioned) leaves. (`nn.meta.unbox` would also
  constrain each one's sharding under an active mesh, which shapes and host arrays cannot take.)"""
  is_box = lambda x: isinstance(x, nn.Partitioned)
  return jax.tree.map(lambda x: x.value if is_box(x) else x, tree, is_leaf=is_box)
