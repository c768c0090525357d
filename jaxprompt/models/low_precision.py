"""Products of low-precision (bfloat16) operands, accumulated in float32 and rounded once: forward,
and both backward products.

Why not jnp.einsum's own rules: on XLA:CPU a bfloat16 dot with a bfloat16 result takes a slow path
(an Intel Xeon with AMX, T5-small's [1184, 512] x [512, 1024]: 5.2 ms, against 1.2 ms for the same
operands accumulated in float32, and 4.5 ms in float32 throughout). Asking for a float32 result
fixes the forward product only: its transpose multiplies the float32 cotangent by the other
bfloat16 operand, which XLA converts to float32 on every step (for a frozen kernel, the whole
kernel). Here each backward product takes the cotangent rounded to the operands' dtype, as a
bfloat16 product's own cotangent would be, and accumulates in float32 again. On TPUs and GPUs this
is what their matrix units do for bfloat16 anyway.

Other operands (float32 above all) take jnp.einsum unchanged.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def einsum(spec: str, a: jax.Array, b: jax.Array, out_dtype: Any) -> jax.Array:
  """jnp.einsum(spec, a, b) in `out_dtype`: a matmul without batch dims. Each dim of an operand
  appears in the other operand or in the output, so that both transposes are einsums; `...` may
  stand for a's leading dims (named here, since the transposes move them between operands)."""
  if "..." in spec:
    lead = "ABCDEFGH"[: a.ndim - len(spec.split(",")[0].replace("...", ""))]
    spec = spec.replace("...", lead)
  inputs, out = spec.split("->")
  a_dims, b_dims = inputs.split(",")
  if not (set(a_dims) <= set(b_dims + out) and set(b_dims) <= set(a_dims + out)):
    raise ValueError(f"einsum {spec!r}: a dim summed within one operand has no einsum transpose")
  if set(a_dims) & set(b_dims) & set(out):
    # XLA:CPU (jaxlib 0.10) cannot run every bfloat16 x bfloat16 -> float32 dot with batch dims: the
    # attention values product's transposes fail with "Unsupported element type for DotThunk".
    raise ValueError(f"einsum {spec!r}: batch dims are not supported; attention keeps jnp.einsum")
  if a.dtype == b.dtype == jnp.bfloat16:
    return _accumulated(spec, np.dtype(out_dtype), a, b)
  return jnp.einsum(spec, a, b, preferred_element_type=out_dtype)


def _product(spec: str, a: jax.Array, b: jax.Array, out_dtype: Any) -> jax.Array:
  return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32).astype(out_dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _accumulated(spec: str, out_dtype: np.dtype, a: jax.Array, b: jax.Array) -> jax.Array:
  return _product(spec, a, b, out_dtype)


def _accumulated_fwd(spec, out_dtype, a, b):
  return _product(spec, a, b, out_dtype), (a, b)


def _accumulated_bwd(spec, out_dtype, residuals, cotangent):
  del out_dtype
  a, b = residuals
  inputs, out = spec.split("->")
  a_dims, b_dims = inputs.split(",")
  g = cotangent.astype(a.dtype)
  da = _product(f"{out},{b_dims}->{a_dims}", g, b, a.dtype)
  db = _product(f"{out},{a_dims}->{b_dims}", g, a, b.dtype)
  return da, db


_accumulated.defvjp(_accumulated_fwd, _accumulated_bwd)
