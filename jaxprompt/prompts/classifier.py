"""A classification head alone, no prompt: the standard sequence classifier (Hugging Face's
`...ForSequenceClassification`) when the backbone trains with it (config.model.trainable=all), a
linear probe when it is frozen. PET distils its ensemble into one (its final classifier).

It reads what P-tuning v2's head reads (the family's head_features: an encoder's pooled [CLS]
output, a decoder's last token) and is the whole trainable pytree of the method.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util


def dense_head(num_labels: int) -> nn.Dense:
  """The linear classifier P-tuning v2 and ClassifierHead train (BERT's initialiser scale, 0.02)."""
  return nn.Dense(num_labels, kernel_init=nn.with_logical_partitioning(nn.initializers.normal(0.02),
                                                                        ("prompt_embed", None)))


def export_flat(params: dict) -> dict[str, np.ndarray]:
  """Params that are already plain arrays, by their "/"-joined paths (a method's export)."""
  return {k: np.asarray(v, np.float32) for k, v in traverse_util.flatten_dict(params, sep="/").items()}


def params_from_flat(arrays: dict[str, np.ndarray]) -> dict:
  return traverse_util.unflatten_dict({k: jnp.asarray(v) for k, v in arrays.items()}, sep="/")


class ClassifierHead(nn.Module):
  """A linear layer over the backbone's sequence feature, `num_labels` classes."""

  hidden_dim: int  # the backbone's width: what the head reads
  num_labels: int

  objective = "classify"  # objectives.head trains it

  def setup(self):
    self.classifier = dense_head(self.num_labels)

  def __call__(self, batch: dict[str, jax.Array]) -> None:
    """No prompt: the backbone runs on the plain input."""
    del batch
    if self.is_initializing():  # create the head's params
      self.classifier(jnp.zeros((1, self.hidden_dim)))

  def logits(self, features_BxD: jax.Array) -> jax.Array:
    """Class logits (float32) of pooled [B, D] features."""
    return self.classifier(features_BxD.astype(jnp.float32))

  def export(self, params: dict) -> dict[str, np.ndarray]:
    return export_flat(params)

  def collapsed(self) -> ClassifierHead:
    return self

  def params_from_export(self, arrays: dict[str, np.ndarray]) -> dict:
    return params_from_flat(arrays)
