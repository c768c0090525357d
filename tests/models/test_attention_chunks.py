"""Attention cut into independent batch pieces (for XLA:CPU's single-threaded batched matmuls) computes
exactly what the whole batch does."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprompt.models import layers

B, Q, S, H, K = 6, 5, 7, 2, 4


@pytest.mark.parametrize("batch,cores,expected", [(8, 2, 2), (7, 2, 1), (6, 4, 3), (1, 16, 1), (8, 1, 1), (4, 8, 4)])
def test_batch_chunks_cut_evenly_at_most_one_per_core(batch, cores, expected):
  assert layers.batch_chunks(batch, cores) == expected


def test_a_batch_spread_over_several_devices_is_not_cut():
  assert jax.device_count() > 1  # tests/conftest.py fakes 8 CPU devices
  assert layers.attention_batch_chunks(8) == 1


def _inputs(bias_batch: int):
  keys = jax.random.split(jax.random.key(0), 4)
  q = jax.random.normal(keys[0], (B, Q, H, K))
  k = jax.random.normal(keys[1], (B, S, H, K))
  v = jax.random.normal(keys[2], (B, S, H, K))
  bias = jax.random.normal(keys[3], (bias_batch, H, Q, S))
  mask = jnp.arange(S)[None, None, None, :] < jnp.array([7, 3, 5, 1, 7, 2])[:, None, None, None]
  return q, k, v, bias, mask


@pytest.mark.parametrize("bias_batch", [1, B])
@pytest.mark.parametrize("chunks", [2, 3])
def test_pieces_give_the_whole_batch_values_and_gradients(bias_batch, chunks):
  q, k, v, bias, mask = _inputs(bias_batch)

  def loss(chunks, q, k, v, bias):
    out = layers.dot_product_attention(q, k, v, bias, mask, 0.5, chunks=chunks)
    return jnp.sum(out * jnp.cos(out)), out

  grad = lambda c: jax.jit(jax.grad(loss, argnums=(1, 2, 3, 4), has_aux=True), static_argnums=0)(c, q, k, v, bias)
  (whole_grads, whole), (cut_grads, cut) = grad(1), grad(chunks)
  np.testing.assert_allclose(cut, whole, rtol=1e-6, atol=1e-6)
  for name, a, b in zip("qkv", cut_grads, whole_grads):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=name)
  np.testing.assert_allclose(cut_grads[3], whole_grads[3], rtol=1e-5, atol=1e-6, err_msg="bias")


def test_each_piece_has_its_own_products():
  q, k, v, bias, mask = _inputs(1)
  jaxpr = jax.make_jaxpr(lambda *a: layers.dot_product_attention(*a, 1.0, chunks=3))(q, k, v, bias, mask)
  dots = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "dot_general"]
  assert [d.invars[0].aval.shape[0] for d in dots] == [B // 3] * 6  # scores and values, per piece


class _DroppedAttention(nn.Module):
  chunks: int

  @nn.compact
  def __call__(self, q, k, v, mask):
    dropout = nn.Dropout(0.5, deterministic=False)
    return layers.dot_product_attention(q, k, v, None, mask, 1.0, dropout, chunks=self.chunks)


def test_pieces_draw_their_own_dropout_masks():
  """Identical examples in two pieces must not share one dropout mask."""
  q, k, v, _, _ = _inputs(1)
  twice = lambda x: jnp.concatenate([x[:1]] * 2)
  mask = jnp.ones((2, 1, Q, S), bool)
  out = _DroppedAttention(2).apply({}, twice(q), twice(k), twice(v), mask, rngs={"dropout": jax.random.key(3)})
  assert not np.allclose(out[0], out[1])
