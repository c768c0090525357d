"""A Llama-style decoder (RoPE, RMS norm, SwiGLU, grouped-query attention) as a frozen backbone.

    model = Llama(config)
    hidden, mask, _ = model.apply(params, input_ids, input_mask, prompt=prompt)
    logits = model.apply(params, hidden, method=Llama.logits)

Parameter layout (scanned; unscanned has layers_0, layers_1, ...):

    token_embedder/embedding                          [vocab, embed]
    decoder/layers/attention/query/kernel             [layers, embed, heads, kv]
    decoder/layers/attention/{key,value}/kernel       [layers, embed, kv_heads, kv]
    decoder/layers/attention/out/kernel               [layers, heads, kv, embed]
    decoder/layers/mlp/{gate,up}/kernel               [layers, embed, mlp]
    decoder/layers/mlp/down/kernel                    [layers, mlp, embed]
    decoder/layers/{pre_attention_norm,pre_mlp_norm}/scale  [layers, embed]
    decoder/final_norm/scale                          [embed]
    lm_head/kernel                                    [embed, vocab]   (untied checkpoints only)

Positions are counted over valid slots only: position = number of valid slots before it (valid
prefix slots, valid soft tokens, real tokens). RoPE sees only relative positions, so left padding
by itself is harmless; but with a prompt in front of left-padded text, numbering slots 0..T-1
would put the soft tokens a padding-dependent distance away from the text. Counting valid slots
gives every example exactly the positions it has alone. Key/value prefixes are taken as
already-rotated keys (as Hugging Face's `past_key_values`, which PEFT's prefix tuning fills), and
occupy the positions just before the first token.
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.ad_checkpoint import checkpoint_name

from jaxprompt.models import layers, low_precision
from jaxprompt.models.llama_config import LlamaConfig
from jaxprompt.models.prompt import Prompt, place_soft_tokens, prefix_mask


@functools.lru_cache(maxsize=None)
def rope_inverse_frequencies(head_dim: int, theta: float, scaling: tuple | None) -> np.ndarray:
  """RoPE's inverse frequencies in float32, as Hugging Face computes them (and Llama 3.1's rescaling)."""
  inv_freq = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / head_dim))
  inv_freq = inv_freq.astype(np.float32)
  if scaling is None:
    return inv_freq
  s = dict(scaling)
  factor, low, high, context = s["factor"], s["low_freq_factor"], s["high_freq_factor"], s["original_max_position_embeddings"]
  wavelen = 2 * math.pi / inv_freq
  scaled = np.where(wavelen > context / low, inv_freq / factor, inv_freq)
  smooth = (context / wavelen - low) / (high - low)
  smoothed = (1 - smooth) * scaled / factor + smooth * scaled
  medium = ~(wavelen < context / high) & ~(wavelen > context / low)
  return np.where(medium, smoothed, scaled).astype(np.float32)


def apply_rope(x_BxTxHxK: jax.Array, positions_BxT: jax.Array, inv_freq_K2: np.ndarray) -> jax.Array:
  """Rotates each head's (first half, second half) pairs by position x frequency (HF's rotate_half)."""
  freqs_BxTxK2 = positions_BxT.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq_K2)
  angles_BxTx1xK = jnp.concatenate([freqs_BxTxK2, freqs_BxTxK2], axis=-1)[:, :, None, :]
  cos, sin = jnp.cos(angles_BxTx1xK).astype(x_BxTxHxK.dtype), jnp.sin(angles_BxTx1xK).astype(x_BxTxHxK.dtype)
  first, second = jnp.split(x_BxTxHxK, 2, axis=-1)
  return x_BxTxHxK * cos + jnp.concatenate([-second, first], axis=-1) * sin


class LayerCache(struct.PyTreeNode):
  keys: jax.Array  # [B, max_len, kv_heads, head_dim], already rotated
  values: jax.Array


class DecodeCache(struct.PyTreeNode):
  """The decoder's key/value cache, which slots hold valid tokens, and where the next ones go."""

  layers: LayerCache  # leaves [layers, ...]
  valid_BxS: jax.Array  # bool: slot holds a real token (left padding leaves invalid slots)
  index: jax.Array  # int32 scalar: the slot the next token is written to
  num_valid_B: jax.Array  # int32: valid tokens (soft tokens included) cached so far, per example

  def repeat_examples(self, repeats: int) -> DecodeCache:
    """Each example's cache `repeats` times in a row, e.g. to continue it with C candidates."""
    layers_ = jax.tree.map(lambda x: jnp.repeat(x, repeats, axis=1), self.layers)
    return DecodeCache(layers_, jnp.repeat(self.valid_BxS, repeats, 0), self.index, jnp.repeat(self.num_valid_B, repeats, 0))


class LlamaAttention(nn.Module):
  config: LlamaConfig

  @nn.compact
  def __call__(self, x_BxTxD, positions_BxT, mask_Bx1xTxS, prefix_kv, cache: LayerCache | None, index):
    c = self.config
    proj = functools.partial(layers.Projection, dtype=c.dtype, param_dtype=c.param_dtype,
                             kernel_init=layers.scaled_normal(c.hidden_size))
    q = proj((c.num_heads, c.head_dim), ("embed",), ("heads", "kv"), name="query")(x_BxTxD)
    k = proj((c.num_kv_heads, c.head_dim), ("embed",), ("kv_heads", "kv"), name="key")(x_BxTxD)
    v = proj((c.num_kv_heads, c.head_dim), ("embed",), ("kv_heads", "kv"), name="value")(x_BxTxD)
    inv_freq = rope_inverse_frequencies(c.head_dim, c.rope_theta, c.rope_scaling)
    q = checkpoint_name(apply_rope(q, positions_BxT, inv_freq), "query")
    k = checkpoint_name(apply_rope(k, positions_BxT, inv_freq), "key")
    v = checkpoint_name(v, "value")
    new_cache = None
    if cache is not None:  # write this call's keys/values at `index`, attend over the whole buffer
      k = jax.lax.dynamic_update_slice_in_dim(cache.keys, k.astype(cache.keys.dtype), index, 1)
      v = jax.lax.dynamic_update_slice_in_dim(cache.values, v.astype(cache.values.dtype), index, 1)
      new_cache = LayerCache(k, v)
    if prefix_kv is not None:
      batch = x_BxTxD.shape[0]
      pk, pv = (jnp.broadcast_to(t, (batch,) + t.shape[1:]).astype(k.dtype) for t in prefix_kv)
      k, v = jnp.concatenate([pk, k], axis=1), jnp.concatenate([pv, v], axis=1)
    groups = c.num_heads // c.num_kv_heads  # grouped-query attention: each kv head serves `groups` heads
    k, v = jnp.repeat(k, groups, axis=2), jnp.repeat(v, groups, axis=2)
    out = layers.dot_product_attention(q, k, v, None, mask_Bx1xTxS, c.head_dim**-0.5)
    out = proj((c.hidden_size,), ("heads", "kv"), ("embed",), name="out")(out)
    return checkpoint_name(out, "attention_out"), new_cache


class LlamaMLP(nn.Module):
  config: LlamaConfig

  @nn.compact
  def __call__(self, x_BxTxD):
    c = self.config
    proj = functools.partial(layers.Projection, dtype=c.dtype, param_dtype=c.param_dtype)
    up = lambda name: proj((c.intermediate_size,), ("embed",), ("mlp",), layers.scaled_normal(c.hidden_size), name=name)(x_BxTxD)
    h = layers.constrain(jax.nn.silu(up("gate")) * up("up"), ("batch", "length", "mlp"))
    return proj((c.hidden_size,), ("mlp",), ("embed",), layers.scaled_normal(c.intermediate_size), name="down")(h)


class LlamaLayer(nn.Module):
  config: LlamaConfig

  @nn.compact
  def __call__(self, x_BxTxD, positions_BxT, mask_Bx1xTxS, index, prefix_kv, cache):
    c = self.config
    norm = lambda name: layers.RMSNorm(c.rms_norm_eps, c.dtype, c.param_dtype, name=name)
    h, new_cache = LlamaAttention(c, name="attention")(
        norm("pre_attention_norm")(x_BxTxD), positions_BxT, mask_Bx1xTxS, prefix_kv, cache, index
    )
    x_BxTxD = x_BxTxD + h
    x_BxTxD = x_BxTxD + LlamaMLP(c, name="mlp")(norm("pre_mlp_norm")(x_BxTxD))
    return layers.constrain(x_BxTxD, ("batch", "length", "embed")), new_cache


class LlamaDecoder(nn.Module):
  config: LlamaConfig
  embedder: layers.Embed

  @nn.compact
  def __call__(self, input_ids_BxL, input_mask_BxL, prompt: Prompt | None, cache: DecodeCache | None):
    c = self.config
    placed = place_soft_tokens(self.embedder(input_ids_BxL), input_mask_BxL, prompt)
    batch, length = placed.mask_BxT.shape
    valid_BxT = placed.mask_BxT
    prefix = None if prompt is None else prompt.encoder_self
    prefix_valid_BxP = prefix_mask(prefix, batch)

    # Position = valid prefix slots + valid tokens before it (those already cached included).
    seen_B = jnp.zeros((batch,), jnp.int32) if cache is None else cache.num_valid_B
    before_B = jnp.sum(prefix_valid_BxP, axis=1, dtype=jnp.int32) + seen_B
    positions_BxT = jnp.maximum(before_B[:, None] + jnp.cumsum(valid_BxT, axis=1, dtype=jnp.int32) - 1, 0)
    if cache is None:
      key_valid_BxS = valid_BxT
      causal_1xTxS = jnp.tril(jnp.ones((length, length), bool))[None]
    else:  # the keys are the whole buffer: slots up to this call's last one, if they hold real tokens
      key_valid_BxS = jax.lax.dynamic_update_slice_in_dim(cache.valid_BxS, valid_BxT, cache.index, 1)
      slots = jnp.arange(cache.valid_BxS.shape[1])
      causal_1xTxS = (slots[None, :] <= cache.index + jnp.arange(length)[:, None])[None]
    token_mask = causal_1xTxS & key_valid_BxS[:, None, :]
    prefix_part = jnp.broadcast_to(prefix_valid_BxP[:, None, :], (batch, length, prefix_valid_BxP.shape[1]))
    mask_Bx1xTxS = jnp.concatenate([prefix_part, token_mask], axis=2)[:, None]

    x = layers.constrain(placed.x_BxTxD, ("batch", "length", "embed"))
    stack = layers.layer_stack(
        LlamaLayer, c.num_layers, c.scan_layers, c.remat_policy,
        num_broadcast_args=3, num_per_layer_args=2, name="layers", config=c,
    )
    index = jnp.zeros((), jnp.int32) if cache is None else cache.index
    prefix_kv = None if prefix is None else (prefix.keys_LxBxPxHxK, prefix.values_LxBxPxHxK)
    x, new_layers = stack(x, positions_BxT, mask_Bx1xTxS, index, prefix_kv, None if cache is None else cache.layers)
    x = layers.RMSNorm(c.rms_norm_eps, c.dtype, c.param_dtype, name="final_norm")(x)
    new_cache = None
    if cache is not None:
      num_valid = seen_B + jnp.sum(valid_BxT, axis=1, dtype=jnp.int32)
      new_cache = DecodeCache(new_layers, key_valid_BxS, cache.index + length, num_valid)
    return x, valid_BxT, new_cache


class Llama(nn.Module):
  """A decoder-only language model; `__call__` gives final hidden states, `logits` projects them."""

  config: LlamaConfig
  deterministic: bool = True

  def setup(self):
    c = self.config
    self.token_embedder = layers.Embed(c.vocab_size, c.hidden_size, c.dtype, c.param_dtype,
                                       nn.initializers.normal(stddev=0.02))
    self.decoder = LlamaDecoder(c, self.token_embedder, name="decoder")
    if not c.tie_word_embeddings:
      self.lm_head = layers.Projection((c.vocab_size,), ("embed",), ("vocab",), layers.scaled_normal(c.hidden_size),
                                       c.dtype, c.param_dtype, output_dtype=jnp.float32)

  def __call__(self, input_ids, input_mask, prompt=None, cache=None):
    """(hidden [B, P+L, D], validity mask [B, P+L], new cache or None)."""
    return self.decoder(input_ids, input_mask, prompt, cache)

  def forward_logits(self, input_ids, input_mask, prompt=None):
    """Next-token logits [B, P+L, vocab] (float32) of every position; also what `init` runs."""
    hidden, _, _ = self.decoder(input_ids, input_mask, prompt, None)
    return self.logits(hidden)

  def logits(self, hidden):
    """Next-token logits (float32) of hidden states of any leading shape."""
    if self.config.tie_word_embeddings:
      return self.token_embedder.attend(hidden)
    return self.lm_head(hidden)

  def logits_for(self, hidden_BxD, token_ids_C):
    """Logits [B, C] of only the given tokens (the output projection's C columns, not all V)."""
    if self.config.tie_word_embeddings:
      columns_DxC = jnp.take(self.token_embedder.embedding, token_ids_C, axis=0).T
    else:
      columns_DxC = jnp.take(self.lm_head.variables["params"]["kernel"], token_ids_C, axis=1)
    dtype = self.config.dtype
    return low_precision.einsum("bd,dc->bc", hidden_BxD.astype(dtype), columns_DxC.astype(dtype), jnp.float32)

  def init_cache(self, batch: int, max_len: int) -> DecodeCache:
    c = self.config
    zeros = jnp.zeros((c.num_layers, batch, max_len, c.num_kv_heads, c.head_dim), jnp.dtype(c.dtype))
    return DecodeCache(LayerCache(zeros, zeros), jnp.zeros((batch, max_len), bool),
                       jnp.zeros((), jnp.int32), jnp.zeros((batch,), jnp.int32))
