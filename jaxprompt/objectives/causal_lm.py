"""A decoder-only model's objective: the answer continues the (prompted, left-padded) input.

The sequence is [soft tokens | inputs, left-padded | targets, right-padded]; wherever a prompt
method places its soft tokens, they come before the targets, so the last T+1 positions' hidden
states predict the T target tokens.

    loss_sum:  summed target-token cross-entropy over the vocabulary; or, with `label_token_ids`,
               PET's loss: a softmax over the verbalizer's label words only (one token each)
    eval_step: one prefill of the inputs into the cache, then from it: the gold target's
               log-likelihood, every label's score (rank classification; multi-token labels sum
               their tokens), and the decoding: greedy, or sampled per example where the batch
               carries sampling settings (models/sampling.py)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxprompt.models.llama import Llama
from jaxprompt.models.llama_decoding import generate_continuation, prefill, step_prompt
from jaxprompt.models.prompt import extended_by, repeat_examples
from jaxprompt.models.sampling import sampling_of
from jaxprompt.objectives import multi_mask
from jaxprompt.steps import Batch, class_cross_entropy, token_log_likelihood
from jaxprompt.tasks import cloze
from jaxprompt.tasks import features as features_lib


def _prompt(method: nn.Module | None, prompt_params: Any, batch: Batch):
  return None if method is None else method.apply({"params": prompt_params}, batch)


@dataclasses.dataclass(frozen=True)
class ContinuationLabels:
  """What the steps score besides the targets: PET's label words, or each example's own choices."""

  label_token_ids: jax.Array | None = None  # config.loss_over='label_words': one token per class
  choices: bool = False  # a cloze task's per-example candidates (COPA), in the batch


def loss_sum(
    prompt_params: Any, frozen: Any, batch: Batch, rng: jax.Array, *, model: Llama, method: nn.Module,
    label_token_ids: jax.Array | None = None, choices: bool = False,
) -> tuple[jax.Array, jax.Array]:
  """(summed cross-entropy, count): over target tokens, or over labelled examples for label words;
  with choices, PET's hinge between the choices' continuation log-probs (a pass per choice)."""
  del rng  # Llama checkpoints have no dropout
  if choices:
    return _choices_hinge(prompt_params, frozen, batch, model, method)
  num_targets = batch["targets"].shape[1]
  prompt = extended_by(_prompt(method, prompt_params, batch), num_targets)
  ids = jnp.concatenate([batch["inputs"], batch["targets"]], axis=1)
  mask = jnp.concatenate([batch["input_mask"], batch["target_mask"]], axis=1)
  hidden, _, _ = model.apply(frozen, ids, mask, prompt)
  predicting_BxTxD = hidden[:, -num_targets - 1 : -1]
  if label_token_ids is None:
    weights = batch["target_mask"] * batch["example_mask"][:, None]
    logits = model.apply(frozen, predicting_BxTxD, method=Llama.logits)
    return -jnp.sum(token_log_likelihood(logits, batch["targets"], weights)), jnp.sum(weights)
  logits_BxC = model.apply(frozen, predicting_BxTxD[:, 0], label_token_ids, method=Llama.logits_for)
  labelled = (batch["label"] >= 0) & batch["example_mask"]
  return class_cross_entropy(logits_BxC, batch["label"], labelled)


def _choices_hinge(prompt_params: Any, frozen: Any, batch: Batch, model: Llama, method: nn.Module | None):
  """(summed hinge, labelled examples) over each example's choices continuing its input."""
  candidates_BxCxK, choice_mask_BxCxK = batch["candidates"], batch["candidate_mask"]
  batch_size, num_choices, length = candidates_BxCxK.shape
  prompt = extended_by(repeat_examples(_prompt(method, prompt_params, batch), num_choices), length)
  repeat = lambda x: jnp.repeat(x, num_choices, axis=0)
  targets_NxK = candidates_BxCxK.reshape(-1, length)
  mask_NxK = choice_mask_BxCxK.reshape(-1, length)
  ids = jnp.concatenate([repeat(batch["inputs"]), targets_NxK], axis=1)
  mask = jnp.concatenate([repeat(batch["input_mask"]), mask_NxK], axis=1)
  hidden, _, _ = model.apply(frozen, ids, mask, prompt)
  logits = model.apply(frozen, hidden[:, -length - 1 : -1], method=Llama.logits)
  scores_BxC = token_log_likelihood(logits, targets_NxK, mask_NxK).reshape(batch_size, num_choices)
  labelled = (batch["label"] >= 0) & batch["example_mask"]
  return multi_mask.hinge_loss(scores_BxC, batch["label"], labelled, jnp.any(choice_mask_BxCxK, axis=-1))


def eval_step(
    prompt_params: Any,
    frozen: Any,
    batch: Batch,
    label_targets_CxT: jax.Array | None,
    label_mask_CxT: jax.Array | None,
    *,
    model: Llama,
    method: nn.Module | None,
    max_decode_len: int,
    eos_id: int | None,
    pad_id: int,
    choices: bool = False,
) -> dict[str, jax.Array]:
  """Per-example outputs: `target_logp`, `target_tokens`, `decoded`, and `label_scores` [B, C] of
  the task's label texts, or with `choices` of each example's own choices."""
  prompt = _prompt(method, prompt_params, batch)
  num_targets = batch["targets"].shape[1]
  label_len = batch["candidates"].shape[2] if choices else 0 if label_targets_CxT is None else label_targets_CxT.shape[1]
  room = max(num_targets, max_decode_len, label_len)
  last_BxD, cache = prefill(model, frozen, batch["inputs"], batch["input_mask"], room, prompt)
  kv_prompt = step_prompt(prompt)

  def continuation_logp(targets_BxT, mask_BxT, cache, last_BxD, kv_prompt):
    hidden, _, _ = model.apply(frozen, targets_BxT, mask_BxT, kv_prompt, cache)
    predicting = jnp.concatenate([last_BxD[:, None], hidden[:, :-1]], axis=1)
    return token_log_likelihood(model.apply(frozen, predicting, method=Llama.logits), targets_BxT, mask_BxT)

  out = {
      "target_logp": continuation_logp(batch["targets"], batch["target_mask"], cache, last_BxD, kv_prompt),
      "target_tokens": jnp.sum(batch["target_mask"], axis=1),
      "decoded": generate_continuation(model, frozen, cache, last_BxD, max_decode_len, kv_prompt, eos_id, pad_id,
                                       sampling_of(batch)),
  }
  if choices:
    batch_size, num_labels, _ = batch["candidates"].shape
    targets, target_mask = batch["candidates"].reshape(-1, label_len), batch["candidate_mask"].reshape(-1, label_len)
  elif label_targets_CxT is not None:
    batch_size, num_labels = batch["inputs"].shape[0], label_targets_CxT.shape[0]
    targets, target_mask = jnp.tile(label_targets_CxT, (batch_size, 1)), jnp.tile(label_mask_CxT, (batch_size, 1))
  else:
    return out
  scores = continuation_logp(targets, target_mask, cache.repeat_examples(num_labels),
                             jnp.repeat(last_BxD, num_labels, axis=0), repeat_examples(kv_prompt, num_labels))
  valid = jnp.any(target_mask, axis=-1)  # a padded choice (fewer choices than C) never wins
  out["label_scores"] = jnp.where(valid, scores, -jnp.inf).reshape(batch_size, num_labels)
  return out


def bare_next_token_logits(model: Llama, frozen: Any, ids_BxL: jax.Array, mask_BxL: jax.Array,
                           token_ids_W: jax.Array | None = None) -> jax.Array:
  """The next-token logits after left-padded inputs, with no prompt (LM-BFF's zero-shot label
  search): [B, V] over the whole vocabulary, or [B, W] over the tokens `token_ids_W`. Only the last
  column's state is projected: no [B, L, V]."""
  hidden_BxLxD, _, _ = model.apply(frozen, ids_BxL, mask_BxL)
  if token_ids_W is None:
    return model.apply(frozen, hidden_BxLxD[:, -1], method=Llama.logits)
  return model.apply(frozen, hidden_BxLxD[:, -1], token_ids_W, method=Llama.logits_for)


def labels(tasks, backbone, config) -> ContinuationLabels:
  """With config.loss_over='label_words' (PET's loss), the one token of each class's label words;
  for a cloze task with candidates, that the batch carries each example's choices."""
  if len(tasks) == 1 and tasks[0].spec.candidates:
    if config.loss_over == "label_words":
      raise ValueError("config.loss_over='label_words': a task with candidates has no label words; its choices"
                       " are scored whole (PET's hinge loss)")
    return ContinuationLabels(choices=True)
  if config.loss_over != "label_words":
    return ContinuationLabels()
  if len(tasks) != 1:
    raise ValueError(f"config.loss_over='label_words' trains on one task; config.mixture names {len(tasks)}")
  verbalizer = cloze.label_texts(tasks[0].spec, backbone.codec)  # a cloze pattern's label words continue it
  ids = [backbone.codec.encode_label(text) for text in verbalizer]
  if any(len(i) != 1 for i in ids) or len({i[0] for i in ids}) != len(ids):
    raise ValueError(
        f"config.loss_over='label_words' needs one distinct token per label; the verbalizer {verbalizer} tokenizes to {ids}"
    )
  return ContinuationLabels(jnp.asarray([i[0] for i in ids], jnp.int32))


def label_targets(spec, codec, max_target_len):
  if spec.candidates:  # each example's choices come with its batch
    return None, None
  return features_lib.label_targets(spec, codec, max_target_len)


def bind_loss(backbone, method: nn.Module, labels: ContinuationLabels):
  return functools.partial(loss_sum, model=backbone.model, method=method, label_token_ids=labels.label_token_ids,
                           choices=labels.choices)


def bind_eval(backbone, method: nn.Module | None, labels: ContinuationLabels, max_decode_len: int):
  # Evaluation ranks every label's whole text (or each example's choices), not just label words.
  return functools.partial(eval_step, model=backbone.model, method=method, max_decode_len=max_decode_len,
                           eos_id=backbone.codec.eos_id, pad_id=backbone.codec.pad_id, choices=labels.choices)
