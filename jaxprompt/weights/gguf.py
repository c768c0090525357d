"""GGUF files (llama.cpp) as a TensorSource under Hugging Face Llama names, plus their config.json.

The file is memory-mapped by `gguf.GGUFReader`; each tensor is dequantised to float32 only when it
is read, so the float model never exists in host memory at once; with config.model.quantization=
"gguf" its Q8_0 / Q4_0 / Q4_1 blocks are read as they are. Names, shapes ([out, in] for linear
layers) and the Q/K row order are Hugging Face's, so `llama_names` loads them unchanged.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from jaxprompt.models.quantized import QuantizedKernel
from jaxprompt.weights.tensor_sources import LazyTensor, TensorSource

SUPPORTED_ARCHITECTURES = ("llama",)

# GGUF name (outside the blocks) -> Hugging Face name, both without ".weight".
_GLOBAL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
# GGUF name inside `blk.{i}` -> Hugging Face name inside `model.layers.{i}`.
_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}

_MISSING = object()


def open_reader(path: str | os.PathLike) -> gguf.GGUFReader:
  """A memory-mapped GGUFReader, with errors that name the file."""
  if not Path(path).is_file():
    raise FileNotFoundError(f"GGUF file not found: {path}")
  try:
    return gguf.GGUFReader(path)
  except ValueError as e:  # bad magic or an unknown version
    raise ValueError(f"{path}: not a readable GGUF file ({e})") from e


def metadata(reader: gguf.GGUFReader, key: str, path: str | os.PathLike, default: Any = _MISSING) -> Any:
  """One metadata value as Python (str, int, float, bool or list); `default` when absent."""
  field = reader.get_field(key)
  if field is None:
    if default is _MISSING:
      raise ValueError(f"{path}: required GGUF metadata key {key!r} is missing")
    return default
  return field.contents()


def undo_rotary_permutation(w_OxI: np.ndarray, num_heads: int) -> np.ndarray:
  """Reverses llama.cpp's Q/K row permutation, which interleaves each head's two rotary halves.

  llama.cpp's converter views the rows as [heads, 2, K/2] and swaps the last two axes, for its
  interleaved RoPE; Hugging Face's rotate_half (and ours) wants the halves back in place. For K the
  heads are the KV heads.
  """
  out_dim = w_OxI.shape[0]
  half = out_dim // num_heads // 2
  return w_OxI.reshape(num_heads, half, 2, *w_OxI.shape[1:]).swapaxes(1, 2).reshape(w_OxI.shape)


def _hf_name(gguf_name: str) -> str:
  """The Hugging Face name of a GGUF tensor; unknown tensors keep their GGUF name (and go unused)."""
  stem, dot, suffix = gguf_name.rpartition(".")
  if not dot:
    return gguf_name
  if stem in _GLOBAL_NAMES:
    return f"{_GLOBAL_NAMES[stem]}.{suffix}"
  parts = stem.split(".")
  if len(parts) == 3 and parts[0] == "blk" and parts[2] in _LAYER_NAMES:
    return f"model.layers.{parts[1]}.{_LAYER_NAMES[parts[2]]}.{suffix}"
  return gguf_name


def _can_dequantise(qtype: gguf.GGMLQuantizationType) -> bool:
  """Whether this gguf version dequantises `qtype`, probed on one all-zero block."""
  _, type_size = gguf.GGML_QUANT_SIZES[qtype]
  try:
    gguf.quants.dequantize(np.zeros((1, type_size), np.uint8), qtype)
  except NotImplementedError:
    return False
  return True


def _read(tensor: gguf.ReaderTensor, shape: tuple[int, ...], rotary_heads: int | None) -> np.ndarray:
  """One tensor dequantised to float32 in Hugging Face's layout."""
  # A plain ndarray view of the mapped bytes (no copy): numpy's memmap subclass makes every slice
  # that dequantize takes several times slower.
  array = gguf.quants.dequantize(np.asarray(tensor.data), tensor.tensor_type).reshape(shape)
  array = array.astype(np.float32, copy=False)
  return array if rotary_heads is None else undo_rotary_permutation(array, rotary_heads)


# GGUF block types the quantised matmul reads as they are: type -> (scheme, block, bytes per block).
# Each block starts with its float16 scale d (Q4_1: then its float16 offset m), then its codes.
KEPT_BLOCKS = {
    gguf.GGMLQuantizationType.Q8_0: ("int8", 32, 34),
    gguf.GGMLQuantizationType.Q4_0: ("int4", 32, 18),
    gguf.GGMLQuantizationType.Q4_1: ("uint4", 32, 20),
}


def _read_blocks(tensor: gguf.ReaderTensor, shape: tuple[int, ...], rotary_heads: int | None) -> QuantizedKernel:
  """A Q8_0 / Q4_0 / Q4_1 tensor's codes, scales (and offsets) as stored, rows in Hugging Face's
  order: [out, in] codes (4-bit ones packed as GGUF packs them, [out, in/2]) and [out, in/32] scales."""
  scheme, block, nbytes = KEPT_BLOCKS[tensor.tensor_type]
  rows = int(np.prod(shape[:-1]))
  raw = np.asarray(tensor.data).reshape(rows, shape[-1] // block, nbytes)
  half = lambda column: raw[..., column:column + 2].copy().view(np.float16)[..., 0]
  header = 4 if scheme == "uint4" else 2
  codes = raw[..., header:].reshape(rows, -1)
  parts = [codes.view(np.int8) if scheme == "int8" else codes, half(0), half(2) if scheme == "uint4" else None]
  if rotary_heads is not None:
    parts = [None if p is None else undo_rotary_permutation(p, rotary_heads) for p in parts]
  return QuantizedKernel(*parts, scheme=scheme, block=block, axis=-1)


def _check_supported(reader: gguf.GGUFReader, path: str | os.PathLike) -> None:
  """Fails on anything the Llama backbone would silently get wrong."""
  architecture = metadata(reader, "general.architecture", path)
  if architecture not in SUPPORTED_ARCHITECTURES:
    raise ValueError(
        f"{path}: general.architecture={architecture!r} is not supported; supported: {SUPPORTED_ARCHITECTURES}"
    )
  experts = metadata(reader, "llama.expert_count", path, 0)
  if experts:
    raise ValueError(f"{path}: llama.expert_count={experts}: mixture-of-experts GGUFs are not supported")
  scaling = metadata(reader, "llama.rope.scaling.type", path, "none")
  if scaling != "none":
    raise ValueError(f"{path}: llama.rope.scaling.type={scaling!r} is not supported (plain RoPE only)")
  names = {t.name for t in reader.tensors}
  if "rope_freqs.weight" in names:
    # Llama 3.1's RoPE rescaling, stored as per-frequency factors: ignoring it would shift every logit.
    raise ValueError(f"{path}: tensor 'rope_freqs.weight' (RoPE frequency factors, Llama 3.1 style) is not supported")
  first_of_type = {}
  for t in reader.tensors:
    first_of_type.setdefault(t.tensor_type, t)
  for qtype, t in first_of_type.items():
    if not _can_dequantise(qtype):
      version = importlib.metadata.version("gguf")
      raise ValueError(
          f"{path}: tensor {t.name!r} is stored as {t.tensor_type.name}, which gguf {version} cannot dequantise"
      )


def hf_config(reader: gguf.GGUFReader, path: str | os.PathLike) -> dict[str, Any]:
  """A Hugging Face Llama config.json (as a dict) from the file's metadata."""
  get = lambda key, default=_MISSING: metadata(reader, f"llama.{key}", path, default)
  hidden, heads = get("embedding_length"), get("attention.head_count")
  kv_heads = get("attention.head_count_kv", heads)
  if isinstance(kv_heads, list):  # some converters write one count per layer
    if len(set(kv_heads)) != 1:
      raise ValueError(f"{path}: llama.attention.head_count_kv={kv_heads} differs between layers; not supported")
    kv_heads = kv_heads[0]
  head_dim = get("attention.key_length", None) or get("rope.dimension_count", None) or hidden // heads
  rotary_dim = get("rope.dimension_count", head_dim)
  if rotary_dim != head_dim:
    raise ValueError(
        f"{path}: llama.rope.dimension_count={rotary_dim} != head_dim={head_dim}: partial RoPE is not supported"
    )
  names = {t.name for t in reader.tensors}
  token = lambda key: metadata(reader, f"tokenizer.ggml.{key}", path, None)
  if "llama.vocab_size" in reader.fields:
    vocab_size = get("vocab_size")
  elif "token_embd.weight" in names:  # older files: the embedding's row count
    vocab_size = int(next(t for t in reader.tensors if t.name == "token_embd.weight").shape[1])
  else:
    raise ValueError(f"{path}: neither llama.vocab_size nor token_embd.weight says the vocabulary size")
  return {
      "architectures": ["LlamaForCausalLM"],
      "model_type": "llama",
      "vocab_size": vocab_size,
      "hidden_size": hidden,
      "intermediate_size": get("feed_forward_length"),
      "num_hidden_layers": get("block_count"),
      "num_attention_heads": heads,
      "num_key_value_heads": kv_heads,
      "head_dim": head_dim,
      "rms_norm_eps": get("attention.layer_norm_rms_epsilon"),
      "rope_theta": float(get("rope.freq_base", 10000.0)),
      "max_position_embeddings": get("context_length", 2048),
      # llama.cpp writes `output.weight` only when the head is not the embedding.
      "tie_word_embeddings": "output.weight" not in names,
      # Llama-architecture files may carry biases; the backbone refuses them rather than drop them.
      "attention_bias": any(n.startswith("blk.") and n.split(".")[2].startswith("attn_") and n.endswith(".bias")
                            for n in names),
      "mlp_bias": any(n.startswith("blk.") and n.split(".")[2].startswith("ffn_") and n.endswith(".bias") for n in names),
      "bos_token_id": token("bos_token_id"),
      "eos_token_id": token("eos_token_id"),
      "pad_token_id": token("padding_token_id"),
  }


def open_gguf(path: str | os.PathLike) -> tuple[TensorSource, dict[str, Any]]:
  """(tensors under Hugging Face Llama names, dequantised on read; HF config dict) of a GGUF file."""
  reader = open_reader(path)
  _check_supported(reader, path)
  config = hf_config(reader, path)
  rotary_heads = {"q_proj": config["num_attention_heads"], "k_proj": config["num_key_value_heads"]}
  tensors = {}
  for t in reader.tensors:
    name = _hf_name(t.name)
    shape = tuple(int(n) for n in reversed(t.shape))  # GGUF lists dims fastest-first
    parts = name.split(".")
    heads = rotary_heads.get(parts[-2]) if len(parts) > 1 and parts[-1] == "weight" else None
    read = functools.partial(_read, t, shape, heads)
    kept = KEPT_BLOCKS.get(t.tensor_type)
    tensors[name] = LazyTensor(
        name, shape, np.dtype(np.float32), str(path), read, block_format=kept and kept[:2],
        read_blocks=kept and functools.partial(_read_blocks, t, shape, heads),
    )
  return TensorSource(tensors, str(path)), config
