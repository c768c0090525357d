"""Building blocks shared by the backbones: projections, norms, embeddings, attention, layer stacks.

Every param is created with logical axis names (nn.with_logical_partitioning); the rules table in the
run config maps them to mesh axes. Params are stored in `param_dtype`, cast to the compute `dtype`
at use; attention logits and softmax are computed in float32.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxprompt.models import layer_scan, low_precision, quantized

Initializer = Callable[..., jax.Array]
# A large negative logit for masked keys. Finite, so that a fully masked row (a padded query)
# gives a uniform distribution instead of NaNs.
MASKED_LOGIT = -1e10


def constrain(x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
  """Pins a hot activation's sharding by logical axis names (a no-op without rules)."""
  return nn.with_logical_constraint(x, tuple(axes))


class Projection(nn.Module):
  """x @ kernel contracting the trailing `len(in_axes)` dims of x into the dims `out_shape`."""

  out_shape: tuple[int, ...]
  in_axes: tuple[str, ...]
  out_axes: tuple[str, ...]
  kernel_init: Initializer
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  output_dtype: Any = None  # None: the compute dtype

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    num_in = len(self.in_axes)
    in_shape = x.shape[x.ndim - num_in :]
    preferred = self.output_dtype or self.dtype
    # A frozen kernel loaded quantised (config.model.quantization) is read as it is: `self.param`
    # would check it against the float kernel's shape.
    stored = self.get_variable("params", "kernel") if self.has_variable("params", "kernel") else None
    if isinstance(stored, quantized.QuantizedKernel):
      return quantized.matmul(x, stored, self.dtype, lambda x_, kernel: flat_matmul(x_, kernel, num_in, preferred))
    kernel = self.param(
        "kernel",
        nn.with_logical_partitioning(self.kernel_init, self.in_axes + self.out_axes),
        in_shape + tuple(self.out_shape),
        self.param_dtype,
    )
    return flat_matmul(x.astype(self.dtype), kernel.astype(self.dtype), num_in, preferred)


def flat_matmul(x: jax.Array, kernel: jax.Array, num_in: int, preferred_element_type: Any) -> jax.Array:
  """x [..., *in] @ kernel [*in, *out] as one 2-D matmul of the flattened dims.

  Why not one dot_general contracting several dims: its backward (dx = dy kernel^T) then transposes
  the kernel with its head dims split, and XLA:CPU copies every frozen [embed, heads, kv] kernel into
  the transposed layout on each step; a 2-D kernel's transpose folds into the matmul as a contracting
  dim, with no copy (the reshapes are bitcasts in row-major layout)."""
  lead, in_size = x.shape[: x.ndim - num_in], int(np.prod(kernel.shape[:num_in]))
  y = low_precision.einsum("...y,yz->...z", x.reshape(lead + (in_size,)), kernel.reshape(in_size, -1),
                           preferred_element_type)
  return y.reshape(lead + kernel.shape[num_in:])


class RMSNorm(nn.Module):
  """Root-mean-square norm without mean subtraction or bias (T5, Llama); statistics in float32."""

  epsilon: float = 1e-6
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    scale = self.param(
        "scale",
        nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
        (x.shape[-1],),
        self.param_dtype,
    )
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.epsilon)
    return normed.astype(self.dtype) * scale.astype(self.dtype)


class Embed(nn.Module):
  """A token embedding table; `attend` is the tied output projection."""

  num_embeddings: int
  features: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  embedding_init: Initializer = nn.initializers.normal(stddev=1.0)

  def setup(self):
    self.embedding = self.param(
        "embedding",
        nn.with_logical_partitioning(self.embedding_init, ("vocab", "embed")),
        (self.num_embeddings, self.features),
        self.param_dtype,
    )

  def __call__(self, ids: jax.Array) -> jax.Array:
    return jnp.take(self.embedding, ids, axis=0).astype(self.dtype)

  def attend(self, x: jax.Array) -> jax.Array:
    """Logits in float32 (accumulated in float32 whatever the compute dtype)."""
    return low_precision.einsum("...d,vd->...v", x.astype(self.dtype), self.embedding.astype(self.dtype), jnp.float32)

  def attend_rows(self, x: jax.Array, token_ids_W: jax.Array) -> jax.Array:
    """`attend` restricted to the rows `token_ids_W`: float32 logits [..., W]."""
    rows_WxD = jnp.take(self.embedding, token_ids_W, axis=0).astype(self.dtype)
    return low_precision.einsum("...d,wd->...w", x.astype(self.dtype), rows_WxD, jnp.float32)


def tied_logits(embedder: Embed, h_BxTxD: jax.Array, bias_V: jax.Array, token_ids_W: jax.Array | None) -> jax.Array:
  """An MLM head's float32 output over the tied embeddings plus a per-token bias: every vocabulary
  row, or only the rows `token_ids_W` (scoring a verbalizer needs W columns, not V)."""
  if token_ids_W is None:
    return constrain(embedder.attend(h_BxTxD) + bias_V.astype(jnp.float32), ("batch", "length", "vocab"))
  return embedder.attend_rows(h_BxTxD, token_ids_W) + jnp.take(bias_V, token_ids_W).astype(jnp.float32)


def exact_gelu(x: jax.Array) -> jax.Array:
  """x Φ(x) through erf, as PyTorch computes it. jax.nn.gelu(approximate=False) goes through erfc,
  which XLA:CPU evaluates 3.9x slower (forward + backward at RoBERTa-base's [16, 128, 3072] on a Zen 5
  EPYC: 45 ms against 12; PyTorch 22), to 3.5e-7 of float64 against erf's 6.1e-7 (PyTorch's 1.2e-6)."""
  return 0.5 * x * (1.0 + jax.lax.erf(x * np.asarray(1 / np.sqrt(2), x.dtype)))


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
  """The feed-forward nonlinearity by its config name."""
  table = {
      "relu": jax.nn.relu,
      "gelu": exact_gelu,
      "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
      "silu": jax.nn.silu,
  }
  return table[name]


def batch_chunks(batch: int, cores: int) -> int:
  """The most pieces, at most one per core, that cut `batch` evenly."""
  chunks = max(1, min(cores, batch))
  while batch % chunks:
    chunks -= 1
  return chunks


def _usable_cores() -> int:
  affinity = getattr(os, "sched_getaffinity", None)  # Linux; macOS has only cpu_count
  return len(affinity(0)) if affinity else os.cpu_count() or 1


def attention_batch_chunks(batch: int) -> int:
  """How many independent pieces attention's batch is cut into, so that XLA:CPU keeps every core busy.

  XLA:CPU runs each batched matmul (attention's scores and values products) on one thread: T5-small's
  [48 x 148x64x148] scores take the same time with one core as with two, where PyTorch's bmm uses
  both (2.5x XLA's rate on a 2-core Intel Xeon, 2026-12-03). Independent ops do run side by side, so
  a batch cut into one piece per core runs its products in parallel: the T5-small bf16 prompt-tuning
  step 0.93x its time there, float32 0.98x (more pieces than cores: 1.03x). Only on a single CPU
  device: GPUs and TPUs want one big kernel, and slicing a batch sharded over devices would reshard it.
  """
  if jax.default_backend() != "cpu" or jax.device_count() != 1:
    return 1
  return batch_chunks(batch, _usable_cores())


def _in_batch_pieces(fn: Callable[..., jax.Array], chunks: int, *arrays: jax.Array | None) -> jax.Array:
  """fn over `chunks` equal batch pieces of the arrays, concatenated; batch-1 arrays (and None)
  broadcast, so every piece gets them whole."""

  def piece(x: jax.Array | None, i: int) -> jax.Array | None:
    if x is None or x.shape[0] == 1:
      return x
    size = x.shape[0] // chunks
    return x[i * size:(i + 1) * size]

  return jnp.concatenate([fn(*(piece(x, i) for x in arrays)) for i in range(chunks)], axis=0)


def dot_product_attention(
    q_BxQxHxK: jax.Array,
    k_BxSxHxK: jax.Array,
    v_BxSxHxK: jax.Array,
    bias_BxHxQxS: jax.Array | None,
    mask_Bx1xQxS: jax.Array,
    scale: float,
    dropout: Callable[[jax.Array], jax.Array] | None = None,
    chunks: int | None = None,
) -> jax.Array:
  """softmax(scale * q.k + bias, masked) @ v; bias and mask broadcast over batch and heads.

  The softmax is normalised after the values product, as flash attention does: dividing the
  [B, Q, H, K] output by each row's sum instead of the [B, H, Q, S] probabilities is one pass fewer
  over the largest tensor, forward and backward (the T5-small step 0.97x its time on a Zen 5 EPYC,
  median of 16 rounds in one process). Dropout on the unnormalised weights is dropout on the probabilities.
  The batch is cut into `chunks` pieces computed independently (default: attention_batch_chunks).
  """
  chunks = attention_batch_chunks(q_BxQxHxK.shape[0]) if chunks is None else chunks
  if chunks > 1:
    whole = functools.partial(dot_product_attention, scale=scale, dropout=dropout, chunks=1)
    return _in_batch_pieces(whole, chunks, q_BxQxHxK, k_BxSxHxK, v_BxSxHxK, bias_BxHxQxS, mask_Bx1xQxS)
  logits_BxHxQxS = jnp.einsum(
      "bqhk,bshk->bhqs", q_BxQxHxK, k_BxSxHxK, preferred_element_type=jnp.float32
  )
  if scale != 1.0:
    logits_BxHxQxS = logits_BxHxQxS * scale
  if bias_BxHxQxS is not None:
    logits_BxHxQxS = logits_BxHxQxS + bias_BxHxQxS.astype(jnp.float32)
  logits_BxHxQxS = jnp.where(mask_Bx1xQxS, logits_BxHxQxS, MASKED_LOGIT)
  # The row max only keeps exp in range; softmax does not depend on it, so neither does its gradient.
  row_max_BxHxQx1 = jax.lax.stop_gradient(jnp.max(logits_BxHxQxS, axis=-1, keepdims=True))
  weights_BxHxQxS = jnp.exp(logits_BxHxQxS - row_max_BxHxQx1)
  total_BxQxH = jnp.transpose(jnp.sum(weights_BxHxQxS, axis=-1), (0, 2, 1))
  if dropout is not None:
    weights_BxHxQxS = dropout(weights_BxHxQxS)
  out_BxQxHxK = jnp.einsum(
      "bhqs,bshk->bqhk", weights_BxHxQxS.astype(v_BxSxHxK.dtype), v_BxSxHxK, preferred_element_type=jnp.float32
  )
  return (out_BxQxHxK / total_BxQxH[..., None]).astype(v_BxSxHxK.dtype)


def remat_policy(name: str) -> Callable[..., bool] | None:
  """What the backward pass may keep instead of recomputing, by config name ("none": no remat)."""
  policies = jax.checkpoint_policies
  table = {
      "none": None,
      "full": policies.nothing_saveable,  # recompute everything: least memory
      "dots": policies.checkpoint_dots,  # keep every matmul output
      "dots_no_batch": policies.dots_with_no_batch_dims_saveable,  # keep projections, not attention
      "qkv_out": policies.save_only_these_names("query", "key", "value", "attention_out"),
  }
  return table[name]


# Least recomputation first: each policy saves less for the backward pass than the one before it
# (a T5-XXL prompt-tuning step: +0.0%, +0.6%, +18.5%, +40.5% FLOPs over "none"; bench/remat_flops.py).
REMAT_BY_RECOMPUTATION = ("none", "dots", "dots_no_batch", "qkv_out", "full")


def layer_stack(
    layer_cls: type[nn.Module],
    num_layers: int,
    scan_layers: bool,
    remat: str,
    num_broadcast_args: int,
    num_per_layer_args: int,
    name: str,
    **layer_kwargs: Any,
) -> Callable[..., tuple[jax.Array, Any]]:
  """num_layers copies of `layer_cls`, scanned (params stacked on a 'layers' axis) or unrolled.

  The layer's call is `(x, *broadcast_args, *per_layer_args) -> (x, per_layer_output)`: the
  broadcast args are the same for every layer (attention bias, masks), the per-layer args are
  pytrees with a leading layer axis (key/value prefixes, decode caches), or None.
  """
  policy = remat_policy(remat)
  if policy is not None:
    layer_cls = nn.remat(layer_cls, policy=policy, prevent_cse=not scan_layers)

  if scan_layers:
    scanned = nn.scan(
        layer_cls,
        variable_axes={"params": 0},
        split_rngs={"params": True, "dropout": True},
        in_axes=(nn.broadcast,) * num_broadcast_args + (0,) * num_per_layer_args,
        length=num_layers,
        metadata_params={nn.PARTITION_NAME: "layers"},
    )(name=name, **layer_kwargs)
    return scanned

  def unrolled(x, *args):
    broadcast, per_layer = args[:num_broadcast_args], args[num_broadcast_args:]
    outputs = []
    for i in range(num_layers):
      layer_args = [None if a is None else jax.tree.map(lambda t: t[i], a) for a in per_layer]
      x, out = layer_cls(name=layer_scan.unrolled_layer_name(name, i), **layer_kwargs)(x, *broadcast, *layer_args)
      outputs.append(out)
    if outputs and outputs[0] is not None:
      return x, jax.tree.map(lambda *t: jnp.stack(t), *outputs)
    return x, None

  return unrolled


def scaled_normal(fan_in: int) -> Initializer:
  """Normal init with std 1/sqrt(fan_in), the T5/Mesh-TF convention."""
  return nn.initializers.normal(stddev=float(1.0 / np.sqrt(fan_in)))


class BiasedProjection(Projection):
  """A Projection plus a learned bias over its output dims (BERT, RoBERTa)."""

  bias_init: Initializer = nn.initializers.zeros

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = super().__call__(x)
    bias = self.param(
        "bias",
        nn.with_logical_partitioning(self.bias_init, self.out_axes),
        tuple(self.out_shape),
        self.param_dtype,
    )
    return y + bias.astype(y.dtype)


class LayerNorm(nn.Module):
  """Layer norm with a learned scale and bias (BERT, RoBERTa); statistics and affine in float32."""

  epsilon: float = 1e-12
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    features = (x.shape[-1],)
    scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)), features, self.param_dtype)
    bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)), features, self.param_dtype)
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    centered = x32 - mean
    variance = jnp.mean(centered * centered, axis=-1, keepdims=True)
    normed = centered * jax.lax.rsqrt(variance + self.epsilon)
    return (normed * scale.astype(jnp.float32) + bias.astype(jnp.float32)).astype(self.dtype)
