"""Choosing the next token: transformers' temperature and top-p warpers as the reference for the
filtering, the sampled frequencies against the filtered distribution, and seeds per example."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

from jaxprompt.models.sampling import Sampling, filtered_logits, next_tokens, sampling_of


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 0.9), (1.5, 0.5), (0.3, 0.05), (2.0, 0.999)])
def test_filtering_equals_transformers_warpers(temperature, top_p):
  logits = np.random.default_rng(0).normal(size=(6, 50)).astype(np.float32) * 3
  ours = filtered_logits(jnp.asarray(logits), jnp.full(6, temperature), jnp.full(6, top_p))
  reference = TopPLogitsWarper(top_p)(None, TemperatureLogitsWarper(temperature)(None, torch.tensor(logits))).numpy()
  np.testing.assert_array_equal(np.isinf(ours), np.isinf(reference))
  kept = ~np.isinf(reference)
  np.testing.assert_allclose(np.asarray(ours)[kept], reference[kept], rtol=1e-6)


def test_each_row_filters_with_its_own_settings():
  logits = np.random.default_rng(1).normal(size=(3, 20)).astype(np.float32)
  t, p = jnp.array([1.0, 0.5, 2.0]), jnp.array([1.0, 0.3, 0.8])
  together = filtered_logits(jnp.asarray(logits), t, p)
  for row in range(3):
    alone = filtered_logits(jnp.asarray(logits[row : row + 1]), t[row : row + 1], p[row : row + 1])
    np.testing.assert_array_equal(together[row], alone[0])


def test_sampled_frequencies_follow_the_filtered_distribution():
  logits_V = jnp.log(jnp.array([0.5, 0.25, 0.15, 0.07, 0.03]))
  n = 4000
  tiled = jnp.tile(logits_V, (n, 1))
  draw = jax.jit(lambda seeds, t, p: next_tokens(tiled, 3, Sampling(t, p, seeds, jnp.full(n, 5))))
  seeds = jnp.arange(n, dtype=jnp.int32)
  counts = np.bincount(draw(seeds, jnp.ones(n), jnp.ones(n)), minlength=5) / n
  np.testing.assert_allclose(counts, [0.5, 0.25, 0.15, 0.07, 0.03], atol=0.03)
  # top_p 0.8: the mass before tokens 0, 1, 2 is 0, 0.5, 0.75 < 0.8, so three tokens, renormalised
  nucleus = np.bincount(draw(seeds, jnp.ones(n), jnp.full(n, 0.8)), minlength=5) / n
  np.testing.assert_allclose(nucleus, np.array([0.5, 0.25, 0.15, 0, 0]) / 0.9, atol=0.03)
  assert nucleus[3:].sum() == 0
  hot = np.bincount(draw(seeds, jnp.full(n, 4.0), jnp.ones(n)), minlength=5) / n  # flatter than the logits
  flattened = np.exp(np.asarray(logits_V) / 4.0)
  np.testing.assert_allclose(hot, flattened / flattened.sum(), atol=0.03)


def test_greedy_rows_and_batches_take_the_argmax():
  logits = jnp.asarray(np.random.default_rng(2).normal(size=(4, 30)).astype(np.float32))
  argmax = jnp.argmax(logits, axis=-1)
  np.testing.assert_array_equal(next_tokens(logits, 0, None), argmax)
  greedy = Sampling(jnp.zeros(4), jnp.ones(4), jnp.arange(4, dtype=jnp.int32), jnp.full(4, 30))
  np.testing.assert_array_equal(next_tokens(logits, 0, greedy), argmax)
  mixed = Sampling(jnp.array([0.0, 50.0, 0.0, 50.0]), jnp.ones(4), jnp.arange(4, dtype=jnp.int32), jnp.full(4, 30))
  tokens = np.asarray(next_tokens(logits, 0, mixed))
  assert tokens[0] == argmax[0] and tokens[2] == argmax[2]


def test_a_draw_depends_on_its_seed_and_step_only():
  logits = jnp.zeros((8, 1000))  # uniform: any two different keys almost surely disagree
  hot = lambda seeds: Sampling(jnp.ones(len(seeds)), jnp.ones(len(seeds)), jnp.asarray(seeds, jnp.int32),
                               jnp.full(len(seeds), 1000))
  first = np.asarray(next_tokens(logits, 0, hot([7] * 8)))
  assert len(set(first)) == 1  # one seed, one step: the same token in every row
  assert next_tokens(logits[:1], 0, hot([7]))[0] == first[0]  # and alone
  assert len(set(np.asarray(next_tokens(logits, 0, hot(range(8)))))) > 4  # different seeds
  assert next_tokens(logits[:1], 1, hot([7]))[0] != first[0]  # the next step draws anew


def test_ids_past_the_tokenizers_vocabulary_are_never_drawn():
  """T5's logits cover 32,128 ids, its tokenizer 32,100: the padded rows must not be sampled."""
  logits = jnp.zeros((512, 40)).at[:, 30:].set(5.0)  # the padded ids are the most likely
  hot = Sampling(jnp.full(512, 2.0), jnp.ones(512), jnp.arange(512, dtype=jnp.int32), jnp.full(512, 30))
  tokens = np.asarray(next_tokens(logits, 0, hot))
  assert tokens.max() < 30 and len(set(tokens)) > 10


def test_batches_without_sampling_columns_are_greedy():
  assert sampling_of({"inputs": jnp.zeros((2, 3))}) is None
  columns = {"temperature": jnp.ones(2), "top_p": jnp.ones(2), "seed": jnp.zeros(2, jnp.int32),
             "sample_vocab": jnp.full(2, 9, jnp.int32)}
  assert sampling_of(columns) == Sampling(*columns.values())
