"""The frozen backbone of a run, whatever its family: weights, tokenizer, text codec, objective.

`config.model.family` picks one entry of FAMILIES; everything family-specific sits behind its
`Family` (backbones/base.py). A new family is one module here and one entry in the table.
"""

from __future__ import annotations

from pathlib import Path

import ml_collections
from flax import traverse_util
from jax.sharding import Mesh

from jaxprompt import sharding as sharding_lib
from jaxprompt.backbones.albert import AlbertFamily
from jaxprompt.backbones.base import HEAD_OBJECTIVES, Backbone, Family, random_params
from jaxprompt.backbones.bert import BertFamily
from jaxprompt.backbones.llama import LlamaFamily
from jaxprompt.backbones.t5 import T5Family
from jaxprompt.weights.quantize import Quantization, quantized_targets

FAMILIES: dict[str, Family] = {family.name: family for family in (T5Family(), LlamaFamily(), BertFamily(), AlbertFamily())}

__all__ = ["FAMILIES", "HEAD_OBJECTIVES", "Backbone", "Family", "abstract_backbone", "family_of", "load_backbone"]


def family_of(model: ml_collections.ConfigDict) -> Family:
  if model.family not in FAMILIES:
    raise ValueError(f"config.model.family={model.family!r} is not one of {tuple(FAMILIES)}")
  return FAMILIES[model.family]


def load_backbone(model: ml_collections.ConfigDict, mesh: Mesh, rules) -> Backbone:
  """The frozen backbone of `config.model`: streamed from its checkpoint, or randomly initialised."""
  family = family_of(model)
  tokenizer = family.tokenizer(model)
  if model.checkpoint:
    config, frozen = family.load(model, mesh, rules)
  else:
    config = family.preset(model, tokenizer)
    frozen = random_params(family, config, mesh, rules, model.init_seed, Quantization.from_config(model))
  return Backbone(family, config, frozen, tokenizer, family.codec(tokenizer, model))


def abstract_backbone(model: ml_collections.ConfigDict, mesh: Mesh, rules) -> Backbone:
  """The backbone's sharded shapes from its config alone, no weights read or allocated (the planner).
  Its tokenizer too when that is a local file or folder (a cloze run's label words need it)."""
  family = family_of(model)
  config = family.planned_config(model)
  boxed = family.abstract_params(config)
  params = sharding_lib.abstract_with_shardings(boxed, mesh, rules)
  quantization = Quantization.from_config(model)
  if quantization.enabled:  # the quantised kernels' codes and scales, as a load would place them
    flat = traverse_util.flatten_dict(params, sep="/")
    formats = family.file_block_formats(model, config) if quantization.scheme == "gguf" else {}  # only gguf keeps them
    flat = quantized_targets(flat, boxed, quantization, formats)
    params = traverse_util.unflatten_dict(flat, sep="/")
  source = model.tokenizer or model.checkpoint
  tokenizer = family.tokenizer(model) if source and Path(source).expanduser().exists() else None
  codec = None if tokenizer is None else family.codec(tokenizer, model)
  return Backbone(family, config, {"params": params}, tokenizer, codec)
