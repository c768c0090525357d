"""Multi-token verbalizers on a masked LM (PET with multiple masks): scores, hinge loss, iterative decoding.

Each example has a block of K consecutive [MASK]s (K = its longest candidate) and C candidates, each a
left-aligned row of up to K token ids. Everything is batched over examples and candidates, with static
shapes, where PET itself runs one example at a time (`PET:pet/task_helpers.py` MultiMaskTaskHelper).

    scores_BxC = choice_log_probs_one_pass(mask_logits, *inputs)           # training: one pass, k masks
    loss, count = hinge_loss(scores_BxC, labels_B, weights_B, candidate_valid_BxC)
    scores_BxC = decode_scores(mask_logits, *inputs, order="max_first")    # inference: surplus masks trimmed
    tokens_BxK = generate(mask_logits, ids, valid, types, positions)      # PET's WSC: the block filled freely

with inputs = (ids_BxL, valid_BxL, token_types_BxL, mask_positions_BxK, candidates_BxCxK,
candidate_mask_BxCxK). The backbone enters only as `mask_logits`, which projects to the vocabulary
just the K gathered positions (never [N, L, V]).

Deliberate differences from PET: decoding keeps the real token types and the attention mask (PET's
eval calls `model(input_ids)` alone, so BERT sees token type 0 everywhere at inference but not in
training); only the block's surplus masks are deleted (PET's trim_input_ids keeps the first n [MASK]
tokens of the whole sequence, which differs only if another [MASK] precedes the block).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

# (ids_NxL, valid_NxL, token_types_NxL, positions_NxK) -> float32 logits_NxKxV at those positions.
MaskLogits = Callable[[jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]

ORDERS = ("max_first", "ltr", "parallel")


def _target_log_probs(logits_NxKxV: jax.Array, targets_NxCxK: jax.Array) -> jax.Array:
  """log softmax(logits at slot k)[target of candidate c at slot k], [N, C, K]."""
  logp_NxKxV = jax.nn.log_softmax(logits_NxKxV.astype(jnp.float32), axis=-1)
  picked_NxKxC = jnp.take_along_axis(logp_NxKxV, jnp.swapaxes(targets_NxCxK, 1, 2), axis=-1)
  return jnp.swapaxes(picked_NxKxC, 1, 2)


def trim_surplus_masks(
    ids_BxL: jax.Array,
    valid_BxL: jax.Array,
    token_types_BxL: jax.Array,
    mask_positions_BxK: jax.Array,
    candidate_mask_BxCxK: jax.Array,
    pad_id: int = 0,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """Per (example, candidate): delete the masks it does not use, shift the rest left, pad at the end.

  Returns ids, valid, token types [B, C, L] and the candidate's mask positions [B, C, K] (-1 where
  unused). With left-aligned candidates the deleted masks are the last ones of the block, as in
  PET's trim_input_ids; padding inside the sequence is dropped too (PET removes every pad token).
  """
  batch, length = ids_BxL.shape
  cands = candidate_mask_BxCxK.shape[1]
  at_slot_BxKxL = mask_positions_BxK[:, :, None] == jnp.arange(length)
  surplus_BxCxL = jnp.any(at_slot_BxKxL[:, None] & ~candidate_mask_BxCxK[..., None].astype(bool), axis=2)
  keep_BxCxL = valid_BxL[:, None].astype(bool) & ~surplus_BxCxL
  # A stable sort on "dropped" moves kept tokens to the front in their original order: a static-shape compaction.
  order_BxCxL = jnp.argsort(~keep_BxCxL, axis=-1, stable=True)
  spread = lambda x_BxL: jnp.broadcast_to(x_BxL[:, None], (batch, cands, length))
  gather = lambda x_BxL: jnp.take_along_axis(spread(x_BxL), order_BxCxL, axis=-1)
  new_valid_BxCxL = jnp.arange(length) < jnp.sum(keep_BxCxL, axis=-1, keepdims=True)
  new_ids_BxCxL = jnp.where(new_valid_BxCxL, gather(ids_BxL), pad_id)
  new_types_BxCxL = jnp.where(new_valid_BxCxL, gather(token_types_BxL), 0)
  # A kept token lands at (number of kept tokens up to and including it) - 1.
  landing_BxCxL = jnp.cumsum(keep_BxCxL, axis=-1, dtype=jnp.int32) - 1
  old_BxCxK = jnp.broadcast_to(mask_positions_BxK[:, None], candidate_mask_BxCxK.shape)
  new_positions_BxCxK = jnp.take_along_axis(landing_BxCxL, old_BxCxK, axis=-1)
  new_positions_BxCxK = jnp.where(candidate_mask_BxCxK.astype(bool), new_positions_BxCxK, -1)
  return new_ids_BxCxL, new_valid_BxCxL, new_types_BxCxL, new_positions_BxCxK


def choice_log_probs_one_pass(
    mask_logits: MaskLogits,
    ids_BxL: jax.Array,
    valid_BxL: jax.Array,
    token_types_BxL: jax.Array,
    mask_positions_BxK: jax.Array,
    candidates_BxCxK: jax.Array,
    candidate_mask_BxCxK: jax.Array,
) -> jax.Array:
  """Training scores [B, C]: Σ_j log p(token j at mask j) from one pass with all K masks in place."""
  # One call on [B, L]: every candidate reads the same K distributions, only at other vocabulary columns.
  logits_BxKxV = mask_logits(ids_BxL, valid_BxL, token_types_BxL, mask_positions_BxK)
  targets_BxCxK = jnp.where(candidate_mask_BxCxK, candidates_BxCxK, 0)
  logp_BxCxK = _target_log_probs(logits_BxKxV, targets_BxCxK)
  return jnp.sum(jnp.where(candidate_mask_BxCxK, logp_BxCxK, 0.0), axis=-1)


def hinge_loss(
    scores_BxC: jax.Array, labels_B: jax.Array, weights_B: jax.Array, candidate_valid_BxC: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """(summed loss, count): Σ_{valid y' ≠ y} max(0, 1 − s_y + s_y') per example, over weighted examples.

  PET's hinge on per-example log-prob sums (no length normalisation); a hinge because the scores are
  not a normalised distribution. Labels of unweighted examples (e.g. -1) are ignored.
  """
  scores_BxC = scores_BxC.astype(jnp.float32)
  labels_B = jnp.maximum(labels_B, 0)
  gold_B = jnp.take_along_axis(scores_BxC, labels_B[:, None], axis=-1)[:, 0]
  margin_BxC = jax.nn.relu(1.0 - gold_B[:, None] + scores_BxC)
  wrong_BxC = candidate_valid_BxC.astype(bool) & (jnp.arange(scores_BxC.shape[1]) != labels_B[:, None])
  # where, not a product: a padded candidate may score -inf and must not turn the sum into NaN.
  per_example_B = jnp.sum(jnp.where(wrong_BxC, margin_BxC, 0.0), axis=-1)
  weights_B = weights_B.astype(jnp.float32)
  return jnp.sum(per_example_B * weights_B), jnp.sum(weights_B)


def decode_scores(
    mask_logits: MaskLogits,
    ids_BxL: jax.Array,
    valid_BxL: jax.Array,
    token_types_BxL: jax.Array,
    mask_positions_BxK: jax.Array,
    candidates_BxCxK: jax.Array,
    candidate_mask_BxCxK: jax.Array,
    order: str = "max_first",
    pad_id: int = 0,
) -> jax.Array:
  """Inference scores [B, C]: sum of target log-probs while filling the masks one by one in `order`.

  Runs on the trimmed [B*C, L] inputs. "parallel": one call. "ltr": each call fills the leftmost
  remaining mask. "max_first" (PET's default): each call fills the remaining mask whose target token
  is most probable. One step function runs K times; shorter candidates add nothing once done.
  """
  if order not in ORDERS:
    raise ValueError(f"decoding order {order!r} is not one of {ORDERS}")
  batch, cands, slots = candidates_BxCxK.shape
  trimmed = trim_surplus_masks(ids_BxL, valid_BxL, token_types_BxL, mask_positions_BxK, candidate_mask_BxCxK, pad_id)
  ids_NxL, valid_NxL, types_NxL, positions_NxK = (x.reshape((batch * cands,) + x.shape[2:]) for x in trimmed)
  targets_NxK = jnp.where(candidate_mask_BxCxK, candidates_BxCxK, 0).reshape(batch * cands, slots)
  masked_NxK = positions_NxK >= 0
  gather_NxK = jnp.maximum(positions_NxK, 0)  # unused slots read position 0 and are ignored

  def target_log_probs(ids_NxL: jax.Array) -> jax.Array:
    logits_NxKxV = mask_logits(ids_NxL, valid_NxL, types_NxL, gather_NxK)
    return _target_log_probs(logits_NxKxV, targets_NxK[:, None])[:, 0]

  if order == "parallel":
    total_N = jnp.sum(jnp.where(masked_NxK, target_log_probs(ids_NxL), 0.0), axis=-1)
    return total_N.reshape(batch, cands)

  rows_N = jnp.arange(batch * cands)

  def step(_, carry):
    ids_NxL, masked_NxK, total_N = carry
    logp_NxK = target_log_probs(ids_NxL)
    if order == "ltr":
      pick_N = jnp.argmin(jnp.where(masked_NxK, positions_NxK, ids_NxL.shape[1]), axis=-1)
    else:
      # Floor at finfo.min so a masked slot with log-prob -inf still beats every filled one; argmax
      # takes the leftmost of ties, like PET's strict ">" scan in position order.
      key_NxK = jnp.where(masked_NxK, jnp.maximum(logp_NxK, jnp.finfo(jnp.float32).min), -jnp.inf)
      pick_N = jnp.argmax(key_NxK, axis=-1)
    active_N = jnp.any(masked_NxK, axis=-1)
    picked_N = jnp.take_along_axis(logp_NxK, pick_N[:, None], axis=-1)[:, 0]
    total_N = total_N + jnp.where(active_N, picked_N, 0.0)
    at_N = jnp.take_along_axis(gather_NxK, pick_N[:, None], axis=-1)[:, 0]
    token_N = jnp.take_along_axis(targets_NxK, pick_N[:, None], axis=-1)[:, 0]
    ids_NxL = ids_NxL.at[rows_N, at_N].set(jnp.where(active_N, token_N, ids_NxL[rows_N, at_N]).astype(ids_NxL.dtype))
    masked_NxK = masked_NxK & (jnp.arange(slots) != pick_N[:, None])
    return ids_NxL, masked_NxK, total_N

  init = (ids_NxL, masked_NxK, jnp.zeros((batch * cands,), jnp.float32))
  _, _, total_N = jax.lax.fori_loop(0, slots, step, init)
  return total_N.reshape(batch, cands)


def generation_loss(
    mask_logits: MaskLogits,
    ids_BxL: jax.Array,
    valid_BxL: jax.Array,
    token_types_BxL: jax.Array,
    mask_positions_BxK: jax.Array,
    targets_BxK: jax.Array,
    weights_B: jax.Array,
) -> tuple[jax.Array, jax.Array]:
  """(summed, count) cross-entropy of every mask of the block against its target token, over the
  weighted examples: PET's WSC trains the referent's tokens and pad tokens at the extra masks."""
  logits_BxKxV = mask_logits(ids_BxL, valid_BxL, token_types_BxL, mask_positions_BxK)
  logp_BxK = _target_log_probs(logits_BxKxV, targets_BxK[:, None])[:, 0]
  counted_BxK = (mask_positions_BxK >= 0) & weights_B[:, None].astype(bool)
  return -jnp.sum(jnp.where(counted_BxK, logp_BxK, 0.0)), jnp.sum(counted_BxK).astype(jnp.float32)


def generate(
    mask_logits: MaskLogits,
    ids_BxL: jax.Array,
    valid_BxL: jax.Array,
    token_types_BxL: jax.Array,
    mask_positions_BxK: jax.Array,
    order: str = "max_first",
) -> jax.Array:
  """[B, K] the tokens greedily filled into each example's masks (-1 past its block), batched.

  PET's WSC decoding (`PET:pet/task_helpers.py` WscTaskHelper.eval_step), one example at a time
  there: every call puts the most probable token into one mask — "max_first": the mask whose most
  probable token is the most confident of all; "ltr": the leftmost — or into all of them at once
  ("parallel"), until none is left.
  """
  if order not in ORDERS:
    raise ValueError(f"decoding order {order!r} is not one of {ORDERS}")
  batch, slots = mask_positions_BxK.shape
  masked_BxK = mask_positions_BxK >= 0
  gather_BxK = jnp.maximum(mask_positions_BxK, 0)
  rows_B = jnp.arange(batch)

  def best(ids_BxL: jax.Array) -> tuple[jax.Array, jax.Array]:
    probs_BxKxV = jax.nn.softmax(mask_logits(ids_BxL, valid_BxL, token_types_BxL, gather_BxK).astype(jnp.float32))
    return jnp.argmax(probs_BxKxV, axis=-1).astype(ids_BxL.dtype), jnp.max(probs_BxKxV, axis=-1)

  if order == "parallel":
    return jnp.where(masked_BxK, best(ids_BxL)[0], -1)

  def step(_, carry):
    ids_BxL, masked_BxK, out_BxK = carry
    token_BxK, confidence_BxK = best(ids_BxL)
    if order == "ltr":
      pick_B = jnp.argmax(masked_BxK, axis=-1)  # the first slot still masked
    else:  # PET's strict ">" scan: the leftmost of equally confident masks
      pick_B = jnp.argmax(jnp.where(masked_BxK, confidence_BxK, -1.0), axis=-1)
    active_B = jnp.any(masked_BxK, axis=-1)
    token_B = jnp.take_along_axis(token_BxK, pick_B[:, None], axis=-1)[:, 0]
    at_B = jnp.take_along_axis(gather_BxK, pick_B[:, None], axis=-1)[:, 0]
    ids_BxL = ids_BxL.at[rows_B, at_B].set(jnp.where(active_B, token_B, ids_BxL[rows_B, at_B]))
    out_BxK = out_BxK.at[rows_B, pick_B].set(jnp.where(active_B, token_B, out_BxK[rows_B, pick_B]))
    return ids_BxL, masked_BxK & (jnp.arange(slots) != pick_B[:, None]), out_BxK

  init = (ids_BxL, masked_BxK, jnp.full((batch, slots), -1, ids_BxL.dtype))
  return jax.lax.fori_loop(0, slots, step, init)[2]
