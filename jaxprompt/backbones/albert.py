"""ALBERT (factorised embeddings, layers shared across depth): an encoder like BERT (PET with
multiple masks used ALBERT-xxlarge-v2); soft prompts live in its narrower embedding space."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import ml_collections

from jaxprompt.backbones.base import dummy_ids, run_fields
from jaxprompt.backbones.bert import BertFamily
from jaxprompt.models.albert import Albert
from jaxprompt.models.albert_config import AlbertConfig
from jaxprompt.prompts.prefix_tuning import AttentionShape
from jaxprompt.weights.albert_loader import load_albert, read_albert_config
from jaxprompt.weights.quantize import Quantization


class AlbertFamily(BertFamily):
  """BERT's tokenizer conventions, methods and head features; ALBERT's model and checkpoints."""

  name = "albert"

  def load(self, model: ml_collections.ConfigDict, mesh, rules) -> tuple[AlbertConfig, Any]:
    return load_albert(
        model.checkpoint, mesh=mesh, rules=rules, param_dtype=model.param_dtype,
        quantization=Quantization.from_config(model), **run_fields(model),
    )

  def read_config(self, model: ml_collections.ConfigDict) -> AlbertConfig:
    return read_albert_config(model.checkpoint).replace(param_dtype=model.param_dtype, **run_fields(model))

  def preset(self, model: ml_collections.ConfigDict, tokenizer: Any) -> AlbertConfig:
    if model.size != "tiny":
      raise ValueError(f"config.model.size={model.size!r}: a random ALBERT backbone is only offered as 'tiny'")
    return AlbertConfig(vocab_size=tokenizer.vocab_size, embedding_size=16, hidden_size=32, num_heads=4,
                        num_layers=2, intermediate_size=64, has_mlm_head=True, param_dtype=model.param_dtype,
                        **run_fields(model))

  def init_params(self, config: AlbertConfig, key: jax.Array) -> Any:
    ids = dummy_ids()
    return Albert(config).init(key, ids, ids > 0)["params"]

  def module(self, config: AlbertConfig, deterministic: bool = True) -> nn.Module:
    return Albert(config, deterministic=deterministic)

  def embed_dim(self, config: AlbertConfig) -> int:
    return config.embedding_size  # soft tokens are word embeddings (E), projected to H with the rest

  def hidden_dim(self, config: AlbertConfig) -> int:
    return config.hidden_size

  def attention_shapes(self, config: AlbertConfig) -> tuple[AttentionShape, ...]:
    # One prefix per self-attention application: a shared layer applied N times takes N prefixes.
    return (AttentionShape("encoder_self", config.num_attention_layers, config.num_heads, config.head_dim),)
