"""The train step, whatever the backbone: gradients w.r.t. what trains only — the prompt, and the
backbone weights a run fine-tunes (trainable.py), merged into the frozen rest inside the step.

A backbone family supplies `loss_sum(prompt_params, frozen, batch, rng) -> (summed loss, count)`
(objectives/: seq2seq.py for T5, causal_lm.py for decoders, ...). Bind the static pieces with
functools.partial and jit with explicit shardings (experiment.py). The frozen backbone is an
argument, never part of the state, never donated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.scipy.special import xlogy
import optax
from flax import struct

from jaxprompt import trainable

Batch = dict[str, jax.Array]
LossSum = Callable[[Any, Any, Batch, jax.Array], tuple[jax.Array, jax.Array]]


class TrainState(struct.PyTreeNode):
  """Everything a run trains and checkpoints, float32: the prompt (small, replicated) and any
  backbone weights it fine-tunes (sharded like the weights, as are their moments)."""

  step: jax.Array  # int32 scalar
  params: Any  # the prompt method's trainable params
  opt_state: Any  # over (params, backbone)
  backbone: Any = struct.field(default_factory=dict)  # trained backbone weights by '/'-joined path


def init_train_state(params: Any, optimizer: optax.GradientTransformation, backbone: Any = None) -> TrainState:
  backbone = {} if backbone is None else backbone
  return TrainState(jnp.zeros((), jnp.int32), params, optimizer.init((params, backbone)), backbone)


def token_log_likelihood(logits_BxTxV: jax.Array, targets_BxT: jax.Array, mask_BxT: jax.Array) -> jax.Array:
  """Summed log p(target token) over each sequence's valid positions: [B]."""
  logp_BxTxV = jax.nn.log_softmax(logits_BxTxV.astype(jnp.float32), axis=-1)
  token_logp_BxT = jnp.take_along_axis(logp_BxTxV, targets_BxT[..., None], axis=-1)[..., 0]
  return jnp.sum(token_logp_BxT * mask_BxT, axis=-1)


def class_cross_entropy(
    logits_NxC: jax.Array, labels_N: jax.Array, weights_N: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """(summed cross-entropy, count) over the weighted entries (any leading shape N); labels of
  unweighted entries (e.g. -1) are ignored."""
  logp = jax.nn.log_softmax(logits_NxC.astype(jnp.float32), axis=-1)
  picked = jnp.take_along_axis(logp, jnp.maximum(labels_N, 0)[..., None], axis=-1)[..., 0]
  return -jnp.sum(picked * weights_N), jnp.sum(weights_N).astype(jnp.float32)


def kl_divergence(target_NxC: jax.Array, logp_NxC: jax.Array) -> jax.Array:
  """[N] KL(target || p) of probability targets and log-probabilities (0 · log 0 = 0)."""
  return jnp.sum(xlogy(target_NxC, target_NxC) - target_NxC * logp_NxC, axis=-1)


def train_step(
    state: TrainState,
    frozen: Any,
    batch: Batch,
    rng: jax.Array,
    *,
    loss_sum: LossSum,
    optimizer: optax.GradientTransformation,
    schedule: optax.Schedule,
    num_microbatches: int = 1,
) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step on the prompt; the loss is the mean over all target tokens of the batch.

  With microbatches, summed losses and gradients are accumulated and divided by the total token
  count once, so the step equals the full-batch step (up to float summation order).
  """
  step_rng = jax.random.fold_in(rng, state.step)

  def trained_loss(trained, frozen, batch, rng):
    params, backbone = trained
    return loss_sum(params, trainable.merge(frozen, backbone), batch, rng)

  grad_fn = jax.value_and_grad(trained_loss, has_aux=True)
  trained = (state.params, state.backbone)

  if num_microbatches == 1:
    (total, count), grads = grad_fn(trained, frozen, batch, step_rng)
  else:
    micro = jax.tree.map(lambda x: _split_microbatches(x, num_microbatches), batch)

    def accumulate(carry, xs):
      index, microbatch = xs
      (s, n), g = grad_fn(trained, frozen, microbatch, jax.random.fold_in(step_rng, index))
      grads, total, count = carry
      return (jax.tree.map(jnp.add, grads, g), total + s, count + n), None

    zeros = jax.tree.map(jnp.zeros_like, trained)
    (grads, total, count), _ = jax.lax.scan(
        accumulate, (zeros, jnp.zeros(()), jnp.zeros(())), (jnp.arange(num_microbatches), micro)
    )

  count = jnp.maximum(count, 1.0)
  grads = jax.tree.map(lambda g: g / count, grads)
  updates, opt_state = optimizer.update(grads, state.opt_state, trained)
  params, backbone = optax.apply_updates(trained, updates)
  metrics = {
      "train/loss": total / count,
      "train/grad_norm": optax.tree.norm(grads),
      "train/learning_rate": jnp.asarray(schedule(state.step), jnp.float32),
      "train/target_tokens": count,
  }
  return TrainState(state.step + 1, params, opt_state, backbone), metrics


def _split_microbatches(x: jax.Array, num: int) -> jax.Array:
  """[B, ...] -> [num, B/num, ...] taking every num-th row, so each microbatch stays spread over
  the devices that hold the batch (a contiguous split would sit on a few of them)."""
  if x.shape[0] % num:
    raise ValueError(f"batch of {x.shape[0]} does not split into {num} microbatches")
  return jnp.swapaxes(x.reshape((x.shape[0] // num, num) + x.shape[1:]), 0, 1)
