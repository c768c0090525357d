"""Our T5 equals transformers' PyTorch T5 on the same weights: encoder states, logits, greedy decoding."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxprompt.models.t5 import T5
from jaxprompt.models.t5_decoding import greedy_decode
from jaxprompt.weights.t5_loader import load_t5
from tests.models import t5_reference as ref

VARIANTS = [ref.V1_0, ref.V1_1]


@pytest.fixture(scope="module", params=VARIANTS, ids=lambda v: v.name)
def hf_checkpoint(request, tmp_path_factory):
  model = ref.make_hf_t5(request.param)
  return model, ref.save_hf(model, tmp_path_factory.mktemp(request.param.name))


@pytest.mark.parametrize("scan_layers", [True, False], ids=["scanned", "unrolled"])
def test_encoder_states_and_logits_match_transformers(hf_checkpoint, scan_layers):
  hf_model, directory = hf_checkpoint
  config, params = load_t5(str(directory), param_dtype="float32", dtype="float32", scan_layers=scan_layers)
  rng = np.random.default_rng(1)
  # Lengths past relative_attention_max_distance reach the saturated buckets; padding everywhere.
  ids, mask = ref.padded_batch(rng, [40, 25, 7], 40)
  dec, dec_mask = ref.padded_batch(rng, [12, 5, 9], 12)
  dec[:, 0] = 0

  model = T5(config)
  encoded, encoder_mask = model.apply(params, ids, mask, method=T5.encode)
  logits = model.apply(params, ids, mask, dec, dec_mask)

  np.testing.assert_array_equal(encoder_mask, mask)
  np.testing.assert_allclose(encoded, ref.hf_encoder_states(hf_model, ids, mask), atol=1e-4, rtol=0)
  expected = ref.hf_logits(hf_model, ids, mask, dec, dec_mask)
  for b, length in enumerate(dec_mask.sum(1)):  # padded decoder positions are not predictions
    np.testing.assert_allclose(logits[b, :length], expected[b, :length], atol=1e-4, rtol=0)
  assert np.abs(expected).max() > 1.0  # the comparison is not between near-zero tensors


@pytest.mark.parametrize("variant,seed", [(ref.V1_0, 1), (ref.V1_1, 2)], ids=["v1.0", "v1.1"])
def test_greedy_decoding_with_cache_equals_generate(tmp_path, variant, seed):
  # transformers' generate sizes its cache by the encoder depth, so decoder depth = encoder depth.
  hf_model = ref.make_hf_t5(variant, seed, num_decoder_layers=2)
  with torch.no_grad():  # random tied models otherwise echo the pad token; make EOS reachable
    hf_model.shared.weight[0] = 0
    hf_model.shared.weight[1] *= 2.5
  config, params = load_t5(str(ref.save_hf(hf_model, tmp_path)), param_dtype="float32", dtype="float32")
  ids, mask = ref.padded_batch(np.random.default_rng(seed), [30, 17, 5, 12], 30)
  with torch.no_grad():
    expected = hf_model.generate(
        input_ids=torch.tensor(ids, dtype=torch.long),
        attention_mask=torch.tensor(mask, dtype=torch.long),
        max_new_tokens=16, do_sample=False, num_beams=1,
    ).numpy()[:, 1:]  # drop the decoder start token

  decode = jax.jit(functools.partial(greedy_decode, T5(config), max_decode_len=16))
  tokens = np.asarray(decode(params, ids, mask))

  np.testing.assert_array_equal(tokens[:, : expected.shape[1]], expected)
  assert (expected == config.eos_token_id).any(), "the reference should end some sequence early"
  assert len(np.unique(expected)) > 3, "the reference output should not be degenerate"


def test_cached_decoding_logits_equal_teacher_forcing(hf_checkpoint):
  _, directory = hf_checkpoint
  config, params = load_t5(str(directory), param_dtype="float32", dtype="float32")
  model = T5(config)
  rng = np.random.default_rng(3)
  ids, mask = ref.padded_batch(rng, [20, 9], 20)
  dec, _ = ref.padded_batch(rng, [8, 8], 8)
  full = model.apply(params, ids, mask, dec)

  encoded, encoder_mask = model.apply(params, ids, mask, method=T5.encode)
  cache = model.init_cache(2, 8)
  decode_step = jax.jit(functools.partial(model.apply, method=T5.decode))
  steps = []
  for t in range(8):
    logits, cache = decode_step(params, dec[:, t : t + 1], encoded, encoder_mask, None, None, cache)
    steps.append(logits[:, 0])
  np.testing.assert_allclose(jnp.stack(steps, 1), full, atol=1e-5, rtol=0)
