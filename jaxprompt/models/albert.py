"""ALBERT (factorised embeddings, layers shared across depth) as a frozen backbone that accepts a `Prompt`.

    model = Albert(config)
    out = model.apply(params, input_ids, input_mask, token_type_ids, prompt=prompt)   # a BertOutput
    out.hidden_BxTxD, out.mask_BxT, out.pooled_BxD          # pooled: None without a pooler
    logits = model.apply(params, out.hidden_BxTxD, method=Albert.mlm_logits)   # MLM checkpoints

Parameter layout. ALBERT shares its layers: `num_hidden_groups` groups of `inner_group_num` distinct
layers, outer layer i running group int(i / (num_layers / num_hidden_groups)). Each group's params
are stored once, whatever the depth, and the tree is the same scanned or not (no `layers` axis):

    token_embedder/embedding                          [vocab, embed=E]  (also the MLM decoder: tied)
    embeddings/position_embedding                     [positions, E]
    embeddings/token_type_embedding                   [token_types, E]
    embeddings/norm/{scale,bias}                      [E]
    encoder/mapping_in/{kernel,bias}                  [E, mlp=H], [H]   (HF embedding_hidden_mapping_in)
    encoder/groups_{g}/layers_{j}/attention/{query,key,value}/kernel [embed, heads, kv]; bias [heads, kv]
    encoder/groups_{g}/layers_{j}/attention/out/kernel               [heads, kv, embed]; bias [embed]
    encoder/groups_{g}/layers_{j}/attention_norm/{scale,bias}        [embed]
    encoder/groups_{g}/layers_{j}/mlp/{wi,wo}, mlp_norm              as in BERT
    pooler/dense/{kernel,bias}                        [H, H]            (AlbertModel checkpoints)
    mlm_head/dense/{kernel,bias}                      [embed=H, mlp=E]  (MLM checkpoints)
    mlm_head/norm/{scale,bias}                        [E]
    mlm_head/bias                                     [vocab]

Both E and H are the logical axis `embed`; the E <-> H denses name their output `mlp` (a name may
appear only once per array), like BERT's D -> D denses.

Prompt semantics are BERT's (see models/bert.py). Soft tokens live in the word-embedding space, so
`prompt.embeddings_BxPxD` has width `config.embedding_size` (E), not hidden_size: they are what
Hugging Face / PEFT pass as `inputs_embeds` to ALBERT, and get position and token-type (0)
embeddings and the embedding LayerNorm like tokens. Key/value prefixes (`prompt.encoder_self`) come
one per self-attention application, [config.num_attention_layers, B, P, heads, head_dim]
(num_layers * inner_group_num: a shared layer applied 12 times takes 12 different prefixes).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxprompt.models import layers
from jaxprompt.models.albert_config import AlbertConfig
from jaxprompt.models.bert import Bert, BertAttention, BertEmbeddings, BertMLP, BertPooler
from jaxprompt.models.prompt import KVPrefix, prefix_mask

# ALBERT's initializer_range: the init only matters for tests and abstract shapes (weights are loaded).
_INIT = nn.initializers.normal(stddev=0.02)


def _norm(c: AlbertConfig, name: str) -> layers.LayerNorm:
  return layers.LayerNorm(c.layer_norm_eps, c.dtype, c.param_dtype, name=name)


def _dense(c: AlbertConfig, width: int, out_axis: str, name: str) -> layers.BiasedProjection:
  return layers.BiasedProjection((width,), ("embed",), (out_axis,), _INIT, c.dtype, c.param_dtype, name=name)


class AlbertLayer(nn.Module):
  """Post-LN, BERT's attention and MLP: x = norm(x + attention(x)); x = norm(x + mlp(x)).

  Unlike BERT, Hugging Face's ALBERT has no dropout on the MLP output.
  """

  config: AlbertConfig
  deterministic: bool = True

  @nn.compact
  def __call__(self, x_BxLxD, mask_Bx1x1xS, prefix_kv):
    c, det = self.config, self.deterministic
    attended = BertAttention(c, det, name="attention")(x_BxLxD, mask_Bx1x1xS, prefix_kv)
    x_BxLxD = _norm(c, "attention_norm")(x_BxLxD + nn.Dropout(c.dropout_rate, deterministic=det)(attended))
    x_BxLxD = _norm(c, "mlp_norm")(x_BxLxD + BertMLP(c, name="mlp")(x_BxLxD))
    return layers.constrain(x_BxLxD, ("batch", "length", "embed"))


class AlbertGroup(nn.Module):
  """One parameter group: its `inner_group_num` layers in order; prefixes [inner, B, P, H, K] or None."""

  config: AlbertConfig
  deterministic: bool = True

  @nn.compact
  def __call__(self, x_BxLxD, mask_Bx1x1xS, prefix_kv):
    for j in range(self.config.inner_group_num):
      layer_kv = None if prefix_kv is None else jax.tree.map(lambda t: t[j], prefix_kv)
      x_BxLxD = AlbertLayer(self.config, self.deterministic, name=f"layers_{j}")(x_BxLxD, mask_Bx1x1xS, layer_kv)
    return x_BxLxD, None


class AlbertEncoder(nn.Module):
  """E -> H, then each group applied for its run of outer layers, its params shared by the repeats."""

  config: AlbertConfig
  deterministic: bool = True

  @nn.compact
  def __call__(self, x_BxTxE, mask_BxT, prefix: KVPrefix | None):
    c = self.config
    x_BxTxD = layers.constrain(_dense(c, c.hidden_size, "mlp", "mapping_in")(x_BxTxE), ("batch", "length", "embed"))
    key_valid_BxS = jnp.concatenate([prefix_mask(prefix, x_BxTxD.shape[0]), mask_BxT.astype(bool)], axis=1)
    mask_Bx1x1xS = key_valid_BxS[:, None, None, :]
    kv = None
    if prefix is not None:
      kv = (prefix.keys_LxBxPxHxK, prefix.values_LxBxPxHxK)
      if kv[0].shape[0] != c.num_attention_layers:
        raise ValueError(
            f"key/value prefixes for {kv[0].shape[0]} layers; this ALBERT applies self-attention "
            f"{c.num_attention_layers} times (num_layers={c.num_layers} x inner_group_num={c.inner_group_num}), "
            "each with its own prefix"
        )

    group_cls = AlbertGroup
    policy = layers.remat_policy(c.remat_policy)
    if policy is not None:
      group_cls = nn.remat(group_cls, policy=policy, prevent_cse=not c.scan_layers)
    inner, start = c.inner_group_num, 0
    for group, repeats in c.group_runs:
      # This run's prefixes, one [inner, B, P, H, K] slice per repeat.
      run_kv = None if kv is None else jax.tree.map(
          lambda t: t[start * inner : (start + repeats) * inner].reshape((repeats, inner) + t.shape[1:]), kv
      )
      start += repeats
      if c.scan_layers:  # the params are broadcast: one copy, read by every step
        scanned = nn.scan(
            group_cls,
            variable_broadcast="params",
            split_rngs={"params": False, "dropout": True},
            in_axes=(nn.broadcast, 0),
            length=repeats,
        )(c, self.deterministic, name=f"groups_{group}")
        x_BxTxD, _ = scanned(x_BxTxD, mask_Bx1x1xS, run_kv)
      else:  # one module called `repeats` times: Flax shares its params between the calls
        shared = group_cls(c, self.deterministic, name=f"groups_{group}")
        for r in range(repeats):
          x_BxTxD, _ = shared(x_BxTxD, mask_Bx1x1xS, None if run_kv is None else jax.tree.map(lambda t: t[r], run_kv))
    return x_BxTxD


class AlbertMLMHead(nn.Module):
  """dense H -> E, activation, LayerNorm(E), then the tied word embeddings plus a per-token bias."""

  config: AlbertConfig
  token_embedder: layers.Embed

  @nn.compact
  def __call__(self, x_BxTxD: jax.Array, token_ids_W: jax.Array | None = None) -> jax.Array:
    c = self.config
    h_BxTxE = layers.activation(c.activation)(_dense(c, c.embedding_size, "mlp", "dense")(x_BxTxD))
    h_BxTxE = _norm(c, "norm")(h_BxTxE)
    zeros = nn.with_logical_partitioning(nn.initializers.zeros, ("vocab",))
    bias = self.param("bias", zeros, (c.vocab_size,), c.param_dtype)
    return layers.tied_logits(self.token_embedder, h_BxTxE, bias, token_ids_W)


class Albert(Bert):
  """An ALBERT encoder: BERT's forward and MLM logits over ALBERT's parts. `deterministic=False`
  turns on dropout (needs a 'dropout' rng)."""

  config: AlbertConfig
  deterministic: bool = True

  def setup(self):
    c = self.config
    self.token_embedder = layers.Embed(c.vocab_size, c.embedding_size, c.dtype, c.param_dtype, _INIT)
    self.embeddings = BertEmbeddings(c, self.token_embedder, self.deterministic, width=c.embedding_size)
    self.encoder = AlbertEncoder(c, self.deterministic)
    self.pooler = BertPooler(c) if c.has_pooler else None
    self.mlm_head = AlbertMLMHead(c, self.token_embedder) if c.has_mlm_head else None
