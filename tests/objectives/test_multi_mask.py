"""Multi-mask scoring, hinge loss and batched decoding against PET's one-example-at-a-time procedure."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprompt.models.bert import Bert
from jaxprompt.models.bert_config import BertConfig
from jaxprompt.objectives.multi_mask import (
    ORDERS,
    choice_log_probs_one_pass,
    decode_scores,
    hinge_loss,
    trim_surplus_masks,
)

CLS, SEP, MASK, VOCAB = 1, 2, 3, 40
MODEL = Bert(BertConfig(
    vocab_size=VOCAB, hidden_size=32, num_heads=4, num_layers=2, intermediate_size=64,
    max_position_embeddings=32, has_pooler=False, has_mlm_head=True, dtype="float32", param_dtype="float32",
))


@functools.cache
def _params():
  """Random params, wider than BERT's 0.02 init so distributions are peaked and orders pick differently."""
  ids = jnp.ones((1, 4), jnp.int32)
  params = nn.meta.unbox(MODEL.init(jax.random.key(0), ids, ids > 0))
  rng = np.random.default_rng(0)
  draw = lambda path, x: (path[-1].key == "scale") + 0.3 * rng.standard_normal(x.shape).astype(np.float32)
  return jax.tree_util.tree_map_with_path(draw, params)


def bert_mask_logits(params):
  """A MaskLogits: encode, gather the K positions' states, then project only those to the vocabulary."""

  def mask_logits(ids_NxL, valid_NxL, types_NxL, positions_NxK):
    hidden_NxLxD = MODEL.apply(params, ids_NxL, valid_NxL, types_NxL).hidden_BxTxD
    picked_NxKxD = jnp.take_along_axis(hidden_NxLxD, positions_NxK[..., None], axis=1)
    return MODEL.apply(params, picked_NxKxD, method=Bert.mlm_logits)

  return mask_logits


@jax.jit
def _full_logits(params, ids_1xL, valid_1xL, types_1xL):
  """Every position's vocabulary logits [1, L, V]: the unbatched reference's model call."""
  hidden = MODEL.apply(params, ids_1xL, valid_1xL, types_1xL).hidden_BxTxD
  return MODEL.apply(params, hidden, method=Bert.mlm_logits)


TRACES: dict[str, list[int]] = {}  # order -> [traces of the decoder, MaskLogits calls traced]


@functools.cache
def _decoder(order: str):
  """decode_scores jitted as a caller would, counting its traces and the model calls in them."""
  counts = TRACES.setdefault(order, [0, 0])

  def run(params, batch):
    counts[0] += 1
    inner = bert_mask_logits(params)

    def mask_logits(*args):
      counts[1] += 1
      return inner(*args)

    return decode_scores(mask_logits, *batch, order=order)

  return jax.jit(run)


def _batch(seed: int = 0):
  """3 examples of lengths 12, 9, 7 (block of 3 masks at different offsets, two segments) and 3
  candidates each of 0..3 tokens; the last candidate of example 2 is padding."""
  rng = np.random.default_rng(seed)
  L, K = 12, 3
  layout = [(12, 4, 8), (9, 2, 6), (7, 3, 7)]  # (length, first mask, first token of segment B)
  lengths = [(3, 1, 2), (2, 3, 1), (1, 3, 0)]
  ids = np.zeros((3, L), np.int32)
  types = np.zeros((3, L), np.int32)
  valid = np.zeros((3, L), bool)
  positions = np.zeros((3, K), np.int32)
  cands = np.full((3, 3, K), -100, np.int32)  # PET's ignore index in the unused slots
  for b, (n, start, seg_b) in enumerate(layout):
    ids[b, :n] = rng.integers(4, VOCAB, n)
    ids[b, 0], ids[b, n - 1] = CLS, SEP
    ids[b, start:start + K] = MASK
    types[b, seg_b:n] = 1
    valid[b, :n] = True
    positions[b] = np.arange(start, start + K)
    for c, m in enumerate(lengths[b]):
      cands[b, c, :m] = rng.integers(4, VOCAB, m)
  return ids, valid, types, positions, cands, cands >= 0


def pet_reference(params, ids_L, valid_L, types_L, candidate, order):
  """PET's decoding for ONE example and ONE candidate: (score, slots in the order they were filled)."""
  seq, seq_types, kept_masks = [], [], 0
  for tok, ok, typ in zip(ids_L.tolist(), valid_L.tolist(), types_L.tolist()):
    if not ok:
      continue  # trim_input_ids drops every pad token
    if tok == MASK:
      if kept_masks >= len(candidate):
        continue  # ... and every mask after the first len(candidate)
      kept_masks += 1
    seq.append(tok)
    seq_types.append(typ)
  start = seq.index(MASK) if candidate else 0
  targets = {start + j: tok for j, tok in enumerate(candidate)}
  score, filled = 0.0, []
  while targets:
    ids = jnp.asarray([seq], jnp.int32)
    logits = np.asarray(_full_logits(params, ids, ids >= 0, jnp.asarray([seq_types], jnp.int32))[0], np.float64)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    if order == "parallel":
      return score + sum(np.log(probs[p, t]) for p, t in targets.items()), filled
    if order == "ltr":
      pos = min(targets)
    else:  # max-first by the TARGET token's probability; first of ties, as PET's strict ">" scan
      pos = max(sorted(targets), key=lambda p: probs[p, targets[p]])
    score += np.log(probs[pos, targets[pos]])
    seq[pos] = targets.pop(pos)
    filled.append(pos - start)
  return score, filled


@pytest.mark.parametrize("order", ORDERS)
def test_batched_decoding_matches_pet_one_at_a_time(order):
  params, batch = _params(), _batch()
  got = np.asarray(_decoder(order)(params, batch))
  ids, valid, types, _, cands, cmask = batch
  fill_orders = []
  for b in range(ids.shape[0]):
    for c in range(cands.shape[1]):
      candidate = cands[b, c][cmask[b, c]].tolist()
      want, filled = pet_reference(params, ids[b], valid[b], types[b], candidate, order)
      fill_orders.append(filled)
      np.testing.assert_allclose(got[b, c], want, rtol=1e-5, atol=1e-5, err_msg=f"example {b} candidate {c}")
  assert got[2, 2] == 0.0  # the padded candidate adds nothing
  if order == "max_first":  # otherwise this test could not tell max-first from left-to-right
    assert any(f != sorted(f) for f in fill_orders), fill_orders


def test_decoding_differs_by_order():
  params, batch = _params(), _batch()
  ltr, max_first = (np.asarray(_decoder(o)(params, batch)) for o in ("ltr", "max_first"))
  one_token = batch[5].sum(-1) <= 1
  np.testing.assert_allclose(ltr[one_token], max_first[one_token], rtol=1e-6)  # one mask: no choice to make
  assert np.abs(ltr - max_first)[~one_token].max() > 1e-4


def test_decoder_traced_once_with_one_step_function():
  params = _params()
  decode = _decoder("max_first")
  first = decode(params, _batch(0))
  second = decode(params, _batch(1))  # same shapes, other tokens
  assert not np.allclose(first, second)
  # One trace for both calls, and inside it the model is traced once: the loop body, not K copies.
  assert TRACES["max_first"] == [1, 1]


def test_trim_surplus_masks_by_hand():
  M = MASK
  ids = np.array([[CLS, 7, M, M, M, 8, SEP, 0], [CLS, M, M, M, 9, 5, SEP, 0]], np.int32)
  valid = np.array([[1, 1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1, 1, 0]], bool)
  valid[1, 4] = False  # padding inside the sequence is removed too, as trim_input_ids removes every pad
  types = np.array([[0, 0, 0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 1, 1, 1, 0]], np.int32)
  positions = np.array([[2, 3, 4], [1, 2, 3]], np.int32)
  cmask = np.array([[[1, 1, 1], [1, 0, 0], [1, 1, 0], [0, 0, 0]], [[1, 1, 0], [1, 1, 1], [1, 0, 0], [1, 0, 0]]], bool)
  got = [np.asarray(x) for x in trim_surplus_masks(ids, valid, types, positions, cmask, pad_id=0)]
  want_ids = [
      [[CLS, 7, M, M, M, 8, SEP, 0], [CLS, 7, M, 8, SEP, 0, 0, 0], [CLS, 7, M, M, 8, SEP, 0, 0], [CLS, 7, 8, SEP, 0, 0, 0, 0]],
      [[CLS, M, M, 5, SEP, 0, 0, 0], [CLS, M, M, M, 5, SEP, 0, 0], [CLS, M, 5, SEP, 0, 0, 0, 0], [CLS, M, 5, SEP, 0, 0, 0, 0]],
  ]
  want_len = [[7, 5, 6, 4], [5, 6, 4, 4]]
  want_types = [
      [[0, 0, 0, 0, 0, 1, 1, 0], [0, 0, 0, 1, 1, 0, 0, 0], [0, 0, 0, 0, 1, 1, 0, 0], [0, 0, 1, 1, 0, 0, 0, 0]],
      [[0, 0, 0, 1, 1, 0, 0, 0], [0, 0, 0, 0, 1, 1, 0, 0], [0, 0, 1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0, 0, 0]],
  ]
  want_pos = [[[2, 3, 4], [2, -1, -1], [2, 3, -1], [-1, -1, -1]], [[1, 2, -1], [1, 2, 3], [1, -1, -1], [1, -1, -1]]]
  np.testing.assert_array_equal(got[0], want_ids)
  np.testing.assert_array_equal(got[1], np.arange(8) < np.array(want_len)[..., None])
  np.testing.assert_array_equal(got[2], want_types)
  np.testing.assert_array_equal(got[3], want_pos)


@jax.jit
def _one_pass(params, batch):
  return choice_log_probs_one_pass(bert_mask_logits(params), *batch)


def test_one_pass_equals_numpy_from_full_logits():
  params, batch = _params(), _batch()
  got = np.asarray(_one_pass(params, batch))
  ids, valid, types, positions, cands, cmask = batch
  for b in range(ids.shape[0]):
    # One example alone, every position projected: the [L, V] logits the module never builds.
    logits = np.asarray(_full_logits(params, ids[b:b + 1], valid[b:b + 1], types[b:b + 1])[0], np.float64)
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    for c in range(cands.shape[1]):
      want = sum(logp[positions[b, j], cands[b, c, j]] for j in range(cmask[b, c].sum()))
      np.testing.assert_allclose(got[b, c], want, rtol=1e-5, atol=1e-5, err_msg=f"example {b} candidate {c}")


def test_hinge_loss_by_hand():
  scores = jnp.array([[-1.0, -1.5, -3.0], [-2.0, -0.5, -jnp.inf], [-1.0, 0.0, 0.0]])
  labels = jnp.array([0, 0, -1])
  weights = jnp.array([1.0, 1.0, 0.0])  # example 2 is padding: its (large) hinge must not count
  valid = jnp.array([[1, 1, 1], [1, 1, 0], [1, 1, 1]], bool)  # example 1 has two choices
  total, count = hinge_loss(scores, labels, weights, valid)
  # example 0: max(0, 1 + 1 - 1.5) + max(0, 1 + 1 - 3) = 0.5; example 1: 1 + 2 - 0.5 = 2.5 (slot 2 ignored)
  np.testing.assert_allclose([total, count], [3.0, 2.0], rtol=1e-6)
  grads = jax.grad(lambda s: hinge_loss(s, labels, weights, valid)[0])(scores)
  np.testing.assert_allclose(grads, [[-1, 1, 0], [-1, 1, 0], [0, 0, 0]])  # finite despite the -inf


def test_hinge_gradients_reach_the_model():
  params, batch = _params(), _batch()
  valid = batch[5].any(-1)
  scores = np.asarray(_one_pass(params, batch))
  labels = jnp.asarray(np.where(valid, scores, np.inf).argmin(-1))  # the worst valid candidate: every margin is active

  @jax.jit
  def loss(params):
    total, count = hinge_loss(choice_log_probs_one_pass(bert_mask_logits(params), *batch), labels, jnp.ones(3), valid)
    return total / count

  value, grads = jax.value_and_grad(loss)(params)
  assert value > 1.0
  leaves = jax.tree_util.tree_leaves_with_path(grads)
  for path, g in leaves:
    assert np.isfinite(g).all(), jax.tree_util.keystr(path)
  assert np.abs(grads["params"]["encoder"]["layers"]["attention"]["query"]["kernel"]).max() > 0
  assert np.abs(grads["params"]["token_embedder"]["embedding"]).max() > 0
