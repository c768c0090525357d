"""The `Prompt` input every backbone accepts, and how it enters the sequence and the positions.

A prompt method (jaxprompt/prompts/) turns its trainable params into a `Prompt`; backbones know
nothing about methods. A `Prompt` carries up to two things:

  * soft tokens: embeddings placed into the input sequence (prompt tuning, P-tuning), and
  * key/value prefixes: extra keys and values prepended in every layer of one attention kind
    (prefix tuning, P-tuning v2), one `KVPrefix` per attention kind.

Every part has an optional validity mask, so prompts of different lengths can share one batch: a
batch dimension of 1 broadcasts one prompt over the batch.

Positions. Soft tokens are ordinary sequence positions. Prefix keys sit just before the first
sequence position, as if they were earlier tokens (this is Hugging Face's `past_key_values`
convention, which PEFT's prefix tuning relies on). Invalid (masked) prompt slots take no position:
positions count only valid slots, so an example in a mixed-length batch gets exactly the positions
(and so, in T5, the relative position bias) it would get alone with its own prompt length. When no
prompt part carries a mask, positions are plain `arange` and shared across the batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


class KVPrefix(struct.PyTreeNode):
  """Per-layer keys and values prepended to one attention kind (B may be 1 to broadcast)."""

  keys_LxBxPxHxK: jax.Array
  values_LxBxPxHxK: jax.Array
  mask_BxP: jax.Array | None = None  # None: every slot is valid

  @property
  def length(self) -> int:
    return self.keys_LxBxPxHxK.shape[2]

  def layer(self, i: int) -> KVPrefix:
    return KVPrefix(self.keys_LxBxPxHxK[i], self.values_LxBxPxHxK[i], self.mask_BxP)


class Prompt(struct.PyTreeNode):
  """What a prompt method hands to a backbone. Every field is optional; `Prompt()` is no prompt."""

  embeddings_BxPxD: jax.Array | None = None  # soft tokens placed into the input sequence
  embeddings_mask_BxP: jax.Array | None = None  # None: every soft token is valid
  # Index of the token before which the soft tokens go, per example: 0 (None) puts them first;
  # 1 after a BOS token; the example's length makes them a suffix.
  insert_at_B: jax.Array | None = None
  # Instead of inserting them: soft token i replaces the input embedding wherever this is i (-1:
  # keep the token's). P-tuning v1's pseudo tokens, interleaved with the template's anchor words.
  replace_at_BxL: jax.Array | None = None
  encoder_self: KVPrefix | None = None  # encoder (or decoder-only model) self-attention prefixes
  decoder_self: KVPrefix | None = None  # T5 decoder self-attention prefixes
  decoder_cross: KVPrefix | None = None  # T5 decoder cross-attention prefixes


class PlacedSequence(struct.PyTreeNode):
  """An embedded input sequence with the soft tokens in place."""

  x_BxTxD: jax.Array
  mask_BxT: jax.Array  # which positions are valid keys (tokens and valid soft tokens)
  # 1 for every position that takes a position index, 0 for invalid soft-token slots; None when
  # positions are plain arange (no soft-token mask).
  position_weight_BxT: jax.Array | None


def place_soft_tokens(
    x_BxLxD: jax.Array, mask_BxL: jax.Array, prompt: Prompt | None
) -> PlacedSequence:
  """Inserts the prompt's soft tokens into the embedded sequence."""
  if prompt is None or prompt.embeddings_BxPxD is None:
    return PlacedSequence(x_BxLxD, mask_BxL, None)
  if prompt.replace_at_BxL is not None:  # the sequence keeps its length and positions
    batch = x_BxLxD.shape[0]
    soft_BxPxD = jnp.broadcast_to(prompt.embeddings_BxPxD, (batch,) + prompt.embeddings_BxPxD.shape[1:])
    index_BxL = prompt.replace_at_BxL
    soft_BxLxD = jnp.take_along_axis(soft_BxPxD, jnp.maximum(index_BxL, 0)[..., None], axis=1)
    x = jnp.where((index_BxL >= 0)[..., None], soft_BxLxD.astype(x_BxLxD.dtype), x_BxLxD)
    return PlacedSequence(x, mask_BxL, None)
  batch, length, _ = x_BxLxD.shape
  prompt_BxPxD = jnp.broadcast_to(
      prompt.embeddings_BxPxD.astype(x_BxLxD.dtype),
      (batch,) + prompt.embeddings_BxPxD.shape[1:],
  )
  num_soft = prompt_BxPxD.shape[1]
  if prompt.embeddings_mask_BxP is None:
    soft_mask_BxP = jnp.ones((batch, num_soft), dtype=bool)
  else:
    soft_mask_BxP = jnp.broadcast_to(prompt.embeddings_mask_BxP.astype(bool), (batch, num_soft))
  mask_BxL = mask_BxL.astype(bool)

  if prompt.insert_at_B is None:  # prefix: a plain concatenation
    x = jnp.concatenate([prompt_BxPxD, x_BxLxD], axis=1)
    mask = jnp.concatenate([soft_mask_BxP, mask_BxL], axis=1)
    is_soft_BxT = jnp.concatenate(
        [jnp.ones((batch, num_soft), bool), jnp.zeros((batch, length), bool)], axis=1
    )
  else:
    # Output slot t holds token t (t < at), soft token t - at (at <= t < at + P), else token t - P.
    at_Bx1 = jnp.broadcast_to(prompt.insert_at_B, (batch,))[:, None]
    t_1xT = jnp.arange(length + num_soft)[None, :]
    is_soft_BxT = (t_1xT >= at_Bx1) & (t_1xT < at_Bx1 + num_soft)
    token_index = jnp.clip(jnp.where(t_1xT < at_Bx1, t_1xT, t_1xT - num_soft), 0, length - 1)
    soft_index = jnp.clip(t_1xT - at_Bx1, 0, num_soft - 1)
    take = lambda a, i: jnp.take_along_axis(a, i.reshape(i.shape + (1,) * (a.ndim - 2)), axis=1)
    x = jnp.where(is_soft_BxT[..., None], take(prompt_BxPxD, soft_index), take(x_BxLxD, token_index))
    mask = jnp.where(is_soft_BxT, take(soft_mask_BxP, soft_index), take(mask_BxL, token_index))

  if prompt.embeddings_mask_BxP is None:
    return PlacedSequence(x, mask, None)
  # Tokens always take a position; soft-token slots only when valid.
  return PlacedSequence(x, mask, jnp.where(is_soft_BxT, mask, True).astype(jnp.int32))


def token_slots(prompt: Prompt | None, positions_BxK: jax.Array) -> jax.Array:
  """Where input tokens at `positions_BxK` sit in the sequence `place_soft_tokens` builds: after
  the soft tokens inserted before them (a [MASK]'s state is read at its slot)."""
  if prompt is None or prompt.embeddings_BxPxD is None or prompt.replace_at_BxL is not None:
    return positions_BxK
  num_soft = prompt.embeddings_BxPxD.shape[1]
  if prompt.insert_at_B is None:
    return positions_BxK + num_soft
  at_Bx1 = jnp.broadcast_to(prompt.insert_at_B, positions_BxK.shape[:1])[:, None]
  return jnp.where(positions_BxK < at_Bx1, positions_BxK, positions_BxK + num_soft)


def sequence_positions(length: int, position_weight_BxT: jax.Array | None) -> jax.Array:
  """Positions of the sequence, [1, T] when shared across the batch, else [B, T]."""
  if position_weight_BxT is None:
    return jnp.arange(length, dtype=jnp.int32)[None, :]
  return jnp.cumsum(position_weight_BxT, axis=1, dtype=jnp.int32) - 1


def prefix_positions(prefix: KVPrefix | None) -> jax.Array:
  """Positions of the valid prefix slots: -p, ..., -1 just before the sequence ([1|B, P])."""
  if prefix is None:
    return jnp.zeros((1, 0), jnp.int32)
  if prefix.mask_BxP is None:
    return jnp.arange(-prefix.length, 0, dtype=jnp.int32)[None, :]
  valid = prefix.mask_BxP.astype(jnp.int32)
  return jnp.cumsum(valid, axis=1) - jnp.sum(valid, axis=1, keepdims=True) - 1


def prefix_mask(prefix: KVPrefix | None, batch: int) -> jax.Array:
  """The prefix slots' validity as [B, P] booleans."""
  if prefix is None:
    return jnp.zeros((batch, 0), bool)
  if prefix.mask_BxP is None:
    return jnp.ones((batch, prefix.length), bool)
  return jnp.broadcast_to(prefix.mask_BxP.astype(bool), (batch, prefix.length))


def extended_by(prompt: Prompt | None, num_tokens: int) -> Prompt | None:
  """The prompt for the sequence grown by `num_tokens` tokens after the inputs (a decoder's targets):
  marker positions cover only the inputs, so the new columns replace nothing."""
  if prompt is None or prompt.replace_at_BxL is None:
    return prompt
  index_BxL = prompt.replace_at_BxL
  extra = jnp.full((index_BxL.shape[0], num_tokens), -1, index_BxL.dtype)
  return prompt.replace(replace_at_BxL=jnp.concatenate([index_BxL, extra], axis=1))


def repeat_examples(prompt: Prompt | None, repeats: int) -> Prompt | None:
  """Each example's prompt `repeats` times in a row (as jnp.repeat), e.g. to score C candidates.

  Parts with a batch dimension of 1 broadcast already and stay as they are.
  """
  if prompt is None:
    return None

  def rep(x: jax.Array | None, axis: int) -> jax.Array | None:
    return x if x is None or x.shape[axis] == 1 else jnp.repeat(x, repeats, axis=axis)

  def rep_prefix(p: KVPrefix | None) -> KVPrefix | None:
    return None if p is None else KVPrefix(rep(p.keys_LxBxPxHxK, 1), rep(p.values_LxBxPxHxK, 1), rep(p.mask_BxP, 0))

  return Prompt(
      embeddings_BxPxD=rep(prompt.embeddings_BxPxD, 0),
      embeddings_mask_BxP=rep(prompt.embeddings_mask_BxP, 0),
      insert_at_B=rep(prompt.insert_at_B, 0),
      replace_at_BxL=rep(prompt.replace_at_BxL, 0),
      encoder_self=rep_prefix(prompt.encoder_self),
      decoder_self=rep_prefix(prompt.decoder_self),
      decoder_cross=rep_prefix(prompt.decoder_cross),
  )
