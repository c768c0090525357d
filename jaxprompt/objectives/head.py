"""The objective of a prompt method that carries its own head (P-tuning v2): class logits from the
backbone's features instead of a verbalizer.

    features:  what the family's `head_features` gives: a sequence feature (an encoder's pooled
               [CLS] output, a decoder's last token) or every position's hidden state (labelling)
    loss_sum:  summed cross-entropy over labelled examples (or labelled tokens); on a
               distillation set (TaskSpec.teacher_field: PET's final classifier), PET's
               KL(softmax(teacher / T) || softmax(logits / T)) · T² over the examples with scores
    eval_step: `class_logits` [B, C] or `token_logits` [B, L, C]
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxprompt.steps import Batch, class_cross_entropy, kl_divergence

# (model, frozen, batch, prompt, token_level, rng) -> [B, D] or [B, T, D]: Family.head_features.
Features = Callable[..., jax.Array]


def _logits(prompt_params: Any, frozen: Any, batch: Batch, model: nn.Module, method: nn.Module, features: Features,
            rng: jax.Array | None = None) -> jax.Array:
  prompt = method.apply({"params": prompt_params}, batch)
  states = features(model, frozen, batch, prompt, method.objective == "tag", rng)
  return method.apply({"params": prompt_params}, states, method=type(method).logits)


@dataclasses.dataclass(frozen=True)
class Distillation:
  """Train on the batch's teacher_logits (PET's soft labels) at this temperature."""

  temperature: float


def distillation_kl(logits_BxC: jax.Array, teacher_BxC: jax.Array, weights_B: jax.Array,
                    temperature: float) -> tuple[jax.Array, jax.Array]:
  """(summed, count) KL(softmax(teacher / T) || softmax(logits / T)) · T² over the weighted rows: PET's
  distillation loss (pet/utils.py's distillation_loss), whose mean over a batch is the summed loss / count."""
  teacher_BxC = jnp.where(weights_B[:, None], teacher_BxC, 0.0)  # padding rows hold NaN
  target = jax.nn.softmax(teacher_BxC.astype(jnp.float32) / temperature, axis=-1)
  logp = jax.nn.log_softmax(logits_BxC.astype(jnp.float32) / temperature, axis=-1)
  kl_B = kl_divergence(target, logp) * temperature**2
  return jnp.sum(jnp.where(weights_B, kl_B, 0.0)), jnp.sum(weights_B).astype(jnp.float32)


def loss_sum(
    prompt_params: Any, frozen: Any, batch: Batch, rng: jax.Array, *, model: nn.Module, method: nn.Module,
    features: Features, distillation: Distillation | None = None,
) -> tuple[jax.Array, jax.Array]:
  """(summed loss, count) over labelled examples, or labelled tokens for a token head; with
  `distillation`, over the examples with teacher scores."""
  logits = _logits(prompt_params, frozen, batch, model, method, features, rng)
  if distillation is not None:
    scored = jnp.all(jnp.isfinite(batch["teacher_logits"]), axis=-1) & batch["example_mask"]
    return distillation_kl(logits, batch["teacher_logits"], scored, distillation.temperature)
  if method.objective == "tag":
    labels = batch["token_labels"]
    weights = (labels >= 0) & batch["example_mask"][:, None]
  else:
    labels = batch["label"]
    weights = (labels >= 0) & batch["example_mask"]
  return class_cross_entropy(logits, labels, weights)


def eval_step(
    prompt_params: Any,
    frozen: Any,
    batch: Batch,
    label_targets_CxT: jax.Array | None,
    label_mask_CxT: jax.Array | None,
    *,
    model: nn.Module,
    method: nn.Module,
    features: Features,
) -> dict[str, jax.Array]:
  """`class_logits` [B, C] for a sequence head, `token_logits` [B, L, C] for a token head."""
  del label_targets_CxT, label_mask_CxT  # the head scores the classes itself
  logits = _logits(prompt_params, frozen, batch, model, method, features)
  return {"token_logits" if method.objective == "tag" else "class_logits": logits}


def labels(tasks, backbone, config) -> Distillation | None:
  """None (the head scores the classes itself), or the distillation a task with teacher scores asks for."""
  del backbone
  if config.loss_over == "label_words":
    raise ValueError("config.loss_over='label_words' scores verbalizer words; a method with a head has none")
  distilled = [task.spec.teacher_field for task in tasks if task.spec.teacher_field]
  if not distilled:
    return None
  if len(tasks) != 1:
    raise ValueError("a distillation set (task.teacher_field) trains alone, not in a mixture")
  if not config.distill_temperature > 0:
    raise ValueError(f"config.distill_temperature must be positive, got {config.distill_temperature}")
  return Distillation(float(config.distill_temperature))


def label_targets(spec, codec, max_target_len):
  del spec, codec, max_target_len
  return None, None


def bind_loss(backbone, method: nn.Module, labels: Distillation | None):
  # P-tuning v2 trains with the encoder's dropout, when the config has any.
  return functools.partial(loss_sum, model=backbone.training_model, method=method,
                           features=backbone.family.head_features, distillation=labels)


def bind_eval(backbone, method: nn.Module, labels: Distillation | None, max_decode_len: int):
  del labels, max_decode_len  # a head decodes nothing
  return functools.partial(eval_step, model=backbone.model, method=method, features=backbone.family.head_features)
