"""The decoder objective: batched rank classification and cached evaluation equal plain forwards."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprompt.models.llama import Llama
from jaxprompt.models.llama_config import LlamaConfig
from jaxprompt.models.llama_decoding import greedy_generate
from jaxprompt.objectives import causal_lm
from jaxprompt.prompts import initializers
from jaxprompt.prompts.soft_prompt import SoftPrompt
from tests.models.llama_reference import left_padded

CONFIG = LlamaConfig.tiny(dtype="float32")
METHOD = SoftPrompt(3, CONFIG.hidden_size, initializers.uniform())
LABELS = np.array([[7, 0], [9, 11], [13, 0]], np.int32)  # one single-token, one two-token, one single
LABEL_MASK = LABELS > 0


@pytest.fixture(scope="module")
def setup():
  ids = jnp.ones((1, 4), jnp.int32)
  params = nn.meta.unbox(jax.jit(functools.partial(Llama(CONFIG).init, method=Llama.forward_logits))(jax.random.key(0), ids, ids > 0))
  inputs, input_mask = left_padded(np.random.default_rng(0), [8, 5, 3], 8)
  targets = np.array([[9, 11], [7, 0], [13, 0]], np.int32)
  batch = {"inputs": inputs, "input_mask": input_mask, "targets": targets, "target_mask": targets > 0,
           "label": np.array([1, 0, 2], np.int32), "example_mask": np.ones(3, bool)}
  prompt_params = nn.meta.unbox(METHOD.init(jax.random.key(1), batch))["params"]
  return params, prompt_params, batch


@jax.jit
def _forward_logp(params, prompt_params, ids, mask):
  prompt = METHOD.apply({"params": prompt_params}, {"input_mask": mask})
  return jax.nn.log_softmax(Llama(CONFIG).apply(params, ids, mask, prompt, method=Llama.forward_logits)[0])


def _sequence_logp(params, prompt_params, inputs, input_mask, answer):
  """log p(answer | prompted input) from one plain forward over the concatenation."""
  ids = jnp.concatenate([inputs[None], answer[None]], axis=1)
  mask = jnp.concatenate([input_mask[None], answer[None] > 0], axis=1)
  logp = _forward_logp(params, prompt_params, ids, mask)
  n = int((answer > 0).sum())
  start = logp.shape[0] - len(answer) - 1
  return sum(float(logp[start + j, answer[j]]) for j in range(n))


def test_rank_classification_equals_scoring_each_label_alone(setup):
  params, prompt_params, batch = setup
  out = jax.jit(functools.partial(causal_lm.eval_step, model=Llama(CONFIG), method=METHOD,
                                  max_decode_len=4, eos_id=2, pad_id=0))(prompt_params, params, batch, LABELS, LABEL_MASK)
  for b in range(3):
    for c in range(3):
      expected = _sequence_logp(params, prompt_params, batch["inputs"][b], batch["input_mask"][b], LABELS[c])
      np.testing.assert_allclose(out["label_scores"][b, c], expected, atol=1e-4)
    expected = _sequence_logp(params, prompt_params, batch["inputs"][b], batch["input_mask"][b], batch["targets"][b])
    np.testing.assert_allclose(out["target_logp"][b], expected, atol=1e-4)
  prompt = METHOD.apply({"params": prompt_params}, batch)
  decoded = greedy_generate(Llama(CONFIG), params, batch["inputs"], batch["input_mask"], 4, prompt, 2, 0)
  np.testing.assert_array_equal(out["decoded"], decoded)


def test_label_words_loss_is_a_softmax_over_the_labels(setup):
  params, prompt_params, batch = setup
  label_ids = jnp.array([7, 9, 13])
  total, count = causal_lm.loss_sum(prompt_params, params, batch, jax.random.key(0), model=Llama(CONFIG),
                                          method=METHOD, label_token_ids=label_ids)
  expected = 0.0
  for b in range(3):
    scores = [_sequence_logp(params, prompt_params, batch["inputs"][b], batch["input_mask"][b], np.array([t, 0])) for t in label_ids]
    expected -= scores[batch["label"][b]] - float(jax.nn.logsumexp(jnp.array(scores)))
  assert int(count) == 3
  np.testing.assert_allclose(total, expected, atol=1e-4)
