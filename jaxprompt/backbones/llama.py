"""Llama-style decoders (Llama, SmolLM, ...): the answer continues the input."""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import ml_collections

from jaxprompt.backbones.base import Family, dummy_ids, run_fields
from jaxprompt.models.llama import Llama
from jaxprompt.models.llama_config import LlamaConfig
from jaxprompt.prompts.prefix_tuning import AttentionShape
from jaxprompt.tasks.codec import TextCodec, decoder_codec
from jaxprompt.weights.llama_loader import load_llama, read_llama_config
from jaxprompt.weights.llama_names import llama_param_sources
from jaxprompt.weights.placement import file_block_formats
from jaxprompt.weights.quantize import Quantization


class LlamaFamily(Family):
  name = "llama"
  methods = ("prompt_tuning", "prefix_tuning", "p_tuning", "p_tuning_v2", "multi_task", "classifier", "none")
  text_objective = "causal_lm"

  def load(self, model: ml_collections.ConfigDict, mesh, rules) -> tuple[LlamaConfig, Any]:
    return load_llama(
        model.checkpoint, mesh=mesh, rules=rules, param_dtype=model.param_dtype,
        quantization=Quantization.from_config(model), **run_fields(model),
    )

  def read_config(self, model: ml_collections.ConfigDict) -> LlamaConfig:
    return read_llama_config(model.checkpoint).replace(param_dtype=model.param_dtype, **run_fields(model))

  def file_block_formats(self, model: ml_collections.ConfigDict, config: LlamaConfig) -> dict[str, tuple[str, int]]:
    if not str(model.checkpoint).endswith(".gguf"):
      return {}
    from jaxprompt.weights import gguf

    return file_block_formats(llama_param_sources(config), gguf.open_gguf(model.checkpoint)[0])

  def preset(self, model: ml_collections.ConfigDict, tokenizer: Any) -> LlamaConfig:
    if model.size != "tiny":
      raise ValueError(f"config.model.size={model.size!r}: a random Llama backbone is only offered as 'tiny'")
    return LlamaConfig.tiny(vocab_size=tokenizer.vocab_size, param_dtype=model.param_dtype, **run_fields(model))

  def init_params(self, config: LlamaConfig, key: jax.Array) -> Any:
    ids = dummy_ids()
    return Llama(config).init(key, ids, ids > 0, method=Llama.forward_logits)["params"]

  def module(self, config: LlamaConfig, deterministic: bool = True) -> nn.Module:
    del deterministic  # Llama checkpoints have no dropout
    return Llama(config)

  def tokenizer(self, model: ml_collections.ConfigDict) -> Any:
    return _decoder_tokenizer(model.tokenizer or model.checkpoint)

  def codec(self, tokenizer: Any, model: ml_collections.ConfigDict) -> TextCodec:
    return decoder_codec(tokenizer, model.add_bos)

  def embed_dim(self, config: LlamaConfig) -> int:
    return config.hidden_size

  def attention_shapes(self, config: LlamaConfig) -> tuple[AttentionShape, ...]:
    # Grouped-query attention: prefixes are made for the key/value heads.
    return (AttentionShape("encoder_self", config.num_layers, config.num_kv_heads, config.head_dim),)

  def head_features(self, model, frozen, batch, prompt, token_level, rng) -> jax.Array:
    """Every position's state, or the last token's (inputs are left-padded: the last column)."""
    del rng  # no dropout
    hidden, _, _ = model.apply(frozen, batch["inputs"], batch["input_mask"], prompt)
    return hidden if token_level else hidden[:, -1]


@functools.lru_cache(maxsize=4)  # a GGUF's vocabulary takes seconds to rebuild; tokenizers are read-only
def _decoder_tokenizer(source: str):
  if str(source).endswith(".gguf"):
    from jaxprompt.weights.gguf_tokenizer import gguf_tokenizer

    return gguf_tokenizer(source)
  from jaxprompt.weights.hf_tokenizer import load_hf_tokenizer

  return load_hf_tokenizer(source)
