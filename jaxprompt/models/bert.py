"""BERT / RoBERTa / XLM-RoBERTa (post-LN encoders) as a frozen backbone that accepts a `Prompt`.

    model = Bert(config)
    out = model.apply(params, input_ids, input_mask, token_type_ids, prompt=prompt)
    out.hidden_BxTxD, out.mask_BxT, out.pooled_BxD          # pooled: None without a pooler
    logits = model.apply(params, out.hidden_BxTxD, method=Bert.mlm_logits)   # MLM checkpoints
    sentence_BxD = l2_normalize(mean_pool(out.hidden_BxTxD, out.mask_BxT))   # sentence-transformers

Parameter layout (scanned; unscanned has encoder/layers_0, layers_1, ... instead of a `layers` axis):

    token_embedder/embedding                          [vocab, embed]   (also the MLM decoder: tied)
    embeddings/position_embedding                     [positions, embed]
    embeddings/token_type_embedding                   [token_types, embed]
    embeddings/norm/{scale,bias}                      [embed]
    encoder/layers/attention/{query,key,value}/kernel [layers, embed, heads, kv]; bias [layers, heads, kv]
    encoder/layers/attention/out/kernel               [layers, heads, kv, embed]; bias [layers, embed]
    encoder/layers/attention_norm/{scale,bias}        [layers, embed]
    encoder/layers/mlp/wi/kernel                      [layers, embed, mlp];      bias [layers, mlp]
    encoder/layers/mlp/wo/kernel                      [layers, mlp, embed];      bias [layers, embed]
    encoder/layers/mlp_norm/{scale,bias}              [layers, embed]
    pooler/dense/{kernel,bias}                        [embed, mlp], [mlp]       (pooler checkpoints)
    mlm_head/dense/{kernel,bias}                      [embed, mlp], [mlp]       (MLM checkpoints)
    mlm_head/norm/{scale,bias}                        [embed]
    mlm_head/bias                                     [vocab]

The D -> D denses (pooler, MLM transform) name their output axis `mlp`: a logical name may appear
only once per array, and `mlp` makes them column-parallel like the feed-forward input projection.

Prompt semantics. Soft tokens stand where Hugging Face / PEFT put prompt embeddings, in
`inputs_embeds` before the embeddings module: they get position and token-type (0, as PEFT pads
token_type_ids with zeros) embeddings and the embedding LayerNorm, like any token. The pooler reads
the first slot: `insert_at_B=1` keeps [CLS] there; prompts inserted first (PEFT's way) should mask
their padding on the right. Invalid soft-token slots take no position.
Positions: BERT's are slot indices counting every token (padding included, as Hugging Face does);
RoBERTa's count only valid slots from padding_idx + 1, and padding takes padding_idx (Hugging Face's
positions from input_ids). Key/value prefixes (`prompt.encoder_self`) are extra keys and values in
every layer, masked by their own mask; they take no position, so the tokens keep the positions they
were pretrained with. (Hugging Face's BertModel given past_key_values instead starts the tokens'
positions after the prefix length, which is what PEFT's prefix tuning on BERT runs with.)
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct
from jax.ad_checkpoint import checkpoint_name

from jaxprompt.models import layers
from jaxprompt.models.bert_config import BertConfig
from jaxprompt.models.prompt import PlacedSequence, Prompt, place_soft_tokens, prefix_mask, sequence_positions

# BERT's initializer_range: the init only matters for tests and abstract shapes (weights are loaded).
_INIT = nn.initializers.normal(stddev=0.02)


class BertOutput(struct.PyTreeNode):
  """The last layer's states of every slot (soft tokens included), their validity, the pooled [CLS]."""

  hidden_BxTxD: jax.Array
  mask_BxT: jax.Array
  pooled_BxD: jax.Array | None = None  # None when the checkpoint has no pooler


def _norm(c: BertConfig, name: str) -> layers.LayerNorm:
  return layers.LayerNorm(c.layer_norm_eps, c.dtype, c.param_dtype, name=name)


def _dense(c: BertConfig, out_shape, in_axes, out_axes, name: str) -> layers.BiasedProjection:
  return layers.BiasedProjection(
      tuple(out_shape), tuple(in_axes), tuple(out_axes), _INIT, c.dtype, c.param_dtype, name=name
  )


def position_ids(c: BertConfig, placed: PlacedSequence) -> jax.Array:
  """Position index of every slot, [1, T] when shared across the batch, else [B, T]."""
  length = placed.mask_BxT.shape[1]
  if length + c.position_offset > c.max_position_embeddings:
    raise ValueError(
        f"a sequence of {length} slots (tokens + soft tokens) needs positions up to "
        f"{length + c.position_offset - 1}, but the model has {c.max_position_embeddings} position embeddings"
    )
  if c.position_offset == 0:
    return sequence_positions(length, placed.position_weight_BxT)
  valid_BxT = placed.mask_BxT.astype(jnp.int32)
  counted_BxT = jnp.cumsum(valid_BxT, axis=1, dtype=jnp.int32) - 1 + c.position_offset
  return jnp.where(placed.mask_BxT, counted_BxT, c.position_offset - 1)


class BertEmbeddings(nn.Module):
  """(word + token type) + position embeddings with the soft tokens in place, then LayerNorm.

  `width`: the tables' width (and the soft tokens'), hidden_size for BERT; ALBERT's factorised
  embeddings are narrower (embedding_size) and projected to the layers' width after this.
  """

  config: BertConfig
  token_embedder: layers.Embed
  deterministic: bool = True
  width: int | None = None  # None: config.hidden_size

  @nn.compact
  def __call__(self, input_ids_BxL, input_mask_BxL, token_type_ids_BxL, prompt: Prompt | None):
    c = self.config
    width = self.width or c.hidden_size
    table = lambda name, axis, rows: self.param(
        name, nn.with_logical_partitioning(_INIT, (axis, "embed")), (rows, width), c.param_dtype
    )
    type_table = table("token_type_embedding", "token_types", c.type_vocab_size)
    position_table = table("position_embedding", "positions", c.max_position_embeddings)

    if token_type_ids_BxL is None:
      token_type_ids_BxL = jnp.zeros_like(input_ids_BxL)
    # Hugging Face's order of additions, (word + type) + position, so float32 results agree bit for bit.
    x_BxLxD = self.token_embedder(input_ids_BxL) + jnp.take(type_table, token_type_ids_BxL, axis=0).astype(c.dtype)
    if prompt is not None and prompt.embeddings_BxPxD is not None:
      if prompt.embeddings_BxPxD.shape[-1] != width:
        expected = f"embedding_size={width} (not hidden_size={c.hidden_size})" if self.width else f"hidden_size={width}"
        raise ValueError(
            f"soft tokens of width {prompt.embeddings_BxPxD.shape[-1]}: this model's soft tokens live in its "
            f"word-embedding space, of width {expected}"
        )
      soft = prompt.embeddings_BxPxD.astype(c.dtype) + type_table[0].astype(c.dtype)
      prompt = prompt.replace(embeddings_BxPxD=soft)
    placed = place_soft_tokens(x_BxLxD, input_mask_BxL, prompt)
    x_BxTxD = placed.x_BxTxD + jnp.take(position_table, position_ids(c, placed), axis=0).astype(c.dtype)
    x_BxTxD = _norm(c, "norm")(x_BxTxD)
    x_BxTxD = nn.Dropout(c.dropout_rate, deterministic=self.deterministic)(x_BxTxD)
    return layers.constrain(x_BxTxD, ("batch", "length", "embed")), placed.mask_BxT


class BertAttention(nn.Module):
  """Multi-head self-attention with biases, logits scaled by 1/sqrt(head_dim)."""

  config: BertConfig
  deterministic: bool = True

  @nn.compact
  def __call__(self, x_BxLxD, mask_Bx1x1xS, prefix_kv: tuple[jax.Array, jax.Array] | None):
    c = self.config
    heads, axes = (c.num_heads, c.head_dim), ("batch", "length", "heads", "kv")
    project = lambda name: layers.constrain(
        checkpoint_name(_dense(c, heads, ("embed",), ("heads", "kv"), name)(x_BxLxD), name), axes
    )
    q, k, v = project("query"), project("key"), project("value")
    if prefix_kv is not None:  # prefix keys/values go first, like Hugging Face's past_key_values
      batch = x_BxLxD.shape[0]
      pk, pv = (jnp.broadcast_to(t, (batch,) + t.shape[1:]).astype(k.dtype) for t in prefix_kv)
      k = jnp.concatenate([pk, k], axis=1)
      v = jnp.concatenate([pv, v], axis=1)
    dropout = None
    if not self.deterministic and c.dropout_rate > 0:
      dropout = nn.Dropout(c.dropout_rate, deterministic=False)
    out = layers.dot_product_attention(q, k, v, None, mask_Bx1x1xS, c.head_dim**-0.5, dropout)
    out = _dense(c, (c.hidden_size,), ("heads", "kv"), ("embed",), "out")(out)
    return checkpoint_name(out, "attention_out")


class BertMLP(nn.Module):
  """dense -> activation -> dense (no dropout inside, as in BERT)."""

  config: BertConfig

  @nn.compact
  def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
    c = self.config
    h = layers.activation(c.activation)(_dense(c, (c.intermediate_size,), ("embed",), ("mlp",), "wi")(x_BxLxD))
    h = layers.constrain(h, ("batch", "length", "mlp"))
    return _dense(c, (c.hidden_size,), ("mlp",), ("embed",), "wo")(h)


class BertLayer(nn.Module):
  """Post-LN: x = norm(x + attention(x)); x = norm(x + mlp(x))."""

  config: BertConfig
  deterministic: bool = True

  @nn.compact
  def __call__(self, x_BxLxD, mask_Bx1x1xS, prefix_kv):
    c, det = self.config, self.deterministic
    drop = nn.Dropout(c.dropout_rate, deterministic=det)
    attended = BertAttention(c, det, name="attention")(x_BxLxD, mask_Bx1x1xS, prefix_kv)
    x_BxLxD = _norm(c, "attention_norm")(x_BxLxD + drop(attended))
    x_BxLxD = _norm(c, "mlp_norm")(x_BxLxD + drop(BertMLP(c, name="mlp")(x_BxLxD)))
    return layers.constrain(x_BxLxD, ("batch", "length", "embed")), None


class BertEncoder(nn.Module):
  """The layer stack, scanned or unrolled; prefix keys/values enter every layer through the mask."""

  config: BertConfig
  deterministic: bool = True

  @nn.compact
  def __call__(self, x_BxTxD, mask_BxT, prefix):
    c = self.config
    key_valid_BxS = jnp.concatenate([prefix_mask(prefix, x_BxTxD.shape[0]), mask_BxT.astype(bool)], axis=1)
    per_layer_kv = None if prefix is None else (prefix.keys_LxBxPxHxK, prefix.values_LxBxPxHxK)
    stack = layers.layer_stack(
        BertLayer, c.num_layers, c.scan_layers, c.remat_policy,
        num_broadcast_args=1, num_per_layer_args=1, name="layers", config=c, deterministic=self.deterministic,
    )
    x_BxTxD, _ = stack(x_BxTxD, key_valid_BxS[:, None, None, :], per_layer_kv)
    return x_BxTxD


class BertPooler(nn.Module):
  """tanh(dense(state of the first slot)): BERT's pooled [CLS] output."""

  config: BertConfig

  @nn.compact
  def __call__(self, x_BxTxD: jax.Array) -> jax.Array:
    c = self.config
    pooled = jnp.tanh(_dense(c, (c.hidden_size,), ("embed",), ("mlp",), "dense")(x_BxTxD[:, 0]))
    return layers.constrain(pooled, ("batch", "embed"))


class BertMLMHead(nn.Module):
  """dense -> activation -> LayerNorm, then the tied word embeddings plus a per-token bias."""

  config: BertConfig
  token_embedder: layers.Embed

  @nn.compact
  def __call__(self, x_BxTxD: jax.Array, token_ids_W: jax.Array | None = None) -> jax.Array:
    c = self.config
    h = layers.activation(c.mlm_activation)(_dense(c, (c.hidden_size,), ("embed",), ("mlp",), "dense")(x_BxTxD))
    h = _norm(c, "norm")(h)
    bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("vocab",)), (c.vocab_size,), c.param_dtype)
    return layers.tied_logits(self.token_embedder, h, bias, token_ids_W)


class Bert(nn.Module):
  """A BERT-style encoder. `deterministic=False` turns on dropout (needs a 'dropout' rng)."""

  config: BertConfig
  deterministic: bool = True

  def setup(self):
    c = self.config
    self.token_embedder = layers.Embed(c.vocab_size, c.hidden_size, c.dtype, c.param_dtype, _INIT)
    self.embeddings = BertEmbeddings(c, self.token_embedder, self.deterministic)
    self.encoder = BertEncoder(c, self.deterministic)
    self.pooler = BertPooler(c) if c.has_pooler else None
    self.mlm_head = BertMLMHead(c, self.token_embedder) if c.has_mlm_head else None

  def __call__(self, input_ids_BxL, input_mask_BxL, token_type_ids_BxL=None, prompt: Prompt | None = None) -> BertOutput:
    """States [B, P+L, D] of the last layer (soft tokens in place), their mask, the pooled output."""
    x_BxTxD, mask_BxT = self.embeddings(input_ids_BxL, input_mask_BxL, token_type_ids_BxL, prompt)
    x_BxTxD = self.encoder(x_BxTxD, mask_BxT, None if prompt is None else prompt.encoder_self)
    pooled_BxD = None if self.pooler is None else self.pooler(x_BxTxD)
    if self.mlm_head is not None and self.is_initializing():
      self.mlm_head(x_BxTxD)  # creates the head's params; its logits come from mlm_logits
    return BertOutput(x_BxTxD, mask_BxT, pooled_BxD)

  def mlm_logits(self, hidden_BxTxD: jax.Array, token_ids_W: jax.Array | None = None) -> jax.Array:
    """Float32 logits of the given states (all slots, or only those gathered at [MASK]s) over the
    vocabulary, or over just the tokens `token_ids_W` (a verbalizer's label words): [..., V] or [..., W]."""
    if self.mlm_head is None:
      raise ValueError(f"this {type(self).__name__} has no MLM head (has_mlm_head=False); load a *ForMaskedLM checkpoint")
    return self.mlm_head(hidden_BxTxD, token_ids_W)


def mean_pool(hidden_BxTxD: jax.Array, mask_BxT: jax.Array) -> jax.Array:
  """sentence-transformers' mean pooling: the float32 average of the valid slots' states."""
  weight_BxTx1 = mask_BxT.astype(jnp.float32)[..., None]
  total_BxD = jnp.sum(hidden_BxTxD.astype(jnp.float32) * weight_BxTx1, axis=1)
  return total_BxD / jnp.maximum(jnp.sum(weight_BxTx1, axis=1), 1e-9)


def l2_normalize(x_BxD: jax.Array, epsilon: float = 1e-12) -> jax.Array:
  """x / max(|x|, eps) along the last axis (torch.nn.functional.normalize, sentence-transformers' Normalize)."""
  norm_Bx1 = jnp.linalg.norm(x_BxD.astype(jnp.float32), axis=-1, keepdims=True)
  return x_BxD / jnp.maximum(norm_Bx1, epsilon)

