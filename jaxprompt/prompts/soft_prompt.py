"""Prompt tuning (Lester et al. 2021): P trainable embeddings placed into the input sequence."""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxprompt.models.prompt import Prompt

PLACEMENTS = ("prefix", "after_bos", "suffix", "markers")


def placed_prompt(embeddings: jax.Array, placement: str, batch: dict[str, jax.Array]) -> Prompt:
  """A Prompt carrying `embeddings` ([P, D], or [B, P, D] per example), placed as `placement` says."""
  embeddings = embeddings[None] if embeddings.ndim == 2 else embeddings
  if placement == "markers":
    return Prompt(embeddings_BxPxD=embeddings, replace_at_BxL=batch["soft_positions"])
  if placement == "prefix":
    return Prompt(embeddings_BxPxD=embeddings)
  return Prompt(embeddings_BxPxD=embeddings, insert_at_B=insert_positions(placement, batch["input_mask"]))


def insert_positions(placement: str, mask_BxL: jax.Array) -> jax.Array:
  """Per example, the index of the token before which soft tokens placed at `placement` (prefix,
  after_bos or suffix) go."""
  # Index arithmetic that holds for left and right padding alike.
  columns = jnp.arange(mask_BxL.shape[1], dtype=jnp.int32)
  if placement == "prefix":
    return jnp.zeros(mask_BxL.shape[:1], jnp.int32)
  if placement == "after_bos":
    return jnp.argmax(mask_BxL, axis=1).astype(jnp.int32) + 1  # after the first valid token
  return jnp.max(jnp.where(mask_BxL, columns + 1, 0), axis=1)  # after the last valid token


class SoftPrompt(nn.Module):
  """The prompt is one [P, D] float32 param; `placement` says where it enters the sequence.

  prefix: before the first token (Lester et al., T5). after_bos: after the first valid token (a
  decoder's BOS). suffix: after the last valid token. markers: soft token i replaces the template's
  [Pi] marker (P-tuning v1's placement; batch["soft_positions"] says where).
  """

  length: int
  embed_dim: int
  initializer: Callable[[jax.Array, tuple[int, ...], jnp.dtype], jax.Array]
  placement: str = "prefix"

  def __post_init__(self):
    if self.placement not in PLACEMENTS:
      raise ValueError(f"prompt placement {self.placement!r} is not one of {PLACEMENTS}")
    super().__post_init__()

  @nn.compact
  def __call__(self, batch: dict[str, jax.Array]) -> Prompt:
    embeddings_PxD = self.param(
        "embeddings",
        nn.with_logical_partitioning(self.initializer, ("prompt", "prompt_embed")),
        (self.length, self.embed_dim),
        jnp.float32,
    )
    return placed_prompt(embeddings_PxD, self.placement, batch)

  def export(self, params: dict) -> dict[str, np.ndarray]:
    """The [P, D] prompt ("embeddings"): what is exported as .npy and served."""
    return {"embeddings": np.asarray(params["embeddings"], np.float32)}

  def collapsed(self) -> SoftPrompt:
    """Nothing to collapse: the params are the prompt."""
    return self

  def params_from_export(self, arrays: dict[str, np.ndarray]) -> dict:
    return {"embeddings": jnp.asarray(arrays["embeddings"], jnp.float32)}
