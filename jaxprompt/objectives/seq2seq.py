"""T5's objective: the target is decoded from the (prompted) encoder states.

    loss_sum:  summed target-token cross-entropy under teacher forcing
    eval_step: the gold target's log-likelihood, every label's score (rank classification, one
               batched pass: the encoder runs once per example, the decoder over B x C candidates),
               and the decoding: greedy, or sampled per example where the batch carries
               sampling settings (models/sampling.py)
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxprompt.models.prompt import repeat_examples
from jaxprompt.models.sampling import sampling_of
from jaxprompt.models.t5 import T5, shift_right
from jaxprompt.models.t5_decoding import decode_encoded
from jaxprompt.objectives import multi_mask
from jaxprompt.steps import Batch, token_log_likelihood
from jaxprompt.tasks import features as features_lib


def _prompt(method: nn.Module | None, prompt_params: Any, batch: Batch):
  return None if method is None else method.apply({"params": prompt_params}, batch)


def loss_sum(
    prompt_params: Any, frozen: Any, batch: Batch, rng: jax.Array, *, model: T5, method: nn.Module,
    choices: bool = False,
) -> tuple[jax.Array, jax.Array]:
  """(summed target-token cross-entropy, number of target tokens); differentiate w.r.t. the first.
  With choices (a cloze task's per-example candidates), PET's hinge between their log-probs."""
  prompt = _prompt(method, prompt_params, batch)
  rngs = None if model.deterministic else {"dropout": rng}
  if choices:
    scores_BxC, valid_BxC = _choice_scores(model, frozen, batch, prompt, rngs)
    labelled = (batch["label"] >= 0) & batch["example_mask"]
    return multi_mask.hinge_loss(scores_BxC, batch["label"], labelled, valid_BxC)
  decoder_inputs = shift_right(batch["targets"], model.config.decoder_start_token_id)
  logits = model.apply(frozen, batch["inputs"], batch["input_mask"], decoder_inputs, None, prompt, rngs=rngs)
  mask = batch["target_mask"] * batch["example_mask"][:, None]
  return -jnp.sum(token_log_likelihood(logits, batch["targets"], mask)), jnp.sum(mask)


def _choice_scores(model: T5, frozen: Any, batch: Batch, prompt, rngs) -> tuple[jax.Array, jax.Array]:
  """Each example's choices' summed log-probs [B, C] (the encoder runs once per example), and which are real."""
  encoded, encoder_mask = model.apply(frozen, batch["inputs"], batch["input_mask"], prompt, method=T5.encode,
                                      rngs=rngs)
  batch_size, num_choices, length = batch["candidates"].shape
  targets, mask = batch["candidates"].reshape(-1, length), batch["candidate_mask"].reshape(-1, length)
  decoder_inputs = shift_right(targets, model.config.decoder_start_token_id)
  logits, _ = model.apply(frozen, decoder_inputs, jnp.repeat(encoded, num_choices, axis=0),
                          jnp.repeat(encoder_mask, num_choices, axis=0), None, repeat_examples(prompt, num_choices),
                          method=T5.decode, rngs=rngs)
  scores = token_log_likelihood(logits, targets, mask).reshape(batch_size, num_choices)
  return scores, jnp.any(batch["candidate_mask"], axis=-1)


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
    choices: bool = False,
) -> dict[str, jax.Array]:
  """Per-example outputs: `target_logp`, `target_tokens`, `decoded`, and `label_scores` [B, C] of
  the task's label texts, or with `choices` of each example's own choices."""
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
      "decoded": decode_encoded(model, frozen, encoded, encoder_mask, max_decode_len, prompt, sampling_of(batch)),
  }
  if choices:
    scores, valid = _choice_scores(model, frozen, batch, prompt, None)
    out["label_scores"] = jnp.where(valid, scores, -jnp.inf)
  elif label_targets_CxT is not None:
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


def labels(tasks, backbone, config) -> bool:
  """Whether the batch carries each example's choices (a cloze task with candidates, COPA)."""
  del backbone  # the verbalizer's texts are targets, scored per task by rank classification
  if config.loss_over == "label_words":
    raise ValueError("config.loss_over='label_words' is implemented for decoder-only backbones")
  return len(tasks) == 1 and bool(tasks[0].spec.candidates)


def label_targets(spec, codec, max_target_len):
  if spec.candidates:  # each example's choices come with its batch
    return None, None
  return features_lib.label_targets(spec, codec, max_target_len)


def bind_loss(backbone, method: nn.Module, labels: bool):
  return functools.partial(loss_sum, model=backbone.training_model, method=method, choices=labels)


def bind_eval(backbone, method: nn.Module | None, labels: bool, max_decode_len: int):
  return functools.partial(eval_step, model=backbone.model, method=method, max_decode_len=max_decode_len,
                           choices=labels)
