"""Frozen kernels kept quantised on the device, dequantised inside the jitted matmul (weight-only).

A `QuantizedKernel` stands where a `Projection`'s float kernel would be in the frozen param tree.
Its weights are cut, along one contracting axis (`axis`), into blocks of `block` consecutive
weights; each block has a float scale (and, for "uint4", an offset):

    int8   w = scale * q,           q int8 in -127..127          (a block per output channel, or Q8_0's 32)
    int4   w = scale * (q - 8),     q 4-bit in 0..15              (GGUF Q4_0's formula)
    uint4  w = scale * q + offset,  q 4-bit in 0..15              (GGUF Q4_1)
    nf4    w = scale * NF4[q],      q 4-bit in 0..15              (QLoRA's NormalFloat levels)

4-bit codes are packed two to a byte as GGUF packs them: in each block of B weights, byte j holds
weight j in its low nibble and weight j + B/2 in its high one. XLA's own int4 arrays take a byte per
weight on CPU, and GGUF blocks then load without repacking.

The matmul (`dot_general`) dequantises to the compute dtype and runs a float dot; its backward pass
dequantises again rather than keep the float kernel as a residual, so a step holds the quantised
backbone plus one layer's float kernels, never the float model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

SCHEMES = ("int8", "int4", "uint4", "nf4")
FOUR_BIT = ("int4", "uint4", "nf4")

# QLoRA's NF4 levels (Dettmers et al. 2023, appendix E; bitsandbytes' table): quantiles of N(0, 1)
# scaled to [-1, 1], with 0 exact.
NF4_LEVELS = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0,
], np.float32)


@flax.struct.dataclass
class QuantizedKernel:
  """A kernel of shape `shape` as codes, per-block scales and (uint4) per-block offsets.

  `values`: int8 codes of the kernel's shape, or 4-bit codes packed in uint8 with `axis` halved.
  `scale`, `offset`: the kernel's shape with `axis` divided by `block`.
  `axis` counts from the end, so it holds for one layer's slice of a stacked (scanned) kernel too.
  """

  values: Any
  scale: Any
  offset: Any = None
  scheme: str = flax.struct.field(pytree_node=False, default="int8")
  block: int = flax.struct.field(pytree_node=False, default=0)
  axis: int = flax.struct.field(pytree_node=False, default=-1)

  @property
  def shape(self) -> tuple[int, ...]:
    shape = list(self.values.shape)
    if self.scheme in FOUR_BIT:
      shape[self.axis] *= 2
    return tuple(shape)

  def dequantize(self, dtype: Any) -> jax.Array:
    """The float kernel, computed in float32 and cast to `dtype`."""
    ndim = self.values.ndim
    axis = self.axis % ndim
    blocked = lambda x, width: x.reshape(x.shape[:axis] + (x.shape[axis] // width, width) + x.shape[axis + 1:])
    if self.scheme in FOUR_BIT:
      packed = blocked(self.values, self.block // 2)
      codes = jnp.concatenate([packed & 0xF, packed >> 4], axis=axis + 1)
    else:
      codes = blocked(self.values, self.block)
    if self.scheme == "nf4":
      levels = jnp.take(jnp.asarray(NF4_LEVELS), codes.astype(jnp.int32))
    else:
      levels = codes.astype(jnp.float32) - (8.0 if self.scheme == "int4" else 0.0)
    per_block = lambda x: jnp.expand_dims(x.astype(jnp.float32), axis + 1)
    weights = levels * per_block(self.scale)
    if self.offset is not None:
      weights = weights + per_block(self.offset)
    return weights.reshape(self.shape).astype(dtype)


def matmul(x: jax.Array, kernel: QuantizedKernel, dtype: Any,
           float_matmul: Callable[[jax.Array, jax.Array], jax.Array]) -> jax.Array:
  """`float_matmul(x, kernel)` in `dtype`, the kernel dequantised in the forward and again in the
  backward pass (the kernel is frozen: it gets no gradient)."""
  x = x.astype(dtype)

  def forward(x, kernel):
    return float_matmul(x, kernel.dequantize(dtype))

  @jax.custom_vjp
  def dot(x, kernel):
    return forward(x, kernel)

  def dot_fwd(x, kernel):
    return forward(x, kernel), kernel

  def dot_bwd(kernel, cotangent):
    # jax.vjp, not linear_transpose: float_matmul may carry its own gradient rule (bfloat16 products).
    # The forward product it re-traces is unused, and XLA drops it.
    _, x_vjp = jax.vjp(lambda x_: forward(x_, kernel), jnp.zeros(x.shape, x.dtype))
    return x_vjp(cotangent)[0], None

  dot.defvjp(dot_fwd, dot_bwd)
  return dot(x, kernel)
