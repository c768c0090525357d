"""The objective of a prompt method that carries its own head (P-tuning v2): class logits from the
backbone's features instead of a verbalizer.

    features:  what the family's `head_features` gives: a sequence feature (an encoder's pooled
               [CLS] output, a decoder's last token) or every position's hidden state (labelling)
    loss_sum:  summed cross-entropy over labelled examples (or labelled tokens)
    eval_step: `class_logits` [B, C] or `token_logits` [B, L, C]
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax

from jaxprompt.steps import Batch, class_cross_entropy

# (model, frozen, batch, prompt, token_level, rng) -> [B, D] or [B, T, D]: Family.head_features.
Features = Callable[..., jax.Array]


def _logits(prompt_params: Any, frozen: Any, batch: Batch, model: nn.Module, method: nn.Module, features: Features,
            rng: jax.Array | None = None) -> jax.Array:
  prompt = method.apply({"params": prompt_params}, batch)
  states = features(model, frozen, batch, prompt, method.objective == "tag", rng)
  return method.apply({"params": prompt_params}, states, method=type(method).logits)


def loss_sum(
    prompt_params: Any, frozen: Any, batch: Batch, rng: jax.Array, *, model: nn.Module, method: nn.Module,
    features: Features,
) -> tuple[jax.Array, jax.Array]:
  """(summed cross-entropy, count) over labelled examples, or labelled tokens for a token head."""
  logits = _logits(prompt_params, frozen, batch, model, method, features, rng)
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


def labels(tasks, backbone, config) -> None:
  del tasks, backbone  # the head scores the classes itself
  if config.loss_over == "label_words":
    raise ValueError("config.loss_over='label_words' scores verbalizer words; a method with a head has none")


def label_targets(spec, codec, max_target_len):
  del spec, codec, max_target_len
  return None, None


def bind_loss(backbone, method: nn.Module, labels: None):
  del labels
  # P-tuning v2 trains with the encoder's dropout, when the config has any.
  return functools.partial(loss_sum, model=backbone.training_model, method=method,
                           features=backbone.family.head_features)


def bind_eval(backbone, method: nn.Module, labels: None, max_decode_len: int):
  del labels, max_decode_len  # a head decodes nothing
  return functools.partial(eval_step, model=backbone.model, method=method, features=backbone.family.head_features)
