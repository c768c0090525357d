"""Lester et al.'s prompt initialisers, as Flax initialisers `(rng, shape, dtype) -> [P, D]`.

The vocabulary-based ones read the frozen embedding table, so the prompt starts in the region of
embedding space the model knows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

Initializer = Callable[[jax.Array, tuple[int, ...], jnp.dtype], jax.Array]


def uniform(scale: float = 0.5) -> Initializer:
  """Uniform in [-scale, scale] (Lester et al.: 0.5)."""
  def init(rng, shape, dtype=jnp.float32):
    return jax.random.uniform(rng, shape, dtype, -scale, scale)

  return init


def sampled_vocab(embedding_VxD: jax.Array, population: int = 5000) -> Initializer:
  """Rows drawn without replacement from the first `population` rows of the embedding table.

  SentencePiece orders its pieces by frequency, so these are the most frequent tokens.
  """
  def init(rng, shape, dtype=jnp.float32):
    num, dim = shape
    _check_dim("sampled_vocab", embedding_VxD, dim)
    pool = min(population, embedding_VxD.shape[0])
    rows = jax.random.choice(rng, pool, (num,), replace=num > pool)
    return jnp.take(embedding_VxD, rows, axis=0).astype(dtype)

  return init


def class_labels(
    embedding_VxD: jax.Array, label_token_ids: Sequence[Sequence[int]], population: int = 5000
) -> Initializer:
  """The first rows are the class labels' embeddings (a multi-token label: their mean); the rest
  are sampled from the vocabulary, as Lester et al. do."""
  if not label_token_ids or any(len(ids) == 0 for ids in label_token_ids):
    raise ValueError(f"class-label init needs a non-empty token list per label, got {label_token_ids}")
  fill = sampled_vocab(embedding_VxD, population)

  def init(rng, shape, dtype=jnp.float32):
    num, dim = shape
    _check_dim("class_labels", embedding_VxD, dim)
    if len(label_token_ids) > num:
      raise ValueError(f"class-label init: {len(label_token_ids)} labels do not fit a prompt of length {num}")
    labels = jnp.stack([
        jnp.mean(jnp.take(embedding_VxD, jnp.asarray(ids), axis=0).astype(jnp.float32), axis=0)
        for ids in label_token_ids
    ])
    rest = fill(rng, (num - len(label_token_ids), dim), jnp.float32)
    return jnp.concatenate([labels, rest], axis=0).astype(dtype)

  return init


def from_file(path: str | Path) -> Initializer:
  """A saved prompt (`.npy`, [P, D]); its shape must be the prompt's."""
  prompt = np.load(path)

  def init(rng, shape, dtype=jnp.float32):
    del rng
    if tuple(prompt.shape) != tuple(shape):
      raise ValueError(f"prompt file {path} has shape {tuple(prompt.shape)}, the prompt needs {tuple(shape)}")
    return jnp.asarray(prompt, dtype)

  return init


def _check_dim(name: str, embedding_VxD: jax.Array, dim: int) -> None:
  if embedding_VxD.shape[1] != dim:
    raise ValueError(f"{name} init: embedding table {embedding_VxD.shape} does not match prompt width {dim}")
