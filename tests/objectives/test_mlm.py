"""BERT masking statistics, the MLM loss against transformers' BertForMaskedLM, and the loss mix."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxprompt.models.bert import Bert
from jaxprompt.objectives.mlm import PAPER_ALPHA, bert_masking, combine_with_mlm, default_max_predictions, mlm_loss_sum
from jaxprompt.weights.bert_loader import load_bert
from tests.models import bert_reference as ref

PAD, CLS, SEP, MASK = 0, 2, 3, 1


def _batch(rng: np.random.Generator, batch: int, length: int, vocab: int):
  """[CLS] text [SEP] padding rows of random lengths: (ids, valid, maskable = valid and not special)."""
  lengths = rng.integers(length // 4, length + 1, batch)
  positions = np.arange(length)[None, :]
  valid = positions < lengths[:, None]
  ids = np.where(valid, rng.integers(4, vocab, (batch, length)), PAD)
  ids[:, 0] = CLS
  ids[np.arange(batch), lengths - 1] = SEP
  maskable = valid & (ids != CLS) & (ids != SEP)
  return jnp.asarray(ids, jnp.int32), jnp.asarray(valid), jnp.asarray(maskable)


@functools.partial(jax.jit, static_argnames=("vocab_size", "max_predictions", "probability"))
def _mask(rng, ids, maskable, *, vocab_size, max_predictions, probability=0.15):
  return bert_masking(
      rng, ids, maskable, mask_id=MASK, vocab_size=vocab_size, max_predictions=max_predictions, probability=probability
  )


def _selected(masked, positions, weights, length):
  """[B, L] bool: the positions the slots predict."""
  rows = np.arange(positions.shape[0])[:, None]
  out = np.zeros((positions.shape[0], length), bool)
  out[rows, np.asarray(positions)] = np.asarray(weights) > 0
  return out


def test_masking_statistics_and_slots():
  vocab, length = 1000, 512
  ids, _, maskable = _batch(np.random.default_rng(0), 64, length, vocab)
  m = default_max_predictions(length)
  drawn = _mask(jax.random.key(0), ids, maskable, vocab_size=vocab, max_predictions=m)
  masked, positions, targets, weights = map(np.asarray, drawn)
  ids, maskable = np.asarray(ids), np.asarray(maskable)
  assert masked.shape == ids.shape and positions.shape == targets.shape == weights.shape == (64, m)
  assert weights.dtype == np.float32 and set(np.unique(weights)) <= {0.0, 1.0}
  selected = _selected(masked, positions, weights, length)

  assert not np.any(selected & ~maskable)  # never a special token or padding
  assert np.array_equal(masked[~selected], ids[~selected])  # only predicted tokens change
  assert abs(selected.sum() / maskable.sum() - 0.15) < 0.01  # ~30k maskable: sd 0.002
  n = selected.sum()
  to_mask = np.sum(masked[selected] == MASK) / n
  unchanged = np.sum(masked[selected] == ids[selected]) / n  # 10% kept + 10% random hitting the original (1/V)
  other = 1.0 - to_mask - unchanged
  assert abs(to_mask - 0.8) < 0.03 and abs(unchanged - 0.1) < 0.025 and abs(other - 0.1) < 0.025  # ~4.5k: sd <= .006

  # Slots: the selected positions in order, their original ids, then zeros.
  used = weights > 0
  assert np.array_equal(used.sum(1), selected.sum(1))
  assert np.all(used[:, :-1] >= used[:, 1:])  # used slots come first
  for b in range(ids.shape[0]):
    k = used[b].sum()
    assert np.array_equal(positions[b, :k], np.flatnonzero(selected[b]))
    assert np.array_equal(targets[b, :k], ids[b, positions[b, :k]])
  assert np.all(positions[~used] == 0) and np.all(targets[~used] == 0)


def test_random_replacements_are_uniform_over_the_vocabulary():
  vocab, length = 64, 256
  ids, _, maskable = _batch(np.random.default_rng(1), 64, length, vocab)
  drawn = _mask(jax.random.key(1), ids, maskable, vocab_size=vocab, max_predictions=length, probability=1.0)
  masked = np.asarray(drawn[0])
  ids, maskable = np.asarray(ids), np.asarray(maskable)
  assert np.array_equal(masked != ids, maskable & (masked != ids))
  random_tokens = masked[maskable & (masked != ids) & (masked != MASK)]  # ~10% of ~10k; ~16 per id
  counts = np.bincount(random_tokens, minlength=vocab)
  others = np.delete(counts, MASK)  # a random [MASK] is indistinguishable from a masked one
  expected = random_tokens.size / (vocab - 1)
  assert random_tokens.size > 0.08 * maskable.sum()
  assert np.all(np.abs(others - expected) < 5 * math.sqrt(expected) + 1), counts  # special ids included


def test_masking_is_deterministic_per_rng_and_jittable():
  ids, _, maskable = _batch(np.random.default_rng(2), 8, 64, 100)
  kw = dict(vocab_size=100, max_predictions=default_max_predictions(64))
  first = _mask(jax.random.key(3), ids, maskable, **kw)
  again = _mask(jax.random.key(3), ids, maskable, **kw)
  other = _mask(jax.random.key(4), ids, maskable, **kw)
  eager = bert_masking(jax.random.key(3), ids, maskable, mask_id=MASK, **kw)
  for a, b, c in zip(first, again, eager):
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
  assert not np.array_equal(first[0], other[0]) and not np.array_equal(first[1], other[1])


def test_overflow_beyond_the_slots_unselects_cleanly():
  length, m = 128, 3
  ids, _, maskable = _batch(np.random.default_rng(5), 16, length, 100)
  full = [np.asarray(x) for x in _mask(jax.random.key(6), ids, maskable, vocab_size=100, max_predictions=length)]
  tiny = [np.asarray(x) for x in _mask(jax.random.key(6), ids, maskable, vocab_size=100, max_predictions=m)]
  ids = np.asarray(ids)
  full_selected = _selected(full[0], full[1], full[3], length)
  drawn = full_selected.sum(1)
  assert 8 <= np.sum(drawn > m) < 16  # most rows overflow, some do not
  kept = _selected(tiny[0], tiny[1], tiny[3], length)
  np.testing.assert_array_equal(tiny[3].sum(1), np.minimum(drawn, m))
  for b in range(16):
    first = np.flatnonzero(full_selected[b])[:m]  # the same draws, cut to the first m in position order
    np.testing.assert_array_equal(tiny[1][b, : first.size], first)
    np.testing.assert_array_equal(tiny[2][b, : first.size], ids[b, first])
  np.testing.assert_array_equal(tiny[0][kept], full[0][kept])  # the kept ones are prepared as before
  np.testing.assert_array_equal(tiny[0][~kept], ids[~kept])  # the dropped ones are restored


def _binomial_tail(n: int, p: float, cap: int) -> float:
  return sum(math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(cap + 1, n + 1))


@pytest.mark.parametrize("length", [1, 5, 8, 16, 17, 33, 64, 100, 128, 256, 512, 1024])
def test_default_cap_overflows_with_negligible_probability(length):
  cap = default_max_predictions(length)
  assert 1 <= cap <= length
  assert _binomial_tail(length, 0.15, cap) < 2e-7
  if length >= 64:
    assert cap < 0.5 * length  # still far fewer slots than positions


def _mask_logits(model: Bert, params):
  """Encode the masked ids, gather the K positions' states, project only those to the vocabulary."""

  def mask_logits(ids_NxL, valid_NxL, types_NxL, positions_NxK):
    hidden_NxLxD = model.apply(params, ids_NxL, valid_NxL, types_NxL).hidden_BxTxD
    picked_NxKxD = jnp.take_along_axis(hidden_NxLxD, positions_NxK[..., None], axis=1)
    logits_NxKxV = model.apply(params, picked_NxKxD, method=Bert.mlm_logits)
    assert logits_NxKxV.shape == (*positions_NxK.shape, ref.VOCAB) and logits_NxKxV.dtype == jnp.float32
    return logits_NxKxV

  return mask_logits


def test_mlm_loss_matches_transformers_bert_for_masked_lm(tmp_path):
  hf_model = ref.make_hf(ref.BERT_MLM)
  config, params = load_bert(str(ref.save_hf(hf_model, tmp_path)), param_dtype="float32", dtype="float32")
  model = Bert(config)
  length = 24
  ids, valid, maskable = _batch(np.random.default_rng(7), 4, length, ref.VOCAB)
  types = jnp.asarray(np.arange(length)[None, :] >= 10, jnp.int32) * valid  # a second segment
  m = default_max_predictions(length, 0.3)
  masked, positions, targets, weights = _mask(
      jax.random.key(8), ids, maskable, vocab_size=ref.VOCAB, max_predictions=m, probability=0.3
  )

  def loss(p):
    total, count = mlm_loss_sum(_mask_logits(model, p), masked, valid, types, positions, targets, weights)
    return total / count, count

  (ours, count), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)

  labels = np.full((4, length), -100)
  used = np.asarray(weights) > 0
  rows = np.broadcast_to(np.arange(4)[:, None], used.shape)
  labels[rows[used], np.asarray(positions)[used]] = np.asarray(targets)[used]
  assert count == used.sum() > 8
  with torch.no_grad():
    theirs = hf_model(
        input_ids=torch.tensor(np.asarray(masked), dtype=torch.long),
        attention_mask=torch.tensor(np.asarray(valid), dtype=torch.long),
        token_type_ids=torch.tensor(np.asarray(types), dtype=torch.long),
        labels=torch.tensor(labels),
    ).loss.item()
  np.testing.assert_allclose(float(ours), theirs, rtol=1e-5)
  assert ours > 0.5  # not a degenerate (near-zero) loss that would match anything
  leaves = jax.tree.leaves(grads)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
  assert sum(float(jnp.sum(jnp.abs(g))) for g in leaves) > 0


def test_combine_with_mlm_is_the_papers_mix():
  total, count = combine_with_mlm(jnp.float32(6.0), jnp.float32(3.0), jnp.float32(40.0), jnp.float32(10.0), alpha=0.25)
  assert float(count) == 3.0
  np.testing.assert_allclose(float(total / count), 0.75 * 2.0 + 0.25 * 4.0, rtol=1e-6)
  # The default is the paper's α = 1e-4 on the MLM term (PET's --alpha 0.9999 on the task term).
  total, count = combine_with_mlm(6.0, 3.0, 40.0, 10.0)
  assert PAPER_ALPHA == 1e-4
  np.testing.assert_allclose(float(total / count), 0.9999 * 2.0 + 0.0001 * 4.0, rtol=1e-6)
  # No predicted tokens: no MLM term (not NaN).
  total, count = combine_with_mlm(6.0, 3.0, 0.0, 0.0, alpha=0.25)
  np.testing.assert_allclose(float(total / count), 0.75 * 2.0, rtol=1e-6)
  # Microbatches: summed then divided once; the task term is the full-batch mean.
  parts = [combine_with_mlm(6.0, 3.0, 40.0, 10.0, alpha=0.5), combine_with_mlm(2.0, 1.0, 8.0, 4.0, alpha=0.5)]
  total, count = sum(p[0] for p in parts), sum(p[1] for p in parts)
  np.testing.assert_allclose(float(total / count), 0.5 * 8.0 / 4.0 + 0.5 * (3 * 4.0 + 1 * 2.0) / 4.0, rtol=1e-6)
