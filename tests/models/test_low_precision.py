"""bfloat16 matmuls accumulate in float32, forward and backward (jaxprompt/models/low_precision.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprompt.models import layers, low_precision


def _operands(seed=0):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=(3, 5, 32)), jnp.bfloat16)
  kernel = jnp.asarray(rng.normal(size=(32, 4, 6)), jnp.bfloat16)
  return x, kernel


def _dot_generals(jaxpr):
  """Every dot_general in a jaxpr, inside custom rules and sub-jaxprs too."""
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      yield eqn
    for param in eqn.params.values():
      for sub in param if isinstance(param, (list, tuple)) else [param]:
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          yield from _dot_generals(inner)


def test_every_product_of_a_bfloat16_projection_takes_bfloat16_operands_into_float32():
  # The point of the module: no float32 x bfloat16 product (XLA converts the frozen kernel to
  # float32 on every step) and no bfloat16-accumulated one (XLA:CPU's slow path).
  x, kernel = _operands()
  loss = lambda x, k: jnp.sum(layers.flat_matmul(x, k, 1, jnp.bfloat16).astype(jnp.float32) ** 2)
  jaxpr = jax.make_jaxpr(jax.grad(loss, argnums=(0, 1)))(x, kernel).jaxpr
  dots = list(_dot_generals(jaxpr))
  assert len(dots) == 3  # forward, dx, dkernel
  for eqn in dots:
    assert [v.aval.dtype for v in eqn.invars] == [jnp.bfloat16, jnp.bfloat16], eqn
    assert eqn.params["preferred_element_type"] == jnp.float32, eqn


def test_bfloat16_projection_and_its_gradients_match_float32_math_on_the_same_values():
  x, kernel = _operands()
  x32, k32 = x.astype(jnp.float32), kernel.astype(jnp.float32)
  ours = layers.flat_matmul(x, kernel, 1, jnp.bfloat16)
  exact = jnp.einsum("abk,kho->abho", x32, k32, precision="highest")
  assert ours.dtype == jnp.bfloat16
  # One rounding of a float32 sum: within half a bfloat16 ulp (2^-9 relative) of the exact value.
  np.testing.assert_allclose(np.asarray(ours, np.float32), exact, rtol=2.0**-8, atol=1e-3)

  weights = jnp.asarray(np.random.default_rng(1).normal(size=ours.shape), jnp.float32)
  loss = lambda x, k: jnp.sum(layers.flat_matmul(x, k, 1, jnp.bfloat16).astype(jnp.float32) * weights)
  reference = lambda x, k: jnp.sum(jnp.einsum("abk,kho->abho", x, k, precision="highest") * weights)
  dx, dk = jax.grad(loss, argnums=(0, 1))(x, kernel)
  want_dx, want_dk = jax.grad(reference, argnums=(0, 1))(x32, k32)
  assert dx.dtype == dk.dtype == jnp.bfloat16
  # The cotangent is rounded to bfloat16 once before each product, then each result once: two
  # roundings of 2^-9 relative each, summed over the products' terms (norm-wise, not per element,
  # where the terms cancel).
  for got, want in ((dx, want_dx), (dk, want_dk)):
    rel = np.linalg.norm(np.asarray(got, np.float32) - want) / np.linalg.norm(want)
    assert rel < 2.0**-7, rel


def test_float32_operands_take_jnp_einsum_unchanged():
  x, kernel = (a.astype(jnp.float32) for a in _operands())
  spec = "ABy,yz->ABz"
  flat = kernel.reshape(32, -1)
  ours = jax.make_jaxpr(lambda a, b: low_precision.einsum(spec, a, b, jnp.float32))(x, flat)
  plain = jax.make_jaxpr(lambda a, b: jnp.einsum(spec, a, b, preferred_element_type=jnp.float32))(x, flat)
  assert str(ours) == str(plain)


@pytest.mark.parametrize("spec, error", [
    ("bqk,bsk->bqs", "batch dims"),  # XLA:CPU cannot run all their bfloat16 transposes
    ("ak,kn->n", "summed within one operand"),  # `a` has no transpose as an einsum
])
def test_products_without_an_einsum_transpose_or_with_batch_dims_are_refused(spec, error):
  shapes = {"bqk,bsk->bqs": ((2, 3, 4), (2, 5, 4)), "ak,kn->n": ((2, 4), (4, 3))}[spec]
  a, b = (jnp.ones(s, jnp.bfloat16) for s in shapes)
  with pytest.raises(ValueError, match=error):
    low_precision.einsum(spec, a, b, jnp.float32)
