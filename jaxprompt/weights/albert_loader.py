"""Loading a frozen ALBERT from a Hugging Face checkpoint (Hub id, directory or file), streamed tensor
by tensor into its sharding on the mesh."""

from __future__ import annotations

import logging
from typing import Any

import jax
import jax.numpy as jnp
from flax import traverse_util
from jax.sharding import Mesh

from jaxprompt import sharding as sharding_lib
from jaxprompt.models.albert import Albert
from jaxprompt.models.albert_config import AlbertConfig
from jaxprompt.weights import placement, quantize
from jaxprompt.weights.albert_names import albert_param_sources, detect_layout, is_redundant
from jaxprompt.weights.bert_loader import encoder_config, open_encoder_checkpoint
from jaxprompt.weights.bert_names import CheckpointLayout
from jaxprompt.weights.tensor_sources import TensorSource

log = logging.getLogger(__name__)


def abstract_albert_params(config: AlbertConfig) -> Any:
  """The boxed (logically named) abstract param tree of an ALBERT, without allocating anything."""
  ids = jnp.zeros((1, 1), jnp.int32)
  init = lambda: Albert(config).init(jax.random.key(0), ids, ids >= 0)
  return jax.eval_shape(init)["params"]


def load_albert(
    checkpoint: str,
    *,
    mesh: Mesh | None = None,
    rules: sharding_lib.Rules = sharding_lib.DEFAULT_RULES,
    param_dtype: str = "bfloat16",
    config: AlbertConfig | None = None,
    cache_dir: str | None = None,
    quantization: quantize.Quantization = quantize.NONE,
    **overrides: Any,
) -> tuple[AlbertConfig, dict[str, Any]]:
  """(config, {"params": ...}) for a Hub id or a Hugging Face directory/file (safetensors or .bin).

  The config comes from config.json unless given, with the pooler and MLM head taken from what the
  checkpoint holds; `overrides` set its run fields (dtype, scan_layers, remat_policy, dropout_rate,
  ...). Params are created in `param_dtype` (bf16 by default: frozen weights only ever feed bf16
  matmuls) and placed in the sharding the rules give them on `mesh` (one device when None).
  """
  files, source, layout = open_encoder_checkpoint(checkpoint, cache_dir, detect_layout, "ALBERT")
  config = (config or encoder_config(AlbertConfig, files, layout)).replace(param_dtype=param_dtype, **overrides)
  return config, load_albert_params(config, source, layout, mesh, rules, quantization)


def read_albert_config(checkpoint: str, cache_dir: str | None = None) -> AlbertConfig:
  """The config of a checkpoint's config.json, with the pooler and MLM head its tensors hold; no weights read."""
  files, _, layout = open_encoder_checkpoint(checkpoint, cache_dir, detect_layout, "ALBERT")
  return encoder_config(AlbertConfig, files, layout)


def load_albert_params(
    config: AlbertConfig,
    source: TensorSource,
    layout: CheckpointLayout | None = None,
    mesh: Mesh | None = None,
    rules: sharding_lib.Rules = sharding_lib.DEFAULT_RULES,
    quantization: quantize.Quantization = quantize.NONE,
) -> dict[str, Any]:
  """{"params": ...} from an open checkpoint; fails before loading anything if it does not fit."""
  layout = layout or detect_layout(source)
  boxed = abstract_albert_params(config)
  targets = sharding_lib.param_targets(boxed, mesh, rules)
  sources = albert_param_sources(config, layout)
  summary = (
      f"ALBERT embedding={config.embedding_size} hidden={config.hidden_size} heads={config.num_heads} "
      f"layers={config.num_layers} groups={config.num_hidden_groups} inner={config.inner_group_num} "
      f"intermediate={config.intermediate_size} vocab={config.vocab_size} "
      f"positions={config.max_position_embeddings} token_types={config.type_vocab_size} "
      f"pooler={config.has_pooler} mlm_head={config.has_mlm_head} prefix={layout.prefix!r}"
  )
  flat = placement.load_params(targets, sources, source, summary, quantization, boxed)
  unused = [n for n in placement.unused_tensors(sources, source) if not is_redundant(n)]
  if unused:
    log.warning("%s: %d tensors not used by the ALBERT backbone: %s", source.description, len(unused), unused[:10])
  return {"params": traverse_util.unflatten_dict(flat, sep="/")}
