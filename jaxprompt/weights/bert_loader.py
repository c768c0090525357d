"""Loading a frozen BERT / RoBERTa / XLM-RoBERTa from a Hugging Face checkpoint (Hub id, directory or
file), streamed tensor by tensor into its sharding on the mesh."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import traverse_util
from jax.sharding import Mesh

from jaxprompt import sharding as sharding_lib
from jaxprompt.models.bert import Bert
from jaxprompt.models.bert_config import BertConfig
from jaxprompt.weights import checkpoint_files, placement, quantize
from jaxprompt.weights.bert_names import CheckpointLayout, bert_param_sources, detect_layout, is_redundant
from jaxprompt.weights.tensor_sources import TensorSource

log = logging.getLogger(__name__)
_FORMATS = ("safetensors", "torch_bin")


def abstract_bert_params(config: BertConfig) -> Any:
  """The boxed (logically named) abstract param tree of a BERT, without allocating anything."""
  ids = jnp.zeros((1, 1), jnp.int32)
  init = lambda: Bert(config).init(jax.random.key(0), ids, ids >= 0)
  return jax.eval_shape(init)["params"]


def load_bert(
    checkpoint: str,
    *,
    mesh: Mesh | None = None,
    rules: sharding_lib.Rules = sharding_lib.DEFAULT_RULES,
    param_dtype: str = "bfloat16",
    config: BertConfig | None = None,
    cache_dir: str | None = None,
    quantization: quantize.Quantization = quantize.NONE,
    **overrides: Any,
) -> tuple[BertConfig, dict[str, Any]]:
  """(config, {"params": ...}) for a Hub id or a Hugging Face directory/file (safetensors or .bin).

  The config comes from config.json unless given, with the pooler and MLM head taken from what the
  checkpoint holds; `overrides` set its run fields (dtype, scan_layers, remat_policy, dropout_rate,
  ...). Params are created in `param_dtype` (bf16 by default: frozen weights only ever feed bf16
  matmuls) and placed in the sharding the rules give them on `mesh` (one device when None).
  """
  files, source, layout = open_encoder_checkpoint(checkpoint, cache_dir, detect_layout, "BERT")
  config = (config or encoder_config(BertConfig, files, layout)).replace(param_dtype=param_dtype, **overrides)
  return config, load_bert_params(config, source, layout, mesh, rules, quantization)


def read_bert_config(checkpoint: str, cache_dir: str | None = None) -> BertConfig:
  """The config of a checkpoint's config.json, with the pooler and MLM head its tensors hold; no weights read."""
  files, _, layout = open_encoder_checkpoint(checkpoint, cache_dir, detect_layout, "BERT")
  return encoder_config(BertConfig, files, layout)


def open_encoder_checkpoint(
    checkpoint: str, cache_dir: str | None, detect: Callable[[TensorSource], Any], family: str
) -> tuple[checkpoint_files.CheckpointFiles, TensorSource, Any]:
  """An encoder checkpoint's files, its tensors (not read yet) and the layout `detect` reads off their names."""
  files = checkpoint_files.resolve(checkpoint, cache_dir)
  if files.format not in _FORMATS:
    raise ValueError(
        f"{files.weights}: a {files.format} checkpoint; the {family} loader reads Hugging Face PyTorch "
        "names from safetensors or pytorch_model.bin files"
    )
  source = files.open()
  return files, source, detect(source)


def encoder_config(config_class: type, files: checkpoint_files.CheckpointFiles, layout: Any) -> Any:
  """`config_class.from_hf` of the checkpoint's config.json, the pooler and MLM head told by its tensors."""
  if files.config is None:
    raise FileNotFoundError(f"{files.weights}: no config.json next to it; pass config={config_class.__name__}(...)")
  hf = json.loads(files.config.read_text())
  return config_class.from_hf(hf, has_pooler=layout.has_pooler, has_mlm_head=layout.mlm_head is not None,
                              source=str(files.config))


def load_bert_params(
    config: BertConfig,
    source: TensorSource,
    layout: CheckpointLayout | None = None,
    mesh: Mesh | None = None,
    rules: sharding_lib.Rules = sharding_lib.DEFAULT_RULES,
    quantization: quantize.Quantization = quantize.NONE,
) -> dict[str, Any]:
  """{"params": ...} from an open checkpoint; fails before loading anything if it does not fit."""
  layout = layout or detect_layout(source)
  boxed = abstract_bert_params(config)
  targets = sharding_lib.param_targets(boxed, mesh, rules)
  sources = bert_param_sources(config, layout)
  summary = (
      f"BERT hidden={config.hidden_size} heads={config.num_heads} layers={config.num_layers} "
      f"intermediate={config.intermediate_size} vocab={config.vocab_size} "
      f"positions={config.max_position_embeddings} token_types={config.type_vocab_size} "
      f"pooler={config.has_pooler} mlm_head={config.has_mlm_head} prefix={layout.prefix!r} "
      f"scan_layers={config.scan_layers}"
  )
  flat = placement.load_params(targets, sources, source, summary, quantization, boxed)
  unused = [n for n in placement.unused_tensors(sources, source) if not is_redundant(n)]
  if unused:
    log.warning("%s: %d tensors not used by the BERT backbone: %s", source.description, len(unused), unused[:10])
  return {"params": traverse_util.unflatten_dict(flat, sep="/")}
