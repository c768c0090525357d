"""T5 (v1.0, v1.1, LM-adapted, Flan-T5, mT5) as a frozen backbone that accepts a `Prompt`.

    model = T5(config)
    logits = model.apply(params, input_ids, input_mask, decoder_input_ids, prompt=prompt)

Parameter layout (scanned; unscanned has layers_0, layers_1, ... instead of a `layers` axis):

    token_embedder/embedding                         [vocab, embed]
    encoder/relpos_bias/embedding                    [relpos_buckets, heads]
    encoder/layers/attention/{query,key,value}/kernel [layers, embed, heads, kv]
    encoder/layers/attention/out/kernel              [layers, heads, kv, embed]
    encoder/layers/mlp/{wi | wi_0, wi_1}/kernel      [layers, embed, mlp]
    encoder/layers/mlp/wo/kernel                     [layers, mlp, embed]
    encoder/layers/{pre_attention_norm,pre_mlp_norm}/scale
    encoder/final_norm/scale
    decoder/...: the same with self_attention, cross_attention and their three norms
    decoder/logits_dense/kernel                      [embed, vocab]   (untied checkpoints only)

Prompt positions and T5's relative position bias: the bias depends only on key position minus query
position. Soft tokens are ordinary positions (a length-P prompt moves the text to positions P...);
key/value prefixes take the P positions just before the sequence (-P ... -1), so they are "near" the
first tokens; invalid prompt slots take no position (see models/prompt.py). Cross-attention has no
position bias in T5, so cross-attention prefixes enter only through the mask.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.ad_checkpoint import checkpoint_name

from jaxprompt.models import layers
from jaxprompt.models.prompt import (
    Prompt,
    place_soft_tokens,
    prefix_mask,
    prefix_positions,
    sequence_positions,
)
from jaxprompt.models.t5_config import T5Config


@functools.lru_cache(maxsize=None)
def relative_position_buckets(
    bidirectional: bool, num_buckets: int, max_distance: int
) -> tuple[np.ndarray, int]:
  """Bucket of every relative distance in [-max_distance, max_distance], and that offset.

  Computed once on the host with the float32 arithmetic of Mesh TF / Hugging Face, so that the
  bucket boundaries (where log ratios are whole numbers) fall exactly where theirs do. Distances
  beyond max_distance saturate, so clipping to the table's range is exact.
  """
  n = np.arange(-max_distance, max_distance + 1)
  buckets = np.zeros_like(n)
  if bidirectional:
    num_buckets //= 2
    buckets += (n > 0) * num_buckets
    n = np.abs(n)
  else:
    n = -np.minimum(n, 0)
  max_exact = num_buckets // 2
  with np.errstate(divide="ignore"):
    scaled = (
        np.log(n.astype(np.float32) / np.float32(max_exact))
        / np.float32(np.log(max_distance / max_exact))
        * np.float32(num_buckets - max_exact)
    )
  large = max_exact + np.where(n >= max_exact, scaled, 0).astype(np.int64)
  large = np.minimum(large, num_buckets - 1)
  buckets += np.where(n < max_exact, n, large)
  return buckets.astype(np.int32), max_distance


class RelativePositionBias(nn.Module):
  """T5's learned per-head bias of bucketed relative positions, shared by all layers of a stack."""

  config: T5Config
  bidirectional: bool

  @nn.compact
  def __call__(self, query_pos_BxQ: jax.Array, key_pos_BxS: jax.Array) -> jax.Array:
    c = self.config
    table = self.param(
        "embedding",
        nn.with_logical_partitioning(layers.scaled_normal(c.d_model), ("relpos_buckets", "heads")),
        (c.relative_attention_num_buckets, c.num_heads),
        c.param_dtype,
    )
    lookup, offset = relative_position_buckets(
        self.bidirectional, c.relative_attention_num_buckets, c.relative_attention_max_distance
    )
    relative_BxQxS = key_pos_BxS[:, None, :] - query_pos_BxQ[:, :, None]
    bucket_BxQxS = jnp.asarray(lookup)[jnp.clip(relative_BxQxS, -offset, offset) + offset]
    bias_BxQxSxH = jnp.take(table.astype(jnp.float32), bucket_BxQxS, axis=0)
    return jnp.transpose(bias_BxQxSxH, (0, 3, 1, 2))


class T5Attention(nn.Module):
  """Multi-head attention without logit scaling (T5 folds 1/sqrt(d_kv) into the query init)."""

  config: T5Config
  deterministic: bool = True

  def setup(self):
    c = self.config
    proj = functools.partial(layers.Projection, dtype=c.dtype, param_dtype=c.param_dtype)
    heads = (c.num_heads, c.d_kv)
    self.query = proj(heads, ("embed",), ("heads", "kv"), layers.scaled_normal(c.d_model * c.d_kv))
    self.key = proj(heads, ("embed",), ("heads", "kv"), layers.scaled_normal(c.d_model))
    self.value = proj(heads, ("embed",), ("heads", "kv"), layers.scaled_normal(c.d_model))
    self.out = proj((c.d_model,), ("heads", "kv"), ("embed",), layers.scaled_normal(c.num_heads * c.d_kv))
    self.dropout = nn.Dropout(c.dropout_rate, deterministic=self.deterministic)

  def keys_values(self, source_BxSxD: jax.Array) -> tuple[jax.Array, jax.Array]:
    axes = ("batch", "length", "heads", "kv")
    k = layers.constrain(checkpoint_name(self.key(source_BxSxD), "key"), axes)
    v = layers.constrain(checkpoint_name(self.value(source_BxSxD), "value"), axes)
    return k, v

  def __call__(
      self,
      x_BxQxD: jax.Array,
      k_BxSxHxK: jax.Array,
      v_BxSxHxK: jax.Array,
      bias_BxHxQxS: jax.Array | None,
      mask_Bx1xQxS: jax.Array,
      prefix_kv: tuple[jax.Array, jax.Array] | None,
  ) -> jax.Array:
    q = layers.constrain(checkpoint_name(self.query(x_BxQxD), "query"), ("batch", "length", "heads", "kv"))
    if prefix_kv is not None:  # prefix keys/values go first: their positions precede the sequence
      batch = x_BxQxD.shape[0]
      pk, pv = (jnp.broadcast_to(t, (batch,) + t.shape[1:]).astype(k_BxSxHxK.dtype) for t in prefix_kv)
      k_BxSxHxK = jnp.concatenate([pk, k_BxSxHxK], axis=1)
      v_BxSxHxK = jnp.concatenate([pv, v_BxSxHxK], axis=1)
    dropout = None if self.deterministic or self.config.dropout_rate == 0 else self.dropout
    out = layers.dot_product_attention(q, k_BxSxHxK, v_BxSxHxK, bias_BxHxQxS, mask_Bx1xQxS, 1.0, dropout)
    return checkpoint_name(self.out(out), "attention_out")


class T5MLP(nn.Module):
  """ReLU (v1.0) or gated-GELU (v1.1) feed-forward block."""

  config: T5Config
  deterministic: bool = True

  @nn.compact
  def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
    c = self.config
    proj = functools.partial(layers.Projection, dtype=c.dtype, param_dtype=c.param_dtype)
    act = layers.activation(c.activation)
    wi = lambda name: proj((c.d_ff,), ("embed",), ("mlp",), layers.scaled_normal(c.d_model), name=name)
    if c.is_gated:
      h = act(wi("wi_0")(x_BxLxD)) * wi("wi_1")(x_BxLxD)
    else:
      h = act(wi("wi")(x_BxLxD))
    h = layers.constrain(h, ("batch", "length", "mlp"))
    h = nn.Dropout(c.dropout_rate, deterministic=self.deterministic)(h)
    return proj((c.d_model,), ("mlp",), ("embed",), layers.scaled_normal(c.d_ff), name="wo")(h)


def _norm(c: T5Config, name: str) -> layers.RMSNorm:
  return layers.RMSNorm(c.layer_norm_epsilon, c.dtype, c.param_dtype, name=name)


class T5EncoderLayer(nn.Module):
  config: T5Config
  deterministic: bool = True

  @nn.compact
  def __call__(self, x_BxLxD, bias_BxHxLxS, mask_Bx1xLxS, prefix_kv):
    c, det = self.config, self.deterministic
    drop = nn.Dropout(c.dropout_rate, deterministic=det)
    attention = T5Attention(c, det, name="attention")
    h = _norm(c, "pre_attention_norm")(x_BxLxD)
    k, v = attention.keys_values(h)
    x_BxLxD = x_BxLxD + drop(attention(h, k, v, bias_BxHxLxS, mask_Bx1xLxS, prefix_kv))
    x_BxLxD = x_BxLxD + drop(T5MLP(c, det, name="mlp")(_norm(c, "pre_mlp_norm")(x_BxLxD)))
    return layers.constrain(x_BxLxD, ("batch", "length", "embed")), None


class LayerCache(struct.PyTreeNode):
  """One decoder layer's decoding state (with a leading layer axis when it is the whole stack's)."""

  self_keys: jax.Array  # [B, max_decode_len, H, K]
  self_values: jax.Array
  cross_keys: jax.Array | None = None  # [B, encoder_len, H, K]; None until the first step
  cross_values: jax.Array | None = None


class DecodeCache(struct.PyTreeNode):
  """Key/value cache of the whole decoder, and the position the next token is written at."""

  layers: LayerCache  # leaves [layers, ...]
  index: jax.Array  # int32 scalar


class T5DecoderLayer(nn.Module):
  config: T5Config
  deterministic: bool = True

  @nn.compact
  def __call__(
      self,
      y_BxTxD,
      encoded_BxSxD,
      self_bias_BxHxTxT,
      self_mask_Bx1xTxT,
      cross_mask_Bx1xTxS,
      index,
      self_prefix_kv,
      cross_prefix_kv,
      cache: LayerCache | None,
  ):
    c, det = self.config, self.deterministic
    drop = nn.Dropout(c.dropout_rate, deterministic=det)
    self_attention = T5Attention(c, det, name="self_attention")
    cross_attention = T5Attention(c, det, name="cross_attention")

    h = _norm(c, "pre_self_attention_norm")(y_BxTxD)
    k, v = self_attention.keys_values(h)
    if cache is not None:  # write this step's keys/values at `index`, attend over the whole buffer
      k = jax.lax.dynamic_update_slice_in_dim(cache.self_keys, k.astype(cache.self_keys.dtype), index, 1)
      v = jax.lax.dynamic_update_slice_in_dim(cache.self_values, v.astype(cache.self_values.dtype), index, 1)
    y_BxTxD = y_BxTxD + drop(self_attention(h, k, v, self_bias_BxHxTxT, self_mask_Bx1xTxT, self_prefix_kv))

    h = _norm(c, "pre_cross_attention_norm")(y_BxTxD)
    if cache is not None and cache.cross_keys is not None:
      ck, cv = cache.cross_keys, cache.cross_values
    else:
      ck, cv = cross_attention.keys_values(encoded_BxSxD)
    y_BxTxD = y_BxTxD + drop(cross_attention(h, ck, cv, None, cross_mask_Bx1xTxS, cross_prefix_kv))
    y_BxTxD = y_BxTxD + drop(T5MLP(c, det, name="mlp")(_norm(c, "pre_mlp_norm")(y_BxTxD)))
    y_BxTxD = layers.constrain(y_BxTxD, ("batch", "length", "embed"))
    new_cache = None if cache is None else LayerCache(k, v, ck, cv)
    return y_BxTxD, new_cache


def _per_layer_kv(prefix) -> tuple[jax.Array, jax.Array] | None:
  return None if prefix is None else (prefix.keys_LxBxPxHxK, prefix.values_LxBxPxHxK)


class T5Encoder(nn.Module):
  config: T5Config
  embedder: layers.Embed
  deterministic: bool = True

  @nn.compact
  def __call__(self, input_ids_BxL, input_mask_BxL, prompt: Prompt | None):
    c, det = self.config, self.deterministic
    placed = place_soft_tokens(self.embedder(input_ids_BxL), input_mask_BxL, prompt)
    batch, length = placed.mask_BxT.shape
    prefix = None if prompt is None else prompt.encoder_self

    query_pos = sequence_positions(length, placed.position_weight_BxT)
    key_pos = _concat_broadcast(prefix_positions(prefix), query_pos)
    bias = RelativePositionBias(c, bidirectional=True, name="relpos_bias")(query_pos, key_pos)
    key_valid_BxS = jnp.concatenate([prefix_mask(prefix, batch), placed.mask_BxT], axis=1)
    mask_Bx1x1xS = key_valid_BxS[:, None, None, :]

    x = nn.Dropout(c.dropout_rate, deterministic=det)(placed.x_BxTxD)
    x = layers.constrain(x, ("batch", "length", "embed"))
    stack = layers.layer_stack(
        T5EncoderLayer, c.num_encoder_layers, c.scan_layers, c.remat_policy,
        num_broadcast_args=2, num_per_layer_args=1, name="layers", config=c, deterministic=det,
    )
    x, _ = stack(x, bias, mask_Bx1x1xS, _per_layer_kv(prefix))
    x = _norm(c, "final_norm")(x)
    return nn.Dropout(c.dropout_rate, deterministic=det)(x), placed.mask_BxT


class T5Decoder(nn.Module):
  config: T5Config
  embedder: layers.Embed
  deterministic: bool = True

  @nn.compact
  def __call__(
      self,
      decoder_input_ids_BxT,
      decoder_mask_BxT,
      encoded_BxSxD,
      encoder_mask_BxS,
      prompt: Prompt | None,
      cache: DecodeCache | None,
  ):
    c, det = self.config, self.deterministic
    batch, length = decoder_input_ids_BxT.shape
    self_prefix = None if prompt is None else prompt.decoder_self
    cross_prefix = None if prompt is None else prompt.decoder_cross

    # Teacher forcing attends over the T given tokens; a decode step over the cache's buffer.
    index = jnp.zeros((), jnp.int32) if cache is None else cache.index
    kv_length = length if cache is None else cache.layers.self_keys.shape[2]
    query_pos = index + jnp.arange(length, dtype=jnp.int32)[None, :]
    token_key_pos = jnp.arange(kv_length, dtype=jnp.int32)[None, :]
    key_pos = _concat_broadcast(prefix_positions(self_prefix), token_key_pos)
    bias = RelativePositionBias(c, bidirectional=False, name="relpos_bias")(query_pos, key_pos)
    causal_1xTxS = token_key_pos[:, None, :] <= query_pos[:, :, None]
    if decoder_mask_BxT is not None and cache is None:
      causal_1xTxS = causal_1xTxS & decoder_mask_BxT.astype(bool)[:, None, :]
    token_mask = jnp.broadcast_to(causal_1xTxS, (batch, length, kv_length))
    prefix_valid = jnp.broadcast_to(prefix_mask(self_prefix, batch)[:, None, :], (batch, length, self_prefix.length if self_prefix else 0))
    self_mask = jnp.concatenate([prefix_valid, token_mask], axis=2)[:, None]
    cross_valid = jnp.concatenate([prefix_mask(cross_prefix, batch), encoder_mask_BxS.astype(bool)], axis=1)
    cross_mask = cross_valid[:, None, None, :]

    y = nn.Dropout(c.dropout_rate, deterministic=det)(self.embedder(decoder_input_ids_BxT))
    y = layers.constrain(y, ("batch", "length", "embed"))
    stack = layers.layer_stack(
        T5DecoderLayer, c.num_decoder_layers, c.scan_layers, c.remat_policy,
        num_broadcast_args=5, num_per_layer_args=3, name="layers", config=c, deterministic=det,
    )
    y, new_layer_cache = stack(
        y, encoded_BxSxD, bias, self_mask, cross_mask, index,
        _per_layer_kv(self_prefix), _per_layer_kv(cross_prefix),
        None if cache is None else cache.layers,
    )
    y = nn.Dropout(c.dropout_rate, deterministic=det)(_norm(c, "final_norm")(y))
    if c.scale_decoder_outputs:  # v1.0 only
      y = y * (c.d_model**-0.5)
    if c.tie_word_embeddings:
      logits = self.embedder.attend(y)
    else:
      logits = layers.Projection(
          (c.vocab_size,), ("embed",), ("vocab",), layers.scaled_normal(c.d_model),
          c.dtype, c.param_dtype, output_dtype=jnp.float32, name="logits_dense",
      )(y)
    logits = layers.constrain(logits, ("batch", "length", "vocab"))
    new_cache = None if cache is None else DecodeCache(new_layer_cache, index + length)
    return logits, new_cache


def _concat_broadcast(a_BxP: jax.Array, b_BxT: jax.Array) -> jax.Array:
  batch = max(a_BxP.shape[0], b_BxT.shape[0])
  a = jnp.broadcast_to(a_BxP, (batch, a_BxP.shape[1]))
  b = jnp.broadcast_to(b_BxT, (batch, b_BxT.shape[1]))
  return jnp.concatenate([a, b], axis=1)


class T5(nn.Module):
  """Encoder-decoder T5. `deterministic=False` turns on dropout (needs a 'dropout' rng)."""

  config: T5Config
  deterministic: bool = True

  def setup(self):
    c = self.config
    self.token_embedder = layers.Embed(c.vocab_size, c.d_model, c.dtype, c.param_dtype)
    self.encoder = T5Encoder(c, self.token_embedder, self.deterministic)
    self.decoder = T5Decoder(c, self.token_embedder, self.deterministic)

  def __call__(self, input_ids, input_mask, decoder_input_ids, decoder_mask=None, prompt=None):
    """Teacher-forced logits [B, T, vocab] (float32)."""
    encoded, encoder_mask = self.encode(input_ids, input_mask, prompt)
    logits, _ = self.decoder(decoder_input_ids, decoder_mask, encoded, encoder_mask, prompt, None)
    return logits

  def encode(self, input_ids, input_mask, prompt=None):
    """Encoder states [B, P+L, D] and their validity mask (soft tokens included)."""
    return self.encoder(input_ids, input_mask, prompt)

  def decode(self, decoder_input_ids, encoded, encoder_mask, decoder_mask=None, prompt=None, cache=None):
    """Logits for the given decoder tokens; with a cache, one step at `cache.index`."""
    return self.decoder(decoder_input_ids, decoder_mask, encoded, encoder_mask, prompt, cache)

  def init_cache(self, batch: int, max_decode_len: int) -> DecodeCache:
    """An empty decoding cache; cross-attention keys/values are filled by the first step."""
    c = self.config
    shape = (c.num_decoder_layers, batch, max_decode_len, c.num_heads, c.d_kv)
    zeros = jnp.zeros(shape, jnp.dtype(c.dtype))
    return DecodeCache(LayerCache(zeros, zeros), jnp.zeros((), jnp.int32))


def shift_right(labels_BxT: jax.Array, decoder_start_token_id: int) -> jax.Array:
  """Decoder inputs for teacher forcing: the start token, then the labels but the last."""
  start = jnp.full(labels_BxT.shape[:1] + (1,), decoder_start_token_id, labels_BxT.dtype)
  return jnp.concatenate([start, labels_BxT[:, :-1]], axis=1)
