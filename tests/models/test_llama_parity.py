"""Our Llama equals transformers' LlamaForCausalLM on the same weights: logits and greedy generation."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest
import torch

from jaxprompt.models.llama import Llama
from jaxprompt.models.llama_decoding import greedy_generate
from jaxprompt.weights.llama_loader import load_llama
from tests.models import llama_reference as ref

LLAMA3_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 16}


@pytest.mark.parametrize("tied,scaling", [(False, None), (True, None), (False, LLAMA3_SCALING)],
                         ids=["untied", "tied", "llama3-rope"])
@pytest.mark.parametrize("scan_layers", [True, False], ids=["scanned", "unrolled"])
def test_logits_match_transformers_on_left_padded_batches(tmp_path, tied, scaling, scan_layers):
  hf_model = ref.make_hf_llama(tied, scaling)
  hf_model.save_pretrained(tmp_path)
  config, params = load_llama(str(tmp_path), param_dtype="float32", dtype="float32", scan_layers=scan_layers)
  assert config.tie_word_embeddings == tied and (config.rope_scaling is not None) == (scaling is not None)
  ids, mask = ref.left_padded(np.random.default_rng(0), [20, 11, 4], 20)
  logits = jax.jit(functools.partial(Llama(config).apply, method=Llama.forward_logits))(params, ids, mask)
  expected = ref.hf_logits(hf_model, ids, mask, ref.positions(mask))
  for b in range(3):
    np.testing.assert_allclose(logits[b][mask[b]], expected[b][mask[b]], atol=1e-4, rtol=0)
  assert np.abs(expected).max() > 1.0


def test_greedy_generation_with_cache_equals_generate(tmp_path):
  hf_model = ref.make_hf_llama(seed=3)
  with torch.no_grad():
    hf_model.lm_head.weight[2] *= 3.0  # make EOS reachable, so stopping is exercised
  hf_model.save_pretrained(tmp_path)
  config, params = load_llama(str(tmp_path), param_dtype="float32", dtype="float32")
  ids, mask = ref.left_padded(np.random.default_rng(1), [16, 9, 5, 12], 16)
  with torch.no_grad():
    expected = hf_model.generate(input_ids=torch.tensor(ids, dtype=torch.long),
                                 attention_mask=torch.tensor(mask, dtype=torch.long),
                                 max_new_tokens=12, do_sample=False, num_beams=1).numpy()[:, 16:]
  generate = jax.jit(functools.partial(greedy_generate, Llama(config), max_new_tokens=12, eos_id=2, pad_id=0))
  tokens = np.asarray(generate(params, ids, mask))
  np.testing.assert_array_equal(tokens[:, : expected.shape[1]], expected)
  assert (expected == 2).any() and len(np.unique(expected)) > 5
