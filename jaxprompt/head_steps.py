"""The objective of a prompt method that carries its own head (P-tuning v2): class logits from the
backbone's features instead of a verbalizer.

    features:  an encoder's pooled [CLS] output (its [CLS] hidden state without a pooler) or a
               decoder's last token (inputs are left-padded, so it is the last column) for sequence
               classification; every position's hidden state for sequence labelling
    loss_sum:  summed cross-entropy over labelled examples (or labelled tokens)
    eval_step: `class_logits` [B, C] or `token_logits` [B, L, C]
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from jaxprompt.models.bert import Bert
from jaxprompt.models.llama import Llama
from jaxprompt.steps import Batch, class_cross_entropy


def _features(
    model: nn.Module, frozen: Any, batch: Batch, prompt, token_level: bool, rng: jax.Array | None
) -> jax.Array:
  if isinstance(model, Bert):
    rngs = None if model.deterministic else {"dropout": rng}  # P-tuning v2 trains with the encoder's dropout
    out = model.apply(frozen, batch["inputs"], batch["input_mask"], None, prompt, rngs=rngs)
    if token_level:
      return out.hidden_BxTxD
    return out.pooled_BxD if out.pooled_BxD is not None else out.hidden_BxTxD[:, 0]
  if isinstance(model, Llama):
    hidden, _, _ = model.apply(frozen, batch["inputs"], batch["input_mask"], prompt)
    return hidden if token_level else hidden[:, -1]
  raise ValueError(f"a prompt method with a head needs an encoder or decoder backbone, not {type(model).__name__}")


def _logits(prompt_params: Any, frozen: Any, batch: Batch, model: nn.Module, method: nn.Module,
            rng: jax.Array | None = None) -> jax.Array:
  prompt = method.apply({"params": prompt_params}, batch)
  features = _features(model, frozen, batch, prompt, method.objective == "tag", rng)
  return method.apply({"params": prompt_params}, features, method=type(method).logits)


def loss_sum(
    prompt_params: Any, frozen: Any, batch: Batch, rng: jax.Array, *, model: nn.Module, method: nn.Module
) -> tuple[jax.Array, jax.Array]:
  """(summed cross-entropy, count) over labelled examples, or labelled tokens for a token head."""
  logits = _logits(prompt_params, frozen, batch, model, method, rng)
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
) -> dict[str, jax.Array]:
  """`class_logits` [B, C] for a sequence head, `token_logits` [B, L, C] for a token head."""
  del label_targets_CxT, label_mask_CxT  # the head scores the classes itself
  logits = _logits(prompt_params, frozen, batch, model, method)
  return {"token_logits" if method.objective == "tag" else "class_logits": logits}
