"""T5's objective: the target is decoded from the (prompted) encoder states.

    loss_sum:  summed target-token cross-entropy under teacher forcing
    eval_step: the gold target's log-likelihood, every label's score (rank classification, one
               batched pass: the encoder runs once per example, the decoder over B x C candidates),
               and the greedy decoding
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxprompt.models.prompt import repeat_examples
from jaxprompt.models.t5 import T5, shift_right
from jaxprompt.models.t5_decoding import greedy_decode_encoded
from jaxprompt.steps import Batch, token_log_likelihood
from jaxprompt.tasks import features as features_lib


def _prompt(method: nn.Module | None, prompt_params: Any, batch: Batch):
  return None if method is None else method.apply({"params": prompt_params}, batch)


def loss_sum(
    prompt_params: Any, frozen: Any, batch: Batch, rng: jax.Array, *, model: T5, method: nn.Module
) -> tuple[jax.Array, jax.Array]:
  """(summed target-token cross-entropy, number of target tokens); differentiate w.r.t. the first."""
  prompt = _prompt(method, prompt_params, batch)
  rngs = None if model.deterministic else {"dropout": rng}
  decoder_inputs = shift_right(batch["targets"], model.config.decoder_start_token_id)
  logits = model.apply(frozen, batch["inputs"], batch["input_mask"], decoder_inputs, None, prompt, rngs=rngs)
  mask = batch["target_mask"] * batch["example_mask"][:, None]
  return -jnp.sum(token_log_likelihood(logits, batch["targets"], mask)), jnp.sum(mask)


def eval_step(
    prompt_params: Any,
    frozen: Any,
    batch: Batch,
    label_targets_CxT: jax.Array | None,
    label_mask_CxT: jax.Array | None,
    *,
    model: T5,
    method: nn.Module | None,
    max_decode_len: int,
) -> dict[str, jax.Array]:
  """Per-example outputs: `target_logp`, `target_tokens`, `decoded`, and `label_scores` [B, C]."""
  prompt = _prompt(method, prompt_params, batch)
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


def labels(tasks, backbone, config) -> None:
  del tasks, backbone  # the verbalizer's texts are targets, scored per task by rank classification
  if config.loss_over == "label_words":
    raise ValueError("config.loss_over='label_words' is implemented for decoder-only backbones")


def label_targets(spec, codec, max_target_len):
  return features_lib.label_targets(spec, codec, max_target_len)


def bind_loss(backbone, method: nn.Module, labels: None):
  del labels
  return functools.partial(loss_sum, model=backbone.training_model, method=method)


def bind_eval(backbone, method: nn.Module | None, labels: None, max_decode_len: int):
  del labels
  return functools.partial(eval_step, model=backbone.model, method=method, max_decode_len=max_decode_len)
