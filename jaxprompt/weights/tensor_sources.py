"""Lazy, tensor-at-a-time readers of checkpoint files: safetensors, Flax msgpack, PyTorch .bin.

A `TensorSource` maps tensor names to `LazyTensor`s whose shape and dtype are known without reading
data; `read()` returns a (usually memory-mapped) numpy array. Loaders read one tensor at a time and
place it straight into its sharding, so a checkpoint is never materialised whole on one host.
"""

from __future__ import annotations

import dataclasses
import json
import mmap
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import ml_dtypes
import msgpack
import numpy as np

SAFETENSORS_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "F8_E4M3": ml_dtypes.float8_e4m3fn,
    "F8_E5M2": ml_dtypes.float8_e5m2,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


@dataclasses.dataclass(frozen=True)
class LazyTensor:
  """A named tensor in a checkpoint file; `read()` loads (or memory-maps) its data."""

  name: str
  shape: tuple[int, ...]
  dtype: np.dtype
  file: str
  read: Callable[[], np.ndarray] = dataclasses.field(repr=False, compare=False)
  # A quantised file's own blocks (GGUF): their (scheme, block) and a reader of them as a
  # QuantizedKernel in the file's layout; None for plain tensors.
  block_format: tuple[str, int] | None = None
  read_blocks: Callable[[], Any] | None = dataclasses.field(default=None, repr=False, compare=False)


class TensorSource(Mapping[str, LazyTensor]):
  """Read-only name -> LazyTensor mapping over one or more checkpoint files."""

  def __init__(self, tensors: dict[str, LazyTensor], description: str):
    self._tensors = tensors
    self.description = description

  def __getitem__(self, name: str) -> LazyTensor:
    return self._tensors[name]

  def __iter__(self) -> Iterator[str]:
    return iter(self._tensors)

  def __len__(self) -> int:
    return len(self._tensors)

  def __repr__(self) -> str:
    return f"TensorSource({self.description}, {len(self)} tensors)"


def _memmap(path: str) -> memoryview:
  with open(path, "rb") as f:
    return memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))


def _shard_files(index_path: Path) -> list[Path]:
  """The distinct shard files named by a Hugging Face `*.index.json`."""
  weight_map = json.loads(index_path.read_text())["weight_map"]
  return [index_path.parent / name for name in dict.fromkeys(weight_map.values())]


# ---------------------------------------------------------------------------------------------
# safetensors: an 8-byte header length, a JSON header, then raw little-endian data.


def _safetensors_tensors(path: Path) -> dict[str, LazyTensor]:
  with open(path, "rb") as f:
    header_len = int.from_bytes(f.read(8), "little")
    header = json.loads(f.read(header_len))
  header.pop("__metadata__", None)
  buffer = _memmap(str(path)) if header else None
  data_start = 8 + header_len
  tensors = {}
  for name, info in header.items():
    if info["dtype"] not in SAFETENSORS_DTYPES:
      raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}")
    dtype = np.dtype(SAFETENSORS_DTYPES[info["dtype"]])
    shape = tuple(info["shape"])
    begin, end = info["data_offsets"]

    def read(begin=begin, end=end, dtype=dtype, shape=shape):
      return np.frombuffer(buffer[data_start + begin : data_start + end], dtype).reshape(shape)

    tensors[name] = LazyTensor(name, shape, dtype, str(path), read)
  return tensors


def open_safetensors(path: str | os.PathLike) -> TensorSource:
  """A `.safetensors` file, or a `.safetensors.index.json` of shards."""
  path = Path(path)
  files = _shard_files(path) if path.name.endswith(".index.json") else [path]
  tensors = {}
  for f in files:
    tensors.update(_safetensors_tensors(f))
  return TensorSource(tensors, str(path))


# ---------------------------------------------------------------------------------------------
# Flax msgpack (flax.serialization): nested maps whose leaves are ndarrays packed as msgpack ext
# type 1 holding (shape, dtype name, raw bytes). One pass records where each array's bytes are;
# reads then memory-map them. Arrays over 1 GiB are split into '__msgpack_chunked_array__' maps.

_NDARRAY_EXT = 1
_NATIVE_COMPLEX_EXT = 2
_NPSCALAR_EXT = 3


@dataclasses.dataclass(frozen=True)
class _ArrayRef:
  shape: tuple[int, ...]
  dtype: np.dtype
  offset: int  # where the array's raw bytes start in the file


def _flatten_msgpack(path: Path) -> dict[str, object]:
  """'/'-joined names -> _ArrayRef or plain value, unpacking one leaf at a time."""
  out: dict[str, object] = {}
  with open(path, "rb") as f:
    unpacker = msgpack.Unpacker(f, raw=False, max_buffer_size=2**31 - 1, strict_map_key=False)

    def visit(name: str):
      try:
        num_entries = unpacker.read_map_header()
      except ValueError:  # not a map (nothing consumed): a leaf
        value = unpacker.unpack()
        out[name] = _leaf(path, name, value, unpacker.tell())
        return
      for _ in range(num_entries):
        key = str(unpacker.unpack())
        visit(f"{name}/{key}" if name else key)

    visit("")
  return out


def _leaf(path: Path, name: str, value: object, end: int) -> object:
  if not isinstance(value, msgpack.ExtType):
    return value
  if value.code not in (_NDARRAY_EXT, _NPSCALAR_EXT):
    raise ValueError(f"{path}: {name} uses msgpack ext type {value.code}, which is not supported")
  shape, dtype_name, data = msgpack.unpackb(value.data, raw=False)
  dtype = np.dtype(ml_dtypes.bfloat16 if dtype_name == "bfloat16" else dtype_name)
  # The raw bytes are the last field of the ext payload, which ends where the unpacker stopped.
  return _ArrayRef(tuple(shape), dtype, end - len(data))


def open_flax_msgpack(path: str | os.PathLike) -> TensorSource:
  """A Flax msgpack checkpoint (HF `flax_model.msgpack`, its index, or a T5X legacy checkpoint)."""
  path = Path(path)
  files = _shard_files(path) if path.name.endswith(".index.json") else [path]
  tensors: dict[str, LazyTensor] = {}
  for f in files:
    flat = _flatten_msgpack(f)
    buffer = _memmap(str(f))
    # Flax stores arrays over 1 GiB as {__msgpack_chunked_array__, shape/i, chunks/i}.
    chunked = [n[: -len("/__msgpack_chunked_array__")] for n in flat if n.endswith("/__msgpack_chunked_array__")]
    for base in chunked:
      tensors[base] = _chunked_tensor(base, flat, buffer, str(f))
    for name, ref in flat.items():
      if isinstance(ref, _ArrayRef) and not any(name.startswith(base + "/") for base in chunked):
        tensors[name] = LazyTensor(name, ref.shape, ref.dtype, str(f), _reader(buffer, ref))
  return TensorSource(tensors, str(path))


def _reader(buffer: memoryview, ref: _ArrayRef) -> Callable[[], np.ndarray]:
  count = int(np.prod(ref.shape))
  return lambda: np.frombuffer(buffer, ref.dtype, count, ref.offset).reshape(ref.shape)


def _chunked_tensor(base: str, flat: dict[str, object], buffer: memoryview, file: str) -> LazyTensor:
  """Reads a chunked array by concatenating its flat chunks."""
  numbered = lambda field: [
      flat[f"{base}/{field}/{i}"] for i in range(sum(n.startswith(f"{base}/{field}/") for n in flat))
  ]
  shape = tuple(int(s) for s in numbered("shape"))
  chunks = numbered("chunks")
  read = lambda: np.concatenate([_reader(buffer, c)().ravel() for c in chunks]).reshape(shape)
  return LazyTensor(base, shape, chunks[0].dtype, file, read)


# ---------------------------------------------------------------------------------------------
# PyTorch .bin (pickle + zip), through torch itself with mmap, only when torch is installed.


def open_torch_bin(path: str | os.PathLike) -> TensorSource:
  """A `pytorch_model.bin` or its `.index.json`; requires torch (loaded with mmap, weights only)."""
  try:
    import torch
  except ImportError as e:
    raise ImportError(
        f"{path} is a PyTorch checkpoint; reading it needs torch (pip install torch), or convert "
        "it to safetensors"
    ) from e
  path = Path(path)
  files = _shard_files(path) if path.name.endswith(".index.json") else [path]
  tensors = {}
  for f in files:
    state = torch.load(f, map_location="cpu", mmap=True, weights_only=True)
    for name, t in state.items():

      def read(t=t):
        if t.dtype == torch.bfloat16:  # numpy has no bfloat16: reinterpret the bits
          return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        return t.numpy()

      dtype = ml_dtypes.bfloat16 if t.dtype == torch.bfloat16 else t.numpy().dtype
      tensors[name] = LazyTensor(name, tuple(t.shape), np.dtype(dtype), str(f), read)
  return TensorSource(tensors, str(path))
