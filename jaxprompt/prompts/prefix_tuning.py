"""Prefix tuning (Li & Liang 2021) and deep prompts (P-tuning v2): trainable keys and values
prepended in every layer of the chosen attention kinds.

On T5 each kind — encoder self-attention, decoder self-attention, decoder cross-attention — has its
own prefixes and can be switched on or off (PEFT 0.21 puts prefixes only into T5's decoder
self-attention, shifted across layers: jaxprompt/peft_adapters.py). A decoder-only model
or an encoder has one kind, its self-attention.

Training may reparameterise the prefixes (Li & Liang; PEFT's `prefix_projection`): P embeddings pass
through Linear-Tanh-Linear to give every layer's keys and values, which trains more stably. For
serving, `export` collapses them into the plain keys and values they produce; the checkpoint keeps
the full trainable state, so training can resume.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxprompt.models.prompt import KVPrefix, Prompt

ATTENTION_KINDS = ("encoder_self", "decoder_self", "decoder_cross")


@dataclasses.dataclass(frozen=True)
class AttentionShape:
  """The shape of one attention kind's keys/values: layers, key/value heads, head width."""

  kind: str  # one of ATTENTION_KINDS
  num_layers: int
  num_heads: int
  head_dim: int


class PrefixBank(nn.Module):
  """One attention kind's prefixes: keys and values [layers, P, heads, head_dim]."""

  shape: AttentionShape
  length: int
  embed_dim: int  # input width of the reparameterisation
  reparam_hidden: int  # 0: the keys and values are the params themselves

  @nn.compact
  def __call__(self) -> tuple[jax.Array, jax.Array]:
    s, p = self.shape, self.length
    if not self.reparam_hidden:
      # N(0, 1), as P-tuning v2 and PEFT initialise prefixes used directly as keys/values.
      axes = ("prefix_layers", "prompt", "prefix_heads", "kv")
      init = nn.with_logical_partitioning(nn.initializers.normal(1.0), axes)
      keys = self.param("keys", init, (s.num_layers, p, s.num_heads, s.head_dim), jnp.float32)
      values = self.param("values", init, (s.num_layers, p, s.num_heads, s.head_dim), jnp.float32)
      return keys, values
    embed_init = nn.with_logical_partitioning(nn.initializers.normal(1.0), ("prompt", "prompt_embed"))
    embedding_PxE = self.param("embedding", embed_init, (p, self.embed_dim), jnp.float32)
    dense = lambda features, name: nn.Dense(features, name=name, kernel_init=nn.with_logical_partitioning(
        nn.initializers.lecun_normal(), ("prompt_embed", "prompt_mlp")))
    h_PxH = jnp.tanh(dense(self.reparam_hidden, "mlp_in")(embedding_PxE))
    # The output is laid out (layer, key|value, head, dim), as PEFT's PrefixEncoder lays it out.
    out = dense(s.num_layers * 2 * s.num_heads * s.head_dim, "mlp_out")(h_PxH)
    out_PxLx2xHxK = out.reshape(p, s.num_layers, 2, s.num_heads, s.head_dim)
    keys_values = jnp.transpose(out_PxLx2xHxK, (2, 1, 0, 3, 4))  # [2, L, P, H, K]
    return keys_values[0], keys_values[1]


class PrefixTuning(nn.Module):
  """Prefixes for each attention kind in `shapes`; `__call__(batch)` gives the backbone's Prompt."""

  length: int
  shapes: tuple[AttentionShape, ...]
  embed_dim: int
  reparam_hidden: int = 0

  def __post_init__(self):
    kinds = [s.kind for s in self.shapes]
    if not kinds or len(set(kinds)) != len(kinds) or not set(kinds) <= set(ATTENTION_KINDS):
      raise ValueError(f"prefix attention kinds {kinds}: give distinct kinds from {ATTENTION_KINDS}")
    super().__post_init__()

  @nn.compact
  def __call__(self, batch: dict[str, jax.Array]) -> Prompt:
    del batch  # one prefix for every example
    prefixes = {}
    for shape in self.shapes:
      keys, values = PrefixBank(shape, self.length, self.embed_dim, self.reparam_hidden, name=shape.kind)()
      prefixes[shape.kind] = KVPrefix(keys[:, None], values[:, None])  # batch dimension 1: broadcast
    return Prompt(**prefixes)

  def export(self, params: dict) -> dict[str, np.ndarray]:
    """The plain keys/values ("<kind>/keys", "<kind>/values") the params produce: for serving."""
    prompt = _prefixes(self, params)
    out = {}
    for shape in self.shapes:
      prefix: KVPrefix = getattr(prompt, shape.kind)
      out[f"{shape.kind}/keys"] = np.asarray(prefix.keys_LxBxPxHxK[:, 0], np.float32)
      out[f"{shape.kind}/values"] = np.asarray(prefix.values_LxBxPxHxK[:, 0], np.float32)
    return out

  def collapsed(self) -> PrefixTuning:
    """The same prefixes without reparameterisation: its params are what `export` gives."""
    return self.clone(reparam_hidden=0, parent=None)

  def params_from_export(self, arrays: dict[str, np.ndarray]) -> dict:
    """Params of `collapsed()` holding an export."""
    return traverse_util.unflatten_dict({tuple(k.split("/")): jnp.asarray(v) for k, v in arrays.items()})


@functools.partial(jax.jit, static_argnums=0)  # modules hash by their fields: one compile per prefix shape
def _prefixes(method: PrefixTuning, params: dict) -> Prompt:
  return method.apply({"params": params}, {})
