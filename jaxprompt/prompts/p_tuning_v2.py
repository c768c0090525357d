"""P-tuning v2 (Liu et al. 2022): deep prompts — trainable keys/values in every layer, no
reparameterisation — plus a linear head trained with them, on the [CLS] / pooled output
(sequence classification) or on every token (sequence labelling, e.g. NER).

On an encoder the sequence head reads the pooled [CLS] output (the [CLS] hidden state when the
checkpoint has no pooler); on a decoder, the last token's hidden state. The head is part of the
trainable pytree, saved and exported with the prompts.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxprompt.models.prompt import Prompt
from jaxprompt.prompts.classifier import dense_head, export_flat, params_from_flat
from jaxprompt.prompts.prefix_tuning import AttentionShape, PrefixTuning

HEADS = ("sequence", "token")


class DeepPromptWithHead(nn.Module):
  """Deep prompts for the backbone's self-attention, and a head over `num_labels` classes."""

  length: int
  shapes: tuple[AttentionShape, ...]
  hidden_dim: int  # the backbone's width: what the head reads
  num_labels: int
  head: str = "sequence"

  def __post_init__(self):
    if self.head not in HEADS:
      raise ValueError(f"P-tuning v2 head {self.head!r} is not one of {HEADS}")
    super().__post_init__()

  @property
  def objective(self) -> str:
    return "classify" if self.head == "sequence" else "tag"

  def setup(self):
    self.prompts = PrefixTuning(self.length, self.shapes, self.hidden_dim, reparam_hidden=0)
    self.classifier = dense_head(self.num_labels)

  def __call__(self, batch: dict[str, jax.Array]) -> Prompt:
    if self.is_initializing():  # create the head's params with the prompts'
      self.classifier(jnp.zeros((1, self.hidden_dim)))
    return self.prompts(batch)

  def logits(self, features: jax.Array) -> jax.Array:
    """Class logits (float32) of pooled [B, D] or per-token [B, L, D] features."""
    return self.classifier(features.astype(jnp.float32))

  def export(self, params: dict) -> dict[str, np.ndarray]:
    """Everything trainable is already plain: the prompts' keys/values and the head."""
    return export_flat(params)

  def collapsed(self) -> DeepPromptWithHead:
    return self

  def params_from_export(self, arrays: dict[str, np.ndarray]) -> dict:
    return params_from_flat(arrays)
