"""T5 (v1.0, v1.1, LM-adapted, Flan-T5, mT5): encoder-decoder; the answer is decoded from the encoder."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import ml_collections

from jaxprompt.backbones.base import Family, dummy_ids, run_fields
from jaxprompt.flops import StepFlops, t5_prompt_tuning_flops
from jaxprompt.models.t5 import T5
from jaxprompt.models.t5_config import T5Config
from jaxprompt.prompts.prefix_tuning import AttentionShape
from jaxprompt.tasks.codec import TextCodec, t5_codec
from jaxprompt.weights.quantize import Quantization
from jaxprompt.weights.t5_loader import load_t5, read_t5_config
from jaxprompt.weights.tokenizer import extra_id_token, load_t5_tokenizer


class T5Family(Family):
  name = "t5"
  # P-tuning v2's head (on a pooled or per-token state) has no place where a decoder generates the answer.
  methods = ("prompt_tuning", "prefix_tuning", "p_tuning", "multi_task", "none")
  text_objective = "seq2seq"

  def load(self, model: ml_collections.ConfigDict, mesh, rules) -> tuple[T5Config, Any]:
    return load_t5(
        model.checkpoint, mesh=mesh, rules=rules, param_dtype=model.param_dtype,
        quantization=Quantization.from_config(model), **run_fields(model),
    )

  def read_config(self, model: ml_collections.ConfigDict) -> T5Config:
    return read_t5_config(model.checkpoint).replace(param_dtype=model.param_dtype, **run_fields(model))

  def planned_config(self, model: ml_collections.ConfigDict) -> T5Config:
    """A local checkpoint's config; otherwise the size preset: T5 configs name the published
    checkpoint of their size (google/t5-<size>-lm-adapt), whose config the preset is, so planning
    needs no download."""
    if model.checkpoint and Path(model.checkpoint).expanduser().exists():
      return self.read_config(model)
    return self.preset(model, tokenizer=None)

  def preset(self, model: ml_collections.ConfigDict, tokenizer: Any) -> T5Config:
    del tokenizer  # every T5 v1.1 size has the same 32,128-row vocabulary
    return T5Config.preset(model.size, param_dtype=model.param_dtype, **run_fields(model))

  def init_params(self, config: T5Config, key: jax.Array) -> Any:
    ids = dummy_ids()
    return T5(config).init(key, ids, ids > 0, ids)["params"]

  def module(self, config: T5Config, deterministic: bool = True) -> nn.Module:
    return T5(config, deterministic=deterministic)

  def tokenizer(self, model: ml_collections.ConfigDict) -> Any:
    return load_t5_tokenizer(model.tokenizer or model.checkpoint)

  def codec(self, tokenizer: Any, model: ml_collections.ConfigDict) -> TextCodec:
    # A cloze pattern reads as span corruption, T5's pre-training task:
    # "It was <extra_id_0> ." -> "<extra_id_0> great <extra_id_1>".
    return dataclasses.replace(t5_codec(tokenizer), cloze_sentinels=(extra_id_token(0), extra_id_token(1)))

  def embed_dim(self, config: T5Config) -> int:
    return config.d_model

  def attention_shapes(self, config: T5Config) -> tuple[AttentionShape, ...]:
    c = config
    return (AttentionShape("encoder_self", c.num_encoder_layers, c.num_heads, c.d_kv),
            AttentionShape("decoder_self", c.num_decoder_layers, c.num_heads, c.d_kv),
            AttentionShape("decoder_cross", c.num_decoder_layers, c.num_heads, c.d_kv))

  def step_flops(self, config: T5Config, batch: int, prompt_len: int, input_len: int, target_len: int) -> StepFlops:
    return t5_prompt_tuning_flops(config, batch, prompt_len, input_len, target_len)
