"""BERT-style encoders (BERT, RoBERTa, XLM-R, MiniLM, ...): no text to generate. A cloze pattern's
[MASK] is scored for the label words (PET, LM-BFF; MLM checkpoints), or a prompt method with its
own head (P-tuning v2) classifies the pooled output or tags every token."""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import ml_collections

from jaxprompt.backbones.base import Family, dummy_ids, run_fields
from jaxprompt.models.bert import Bert
from jaxprompt.models.bert_config import BertConfig
from jaxprompt.prompts.prefix_tuning import AttentionShape
from jaxprompt.tasks.codec import TextCodec, bert_codec
from jaxprompt.tasks.patterns import ClozeTokens
from jaxprompt.weights.bert_loader import load_bert, read_bert_config
from jaxprompt.weights.hf_tokenizer import load_hf_tokenizer
from jaxprompt.weights.quantize import Quantization


class BertFamily(Family):
  name = "bert"
  # P-tuning v1 places pseudo tokens at a template's [Pi] markers, which cloze patterns do not have.
  methods = ("prompt_tuning", "prefix_tuning", "p_tuning_v2", "classifier", "none")
  text_objective = "cloze"

  def load(self, model: ml_collections.ConfigDict, mesh, rules) -> tuple[BertConfig, Any]:
    return load_bert(
        model.checkpoint, mesh=mesh, rules=rules, param_dtype=model.param_dtype,
        quantization=Quantization.from_config(model), **run_fields(model),
    )

  def read_config(self, model: ml_collections.ConfigDict) -> BertConfig:
    return read_bert_config(model.checkpoint).replace(param_dtype=model.param_dtype, **run_fields(model))

  def preset(self, model: ml_collections.ConfigDict, tokenizer: Any) -> BertConfig:
    if model.size != "tiny":
      raise ValueError(f"config.model.size={model.size!r}: a random BERT backbone is only offered as 'tiny'")
    return BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_heads=4, num_layers=2,
                      intermediate_size=64, has_mlm_head=True, param_dtype=model.param_dtype, **run_fields(model))

  def init_params(self, config: BertConfig, key: jax.Array) -> Any:
    ids = dummy_ids()
    return Bert(config).init(key, ids, ids > 0)["params"]

  def module(self, config: BertConfig, deterministic: bool = True) -> nn.Module:
    return Bert(config, deterministic=deterministic)

  def tokenizer(self, model: ml_collections.ConfigDict) -> Any:
    return load_hf_tokenizer(model.tokenizer or model.checkpoint)

  def codec(self, tokenizer: Any, model: ml_collections.ConfigDict) -> TextCodec:
    cloze = ClozeTokens.from_hf(tokenizer) if tokenizer.mask_id is not None else None
    return dataclasses.replace(bert_codec(tokenizer), cloze=cloze)

  def embed_dim(self, config: BertConfig) -> int:
    return config.hidden_size

  def attention_shapes(self, config: BertConfig) -> tuple[AttentionShape, ...]:
    return (AttentionShape("encoder_self", config.num_layers, config.num_heads, config.head_dim),)

  def head_features(self, model, frozen, batch, prompt, token_level, rng) -> jax.Array:
    """Every slot's state, or the pooled [CLS] output (its state, for checkpoints without a pooler)."""
    rngs = None if model.deterministic else {"dropout": rng}  # P-tuning v2 trains with the encoder's dropout
    out = model.apply(frozen, batch["inputs"], batch["input_mask"], None, prompt, rngs=rngs)
    if token_level:
      return out.hidden_BxTxD
    return out.pooled_BxD if out.pooled_BxD is not None else out.hidden_BxTxD[:, 0]
