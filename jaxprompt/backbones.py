"""The frozen backbone of a run, whatever its family: weights, tokenizer, text codec, objective.

`config.model.family` picks one of
  t5     encoder-decoder (T5 v1.0/v1.1/LM-adapted/Flan-T5): the answer is decoded from the encoder
  llama  decoder-only (Llama, SmolLM, ...): the answer continues the input
  bert   encoder (BERT, RoBERTa, MiniLM, ...): a prompt method with its own head (P-tuning v2)
         classifies the pooled output or tags every token; there is no text to generate

A prompt method that carries a head (`method.objective` "classify" or "tag") trains and evaluates
through head_steps.py on the encoder and decoder families; every other method generates (T5) or
continues (decoders) the verbalizer's text.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh

from jaxprompt import causal_lm_steps, head_steps, seq2seq_steps
from jaxprompt import sharding as sharding_lib
from jaxprompt.models.bert import Bert
from jaxprompt.models.bert_config import BertConfig
from jaxprompt.models.llama import Llama
from jaxprompt.models.llama_config import LlamaConfig
from jaxprompt.models.t5 import T5
from jaxprompt.models.t5_config import T5Config
from jaxprompt.prompts.prefix_tuning import AttentionShape
from jaxprompt.tasks.codec import TextCodec, bert_codec, decoder_codec, t5_codec
from jaxprompt.weights.bert_loader import abstract_bert_params, load_bert
from jaxprompt.weights.llama_loader import abstract_llama_params, load_llama
from jaxprompt.weights.t5_loader import abstract_t5_params, load_t5
from jaxprompt.weights.tokenizer import load_t5_tokenizer

FAMILIES = ("t5", "llama", "bert")
HEAD_OBJECTIVES = ("classify", "tag")
# Which prompt methods each family can train: an encoder has no text output, so only methods with
# a head; T5's decoder generates the answer, so P-tuning v2's head (on a pooled or per-token state)
# has no place there (P-tuning v2 targets encoders and decoder-only models).
_METHODS = {
    "t5": ("prompt_tuning", "prefix_tuning", "p_tuning", "multi_task", "none"),
    "llama": ("prompt_tuning", "prefix_tuning", "p_tuning", "p_tuning_v2", "multi_task", "none"),
    "bert": ("p_tuning_v2",),
}


@dataclasses.dataclass
class Backbone:
  """A loaded frozen backbone and what the rest of a run needs to know about it."""

  family: str
  config: T5Config | LlamaConfig | BertConfig
  frozen: Any
  tokenizer: Any
  codec: TextCodec

  @property
  def embed_dim(self) -> int:
    return self.config.d_model if self.family == "t5" else self.config.hidden_size

  @property
  def model(self) -> nn.Module:
    """The frozen model, deterministic (T5's training loss builds its own, with dropout)."""
    return {"t5": T5, "llama": Llama, "bert": Bert}[self.family](self.config)

  def check_method(self, method: str) -> None:
    if method not in _METHODS[self.family]:
      raise ValueError(
          f"config.prompt.method={method!r} does not apply to a {self.family} backbone;"
          f" it takes {_METHODS[self.family]}"
      )

  def attention_shapes(self, kinds: tuple[str, ...], key: str) -> tuple[AttentionShape, ...]:
    """The key/value shapes of the attention kinds `kinds` (empty: every kind the family has)."""
    c = self.config
    if self.family == "t5":
      every = (AttentionShape("encoder_self", c.num_encoder_layers, c.num_heads, c.d_kv),
               AttentionShape("decoder_self", c.num_decoder_layers, c.num_heads, c.d_kv),
               AttentionShape("decoder_cross", c.num_decoder_layers, c.num_heads, c.d_kv))
    elif self.family == "llama":  # grouped-query attention: prefixes for the key/value heads
      every = (AttentionShape("encoder_self", c.num_layers, c.num_kv_heads, c.head_dim),)
    else:
      every = (AttentionShape("encoder_self", c.num_layers, c.num_heads, c.head_dim),)
    by_kind = {shape.kind: shape for shape in every}
    unknown = [k for k in kinds if k not in by_kind]
    if unknown:
      raise ValueError(
          f"{key}={kinds}: a {self.family} backbone has the attention kinds {tuple(by_kind)}, not {unknown}"
      )
    return tuple(by_kind[k] for k in kinds) if kinds else every

  @property
  def embedding(self) -> jax.Array:
    """The input embedding table [vocab, embed] (what vocabulary-based prompt inits sample)."""
    return self.frozen["params"]["token_embedder"]["embedding"]

  def loss_sum(self, method: nn.Module, label_token_ids: jax.Array | None = None):
    """The training loss bound to the model: (prompt params, frozen, batch, rng) -> (sum, count)."""
    if getattr(method, "objective", None) in HEAD_OBJECTIVES:
      if label_token_ids is not None:
        raise ValueError("config.loss_over='label_words' scores verbalizer words; a method with a head has none")
      model = Bert(self.config, deterministic=self.config.dropout_rate == 0) if self.family == "bert" else self.model
      return functools.partial(head_steps.loss_sum, model=model, method=method)
    if self.family == "t5":
      if label_token_ids is not None:
        raise ValueError("config.loss_over='label_words' is implemented for decoder-only backbones")
      model = T5(self.config, deterministic=self.config.dropout_rate == 0)
      return functools.partial(seq2seq_steps.loss_sum, model=model, method=method)
    return functools.partial(causal_lm_steps.loss_sum, model=self.model, method=method,
                             label_token_ids=label_token_ids)

  def eval_step(self, method: nn.Module | None, max_decode_len: int):
    """The eval step: (prompt params, frozen, batch, label targets, label mask) -> outputs."""
    if getattr(method, "objective", None) in HEAD_OBJECTIVES:
      return functools.partial(head_steps.eval_step, model=self.model, method=method)
    if self.family == "t5":
      return functools.partial(seq2seq_steps.eval_step, model=self.model, method=method,
                               max_decode_len=max_decode_len)
    return functools.partial(causal_lm_steps.eval_step, model=self.model, method=method,
                             max_decode_len=max_decode_len, eos_id=self.codec.eos_id, pad_id=self.codec.pad_id)


def load_backbone(model: ml_collections.ConfigDict, mesh: Mesh, rules) -> Backbone:
  """The frozen backbone of `config.model`: streamed from its checkpoint, or randomly initialised."""
  if model.family not in FAMILIES:
    raise ValueError(f"config.model.family={model.family!r} is not one of {FAMILIES}")
  run_fields = dict(dtype=model.dtype, scan_layers=model.scan_layers, remat_policy=model.remat_policy,
                    dropout_rate=model.dropout_rate)
  if model.family == "t5":
    if model.checkpoint:
      config, frozen = load_t5(model.checkpoint, mesh=mesh, rules=rules, param_dtype=model.param_dtype, **run_fields)
    else:
      config = T5Config.preset(model.size, param_dtype=model.param_dtype, **run_fields)
      frozen = _random_init(T5(config), abstract_t5_params(config), mesh, rules, model.init_seed)
    tokenizer = load_t5_tokenizer(model.tokenizer or model.checkpoint)
    return Backbone("t5", config, frozen, tokenizer, t5_codec(tokenizer))

  if model.family == "bert":
    return _load_bert(model, mesh, rules, run_fields)
  tokenizer = _decoder_tokenizer(model.tokenizer or model.checkpoint)
  if model.checkpoint:
    config, frozen = load_llama(model.checkpoint, mesh=mesh, rules=rules, param_dtype=model.param_dtype, **run_fields)
  else:
    if model.size != "tiny":
      raise ValueError(f"config.model.size={model.size!r}: a random Llama backbone is only offered as 'tiny'")
    config = LlamaConfig.tiny(vocab_size=tokenizer.vocab_size, param_dtype=model.param_dtype, **run_fields)
    frozen = _random_init(Llama(config), abstract_llama_params(config), mesh, rules, model.init_seed,
                          method=Llama.forward_logits)
  return Backbone("llama", config, frozen, tokenizer, decoder_codec(tokenizer, model.add_bos))


def _load_bert(model: ml_collections.ConfigDict, mesh: Mesh, rules, run_fields: dict) -> Backbone:
  from jaxprompt.weights.hf_tokenizer import load_hf_tokenizer

  tokenizer = load_hf_tokenizer(model.tokenizer or model.checkpoint)
  if model.checkpoint:
    config, frozen = load_bert(model.checkpoint, mesh=mesh, rules=rules, param_dtype=model.param_dtype, **run_fields)
  else:
    if model.size != "tiny":
      raise ValueError(f"config.model.size={model.size!r}: a random BERT backbone is only offered as 'tiny'")
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_heads=4, num_layers=2,
                        intermediate_size=64, param_dtype=model.param_dtype, **run_fields)
    frozen = _random_init(Bert(config), abstract_bert_params(config), mesh, rules, model.init_seed)
  return Backbone("bert", config, frozen, tokenizer, bert_codec(tokenizer))


@functools.lru_cache(maxsize=4)  # a GGUF's vocabulary takes seconds to rebuild; tokenizers are read-only
def _decoder_tokenizer(source: str):
  if str(source).endswith(".gguf"):
    from jaxprompt.weights.gguf_tokenizer import gguf_tokenizer

    return gguf_tokenizer(source)
  from jaxprompt.weights.hf_tokenizer import load_hf_tokenizer

  return load_hf_tokenizer(source)


def _random_init(module: nn.Module, boxed_abstract: Any, mesh: Mesh, rules, seed: int, method=None) -> Any:
  """Random params created directly in their shardings (tests and demos without a checkpoint)."""
  shardings = sharding_lib.logical_to_shardings(boxed_abstract, mesh, rules)
  ids = jnp.zeros((1, 1), jnp.int32)
  if isinstance(module, T5):
    init = lambda key: nn.meta.unbox(module.init(key, ids, ids > 0, ids)["params"])
  elif isinstance(module, Bert):
    init = lambda key: nn.meta.unbox(module.init(key, ids, ids > 0)["params"])
  else:
    init = lambda key: nn.meta.unbox(module.init(key, ids, ids > 0, method=method)["params"])
  return {"params": jax.jit(init, out_shardings=shardings)(jax.random.key(seed))}
