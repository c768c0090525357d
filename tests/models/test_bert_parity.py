"""Our BERT / RoBERTa equal transformers' PyTorch models on the same weights: states, pooled output, MLM logits."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest

from jaxprompt.models.bert import Bert
from jaxprompt.weights.bert_loader import load_bert
from tests.models import bert_reference as ref


def _forward(model: Bert, params, ids, mask, types):
  out = model.apply(params, ids, mask, types)
  logits = model.apply(params, out.hidden_BxTxD, method=Bert.mlm_logits) if model.config.has_mlm_head else None
  return out, logits


def _batches(variant: ref.Variant):
  """Right- and left-padded batches of the same shape (one compile), with two segments for BERT."""
  rng = np.random.default_rng(1)
  lengths = np.array([40, 26, 7])
  ids, mask = ref.padded_batch(rng, list(lengths), 40, variant.pad)
  types = None
  if variant.type_vocab_size > 1:
    types = ((np.arange(40)[None] >= lengths[:, None] // 2) & mask).astype(np.int32)
  shift = lambda a: None if a is None else np.stack([np.roll(row, 40 - n) for row, n in zip(a, lengths)])
  return [("right-padded", ids, mask, types), ("left-padded", shift(ids), shift(mask), shift(types))]


@pytest.mark.parametrize("variant", [ref.BERT, ref.ROBERTA, ref.BERT_MLM, ref.ROBERTA_MLM], ids=lambda v: v.name)
def test_outputs_match_transformers(variant, tmp_path):
  hf_model = ref.make_hf(variant)
  config, params = load_bert(str(ref.save_hf(hf_model, tmp_path)), param_dtype="float32", dtype="float32")
  is_mlm = variant in (ref.BERT_MLM, ref.ROBERTA_MLM)
  assert (config.has_pooler, config.has_mlm_head) == (not is_mlm, is_mlm)
  forward = jax.jit(functools.partial(_forward, Bert(config)))

  for name, ids, mask, types in _batches(variant):
    out, logits = forward(params, ids, mask, types)
    expected, expected_pooled = ref.hf_outputs(hf_model, ids, mask, types)
    np.testing.assert_array_equal(out.mask_BxT, mask)
    # Every slot, padding included: padding gets the position (and so the state) Hugging Face gives it.
    got = logits if is_mlm else out.hidden_BxTxD
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0, err_msg=name)
    assert np.abs(expected).max() > 1.0  # the comparison is not between near-zero tensors
    if is_mlm:
      np.testing.assert_array_equal(np.argmax(logits, -1)[mask], np.argmax(expected, -1)[mask])
    else:
      np.testing.assert_allclose(out.pooled_BxD, expected_pooled, atol=1e-4, rtol=0, err_msg=name)
