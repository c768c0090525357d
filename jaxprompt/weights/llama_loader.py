"""Loading a frozen Llama-style decoder from Hugging Face safetensors (Hub id or directory) or a
GGUF file, streamed tensor by tensor into its sharding on the mesh."""

from __future__ import annotations

import json
import logging
from typing import Any

import jax
import jax.numpy as jnp
from flax import traverse_util
from jax.sharding import Mesh

from jaxprompt import sharding as sharding_lib
from jaxprompt.models.llama import Llama
from jaxprompt.models.llama_config import LlamaConfig
from jaxprompt.weights import checkpoint_files, placement, quantize
from jaxprompt.weights.llama_names import LM_HEAD, llama_param_sources
from jaxprompt.weights.tensor_sources import TensorSource

log = logging.getLogger(__name__)


def abstract_llama_params(config: LlamaConfig) -> Any:
  """The boxed (logically named) abstract param tree, without allocating anything."""
  ids = jnp.zeros((1, 1), jnp.int32)
  init = lambda: Llama(config).init(jax.random.key(0), ids, ids > 0, method=Llama.forward_logits)
  return jax.eval_shape(init)["params"]


def load_llama(
    checkpoint: str,
    *,
    mesh: Mesh | None = None,
    rules: sharding_lib.Rules = sharding_lib.DEFAULT_RULES,
    param_dtype: str = "bfloat16",
    config: LlamaConfig | None = None,
    cache_dir: str | None = None,
    quantization: quantize.Quantization = quantize.NONE,
    **overrides: Any,
) -> tuple[LlamaConfig, dict[str, Any]]:
  """(config, {"params": ...}) for a Hub id, an HF directory/file, or a `.gguf` file.

  GGUF files are dequantised tensor by tensor (the file's quantised blocks never become a float
  model in memory at once) and their config is read from the file's metadata.
  """
  source, hf_config, where = _open(checkpoint, cache_dir)
  config = config or _read_config(source, hf_config, where)
  config = config.replace(param_dtype=param_dtype, **overrides)
  return config, load_llama_params(config, source, mesh, rules, quantization)


def read_llama_config(checkpoint: str, cache_dir: str | None = None) -> LlamaConfig:
  """The config of an HF checkpoint's config.json or a GGUF file's metadata; no weights read."""
  return _read_config(*_open(checkpoint, cache_dir))


def _open(checkpoint: str, cache_dir: str | None) -> tuple[TensorSource, dict[str, Any], str]:
  """The checkpoint's tensors, its HF-style config and where that config came from."""
  if str(checkpoint).endswith(".gguf"):
    from jaxprompt.weights import gguf

    source, hf_config = gguf.open_gguf(checkpoint)
    where = str(checkpoint)
  else:
    files = checkpoint_files.resolve(checkpoint, cache_dir)
    if files.format not in ("safetensors", "torch_bin"):
      raise ValueError(f"{files.weights}: Llama checkpoints are read from safetensors (or .bin with torch), not {files.format}")
    if files.config is None:
      raise FileNotFoundError(f"{files.weights}: no config.json next to it")
    source, hf_config, where = files.open(), json.loads(files.config.read_text()), str(files.config)
  return source, hf_config, where


def _read_config(source: TensorSource, hf_config: dict[str, Any], where: str) -> LlamaConfig:
  config = LlamaConfig.from_hf(hf_config, source=where)
  # A checkpoint without lm_head ties it to the embedding, whatever the config says.
  return config.replace(tie_word_embeddings=config.tie_word_embeddings or LM_HEAD not in source)


def load_llama_params(
    config: LlamaConfig,
    source: TensorSource,
    mesh: Mesh | None = None,
    rules: sharding_lib.Rules = sharding_lib.DEFAULT_RULES,
    quantization: quantize.Quantization = quantize.NONE,
) -> dict[str, Any]:
  """{"params": ...} from an open checkpoint; fails before loading anything if it does not fit."""
  boxed = abstract_llama_params(config)
  targets = sharding_lib.param_targets(boxed, mesh, rules)
  sources = llama_param_sources(config)
  summary = (
      f"Llama hidden={config.hidden_size} heads={config.num_heads}/{config.num_kv_heads} "
      f"head_dim={config.head_dim} mlp={config.intermediate_size} layers={config.num_layers} "
      f"vocab={config.vocab_size} tied={config.tie_word_embeddings} scan_layers={config.scan_layers}"
  )
  flat = placement.load_params(targets, sources, source, summary, quantization, boxed)
  unused = [n for n in placement.unused_tensors(sources, source) if not n.endswith("rotary_emb.inv_freq")]
  if unused:
    log.warning("%s: %d tensors not used by the Llama backbone: %s", source.description, len(unused), unused[:10])
  return {"params": traverse_util.unflatten_dict(flat, sep="/")}
