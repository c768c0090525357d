"""Loading a frozen T5 from a Hugging Face checkpoint (Hub id or directory) or a T5X checkpoint,
streamed tensor by tensor into its sharding on the mesh."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import jax
import jax.numpy as jnp
from flax import traverse_util
from jax.sharding import Mesh

from jaxprompt import sharding as sharding_lib
from jaxprompt.models.t5 import T5
from jaxprompt.models.t5_config import T5Config
from jaxprompt.weights import checkpoint_files, placement, quantize
from jaxprompt.weights.t5_names import HF_REDUNDANT, Dialect, t5_param_sources
from jaxprompt.weights.tensor_sources import TensorSource

log = logging.getLogger(__name__)
_T5X_PREFIXES = ("optimizer/target/", "target/")


def abstract_t5_params(config: T5Config) -> Any:
  """The boxed (logically named) abstract param tree of a T5, without allocating anything."""
  ids = jnp.zeros((1, 1), jnp.int32)
  init = lambda: T5(config).init(jax.random.key(0), ids, ids > 0, ids)
  return jax.eval_shape(init)["params"]


def infer_t5x_config(source: TensorSource, prefix: str, **overrides: Any) -> T5Config:
  """A T5X checkpoint stores no config: read the sizes off its tensors."""
  def shape(name: str) -> tuple[int, ...]:
    if prefix + name not in source:
      raise placement.CheckpointMismatchError(f"{source.description}: T5X tensor {prefix + name!r} is missing")
    return source[prefix + name].shape

  vocab, d_model = shape("token_embedder/embedding")
  heads, buckets = shape("encoder/relpos_bias/rel_embedding")
  gated = prefix + "encoder/layers_0/mlp/wi_0/kernel" in source
  count = lambda stack: len({m.group(1) for n in source if (m := re.match(rf"{re.escape(prefix)}{stack}/layers_(\d+)/", n))})
  fields = dict(
      vocab_size=vocab,
      d_model=d_model,
      num_heads=heads,
      d_kv=shape("encoder/layers_0/attention/query/kernel")[1] // heads,
      d_ff=shape(f"encoder/layers_0/mlp/{'wi_0' if gated else 'wi'}/kernel")[1],
      num_encoder_layers=count("encoder"),
      num_decoder_layers=count("decoder"),
      relative_attention_num_buckets=buckets,
      feed_forward_proj="gated-gelu" if gated else "relu",
      tie_word_embeddings=prefix + "decoder/logits_dense/kernel" not in source,
      scale_decoder_outputs=prefix + "decoder/logits_dense/kernel" not in source,
  )
  return T5Config(**{**fields, **overrides})


def _dialect(files: checkpoint_files.CheckpointFiles, source: TensorSource) -> tuple[Dialect, str]:
  for prefix in _T5X_PREFIXES:
    if any(name.startswith(prefix) for name in source):
      return "t5x", prefix
  if files.format == "t5x_msgpack":
    raise placement.CheckpointMismatchError(
        f"{files.weights}: not a T5X checkpoint (no tensors under {_T5X_PREFIXES}) and not a Hugging "
        "Face weights file (model.safetensors, flax_model.msgpack, pytorch_model.bin)"
    )
  # HF Flax checkpoints may wrap everything in a top-level "params".
  prefix = "params/" if all(n.startswith("params/") for n in source) else ""
  return ("hf_flax" if files.format == "flax_msgpack" else "hf"), prefix


def load_t5(
    checkpoint: str,
    *,
    mesh: Mesh | None = None,
    rules: sharding_lib.Rules = sharding_lib.DEFAULT_RULES,
    param_dtype: str = "bfloat16",
    config: T5Config | None = None,
    cache_dir: str | None = None,
    quantization: quantize.Quantization = quantize.NONE,
    **overrides: Any,
) -> tuple[T5Config, dict[str, Any]]:
  """(config, {"params": ...}) for a Hub id, an HF directory/file or a T5X checkpoint.

  The config comes from config.json (HF) or the tensor shapes (T5X) unless given; `overrides` set
  its run fields (dtype, scan_layers, remat_policy, dropout_rate, ...). Params are created in
  `param_dtype` (bf16 by default: frozen weights only ever feed bf16 matmuls) and placed in the
  sharding the rules give them on `mesh` (one device when None).
  """
  files, source, dialect, prefix = _open(checkpoint, cache_dir)
  config = (config or _read_config(files, source, dialect, prefix)).replace(param_dtype=param_dtype, **overrides)
  return config, load_t5_params(config, source, dialect, prefix, mesh, rules, quantization)


def read_t5_config(checkpoint: str, cache_dir: str | None = None) -> T5Config:
  """The config of a checkpoint (config.json, or a T5X checkpoint's tensor shapes); no weights read."""
  return _read_config(*_open(checkpoint, cache_dir))


def _open(checkpoint: str, cache_dir: str | None) -> tuple[checkpoint_files.CheckpointFiles, TensorSource, Dialect, str]:
  files = checkpoint_files.resolve(checkpoint, cache_dir)
  source = files.open()
  return files, source, *_dialect(files, source)


def _read_config(files: checkpoint_files.CheckpointFiles, source: TensorSource, dialect: Dialect, prefix: str) -> T5Config:
  if dialect == "t5x":
    return infer_t5x_config(source, prefix)
  if files.config is None:
    raise FileNotFoundError(f"{files.weights}: no config.json next to it; pass config=T5Config(...)")
  lm_head = t5_param_sources(T5Config(), dialect, prefix)["decoder/logits_dense/kernel"].names[0]
  hf = json.loads(files.config.read_text())
  return T5Config.from_hf(hf, has_lm_head=lm_head in source, source=str(files.config))


def load_t5_params(
    config: T5Config,
    source: TensorSource,
    dialect: Dialect,
    prefix: str = "",
    mesh: Mesh | None = None,
    rules: sharding_lib.Rules = sharding_lib.DEFAULT_RULES,
    quantization: quantize.Quantization = quantize.NONE,
) -> dict[str, Any]:
  """{"params": ...} from an open checkpoint; fails before loading anything if it does not fit."""
  boxed = abstract_t5_params(config)
  targets = sharding_lib.param_targets(boxed, mesh, rules)
  sources = t5_param_sources(config, dialect, prefix)
  summary = (
      f"T5 d_model={config.d_model} d_kv={config.d_kv} d_ff={config.d_ff} heads={config.num_heads} "
      f"layers={config.num_encoder_layers}+{config.num_decoder_layers} vocab={config.vocab_size} "
      f"feed_forward_proj={config.feed_forward_proj} tied={config.tie_word_embeddings} "
      f"scan_layers={config.scan_layers}"
  )
  flat = placement.load_params(targets, sources, source, summary, quantization, boxed)
  unused = [
      n for n in placement.unused_tensors(sources, source)
      if n[len(prefix):] not in HF_REDUNDANT and not (dialect == "t5x" and not n.startswith(prefix))
  ]
  if unused:
    log.warning("%s: %d tensors not used by the T5 backbone: %s", source.description, len(unused), unused[:10])
  return {"params": traverse_util.unflatten_dict(flat, sep="/")}
