"""Pure step functions: train (gradients w.r.t. the prompt only), rank-classification scoring, decoding.

Bind the static pieces (model, method, optimizer) with functools.partial and jit with explicit
shardings (train.py). The frozen backbone is an argument, never part of the state, never donated.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxprompt.models.prompt import repeat_examples
from jaxprompt.models.t5 import T5, shift_right
from jaxprompt.models.t5_decoding import greedy_decode_encoded

Batch = dict[str, jax.Array]


class TrainState(struct.PyTreeNode):
  """Everything a run trains and checkpoints: small, float32, replicated."""

  step: jax.Array  # int32 scalar
  params: Any  # the prompt method's trainable params
  opt_state: Any


def init_train_state(params: Any, optimizer: optax.GradientTransformation) -> TrainState:
  return TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params))


def token_log_likelihood(logits_BxTxV: jax.Array, targets_BxT: jax.Array, mask_BxT: jax.Array) -> jax.Array:
  """Summed log p(target token) over each sequence's valid positions: [B]."""
  logp_BxTxV = jax.nn.log_softmax(logits_BxTxV.astype(jnp.float32), axis=-1)
  token_logp_BxT = jnp.take_along_axis(logp_BxTxV, targets_BxT[..., None], axis=-1)[..., 0]
  return jnp.sum(token_logp_BxT * mask_BxT, axis=-1)


def _teacher_forced_logits(model: T5, frozen: Any, batch: Batch, prompt, rngs) -> jax.Array:
  decoder_inputs = shift_right(batch["targets"], model.config.decoder_start_token_id)
  return model.apply(frozen, batch["inputs"], batch["input_mask"], decoder_inputs, None, prompt, rngs=rngs)


def loss_sum(
    prompt_params: Any, frozen: Any, batch: Batch, rng: jax.Array, model: T5, method: nn.Module
) -> tuple[jax.Array, jax.Array]:
  """(summed target-token cross-entropy, number of target tokens); differentiate w.r.t. the first."""
  prompt = method.apply({"params": prompt_params}, batch)
  rngs = None if model.deterministic else {"dropout": rng}
  logits = _teacher_forced_logits(model, frozen, batch, prompt, rngs)
  mask = batch["target_mask"] * batch["example_mask"][:, None]
  return -jnp.sum(token_log_likelihood(logits, batch["targets"], mask)), jnp.sum(mask)


def train_step(
    state: TrainState,
    frozen: Any,
    batch: Batch,
    rng: jax.Array,
    *,
    model: T5,
    method: nn.Module,
    optimizer: optax.GradientTransformation,
    schedule: optax.Schedule,
    num_microbatches: int = 1,
) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step on the prompt; the loss is the mean over all target tokens of the batch.

  With microbatches, summed losses and gradients are accumulated and divided by the total token
  count once, so the step equals the full-batch step (up to float summation order).
  """
  step_rng = jax.random.fold_in(rng, state.step)
  grad_fn = jax.value_and_grad(loss_sum, has_aux=True)

  if num_microbatches == 1:
    (total, count), grads = grad_fn(state.params, frozen, batch, step_rng, model, method)
  else:
    micro = jax.tree.map(lambda x: _split_microbatches(x, num_microbatches), batch)

    def accumulate(carry, xs):
      index, microbatch = xs
      (s, n), g = grad_fn(state.params, frozen, microbatch, jax.random.fold_in(step_rng, index), model, method)
      grads, total, count = carry
      return (jax.tree.map(jnp.add, grads, g), total + s, count + n), None

    zeros = jax.tree.map(jnp.zeros_like, state.params)
    (grads, total, count), _ = jax.lax.scan(
        accumulate, (zeros, jnp.zeros(()), jnp.zeros(())), (jnp.arange(num_microbatches), micro)
    )

  count = jnp.maximum(count, 1.0)
  grads = jax.tree.map(lambda g: g / count, grads)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {
      "train/loss": total / count,
      "train/grad_norm": optax.tree.norm(grads),
      "train/learning_rate": jnp.asarray(schedule(state.step), jnp.float32),
      "train/target_tokens": count,
  }
  return TrainState(state.step + 1, params, opt_state), metrics


def _split_microbatches(x: jax.Array, num: int) -> jax.Array:
  """[B, ...] -> [num, B/num, ...] taking every num-th row, so each microbatch stays spread over
  the devices that hold the batch (a contiguous split would sit on a few of them)."""
  if x.shape[0] % num:
    raise ValueError(f"batch of {x.shape[0]} does not split into {num} microbatches")
  return jnp.swapaxes(x.reshape((x.shape[0] // num, num) + x.shape[1:]), 0, 1)


def eval_step(
    prompt_params: Any,
    frozen: Any,
    batch: Batch,
    label_targets_CxT: jax.Array | None,
    label_mask_CxT: jax.Array | None,
    *,
    model: T5,
    method: nn.Module,
    max_decode_len: int,
) -> dict[str, jax.Array]:
  """Per-example outputs: the gold targets' loss, every label's score, and the greedy decoding.

  Rank classification scores all C verbalizer labels in one batched pass: the encoder runs once
  per example, the decoder over B x C candidate targets.
  """
  prompt = method.apply({"params": prompt_params}, batch)
  encoded, encoder_mask = model.apply(frozen, batch["inputs"], batch["input_mask"], prompt, method=T5.encode)
  start = model.config.decoder_start_token_id

  def decode_logits(targets, encoded, encoder_mask, prompt):
    logits, _ = model.apply(frozen, shift_right(targets, start), encoded, encoder_mask, None, prompt, method=T5.decode)
    return logits

  gold = decode_logits(batch["targets"], encoded, encoder_mask, prompt)
  out = {
      "target_logp": token_log_likelihood(gold, batch["targets"], batch["target_mask"]),
      "target_tokens": jnp.sum(batch["target_mask"], axis=1),
      "decoded": greedy_decode_encoded(model, frozen, encoded, encoder_mask, max_decode_len, prompt),
  }
  if label_targets_CxT is not None:
    batch_size, num_labels = batch["inputs"].shape[0], label_targets_CxT.shape[0]
    tile = lambda x: jnp.tile(x, (batch_size, 1))
    logits = decode_logits(
        tile(label_targets_CxT),
        jnp.repeat(encoded, num_labels, axis=0),
        jnp.repeat(encoder_mask, num_labels, axis=0),
        repeat_examples(prompt, num_labels),
    )
    scores = token_log_likelihood(logits, tile(label_targets_CxT), tile(label_mask_CxT))
    out["label_scores"] = scores.reshape(batch_size, num_labels)
  return out
