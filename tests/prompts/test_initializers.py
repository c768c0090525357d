"""Lester et al.'s prompt initialisers on the real T5 vocabulary."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprompt.models.prompt import place_soft_tokens
from jaxprompt.prompts import initializers
from jaxprompt.prompts.soft_prompt import SoftPrompt
from jaxprompt.weights.tokenizer import load_t5_tokenizer
from tests.conftest import SHARED_DATA

VOCAB, DIM = 32128, 16
TABLE = jax.random.normal(jax.random.key(0), (VOCAB, DIM))


def test_uniform_stays_in_range():
  prompt = initializers.uniform(0.5)(jax.random.key(1), (100, DIM))
  assert prompt.shape == (100, DIM) and float(jnp.abs(prompt).max()) <= 0.5 and float(prompt.std()) > 0.25


def test_sampled_vocab_takes_distinct_rows_of_the_most_frequent_tokens():
  prompt = np.asarray(initializers.sampled_vocab(TABLE, population=5000)(jax.random.key(2), (100, DIM)))
  rows = [int(np.flatnonzero((np.asarray(TABLE) == p).all(axis=1))[0]) for p in prompt]
  assert len(set(rows)) == 100 and max(rows) < 5000


def test_class_labels_start_the_prompt_and_average_multi_token_labels():
  tokenizer = load_t5_tokenizer(SHARED_DATA / "t5_vocab" / "spiece.model")
  labels = ["positive", "not_entailment"]
  ids = [tokenizer.encode(label, add_eos=False) for label in labels]
  assert len(ids[0]) == 1 and len(ids[1]) > 1  # one single-token and one multi-token label
  prompt = initializers.class_labels(TABLE, ids)(jax.random.key(3), (10, DIM))
  np.testing.assert_allclose(prompt[0], TABLE[ids[0][0]], rtol=1e-6)
  np.testing.assert_allclose(prompt[1], TABLE[jnp.asarray(ids[1])].mean(0), rtol=1e-6)
  rest = np.asarray(prompt[2:])
  assert all((np.asarray(TABLE[:5000]) == row).all(axis=1).any() for row in rest)  # sampled vocabulary
  with pytest.raises(ValueError, match="2 labels do not fit a prompt of length 1"):
    initializers.class_labels(TABLE, ids)(jax.random.key(3), (1, DIM))


def test_from_file_checks_the_shape(tmp_path):
  saved = np.arange(6 * DIM, dtype=np.float32).reshape(6, DIM)
  np.save(tmp_path / "p.npy", saved)
  np.testing.assert_array_equal(initializers.from_file(tmp_path / "p.npy")(None, (6, DIM)), saved)
  with pytest.raises(ValueError, match=r"has shape \(6, 16\), the prompt needs \(8, 16\)"):
    initializers.from_file(tmp_path / "p.npy")(None, (8, DIM))


@pytest.mark.parametrize("placement,insert_at", [("prefix", None), ("after_bos", [1, 1]), ("suffix", [3, 5])])
def test_placements(placement, insert_at):
  mask = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
  method = SoftPrompt(4, DIM, initializers.uniform(), placement)
  params = nn.meta.unbox(method.init(jax.random.key(0), {"input_mask": mask}))
  prompt = method.apply(params, {"input_mask": mask})
  assert prompt.embeddings_BxPxD.shape == (1, 4, DIM)
  assert (prompt.insert_at_B is None) == (insert_at is None)
  if insert_at is not None:
    np.testing.assert_array_equal(prompt.insert_at_B, insert_at)
    # The suffix of the short example lands right after its last valid token, before the padding.
    placed = place_soft_tokens(jnp.zeros((2, 5, DIM)), mask, prompt)
    assert placed.mask_BxT.shape == (2, 9)
  with pytest.raises(ValueError, match="placement 'middle' is not one of"):
    SoftPrompt(4, DIM, initializers.uniform(), "middle")
