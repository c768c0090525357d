"""Prompt tuning (Lester et al. 2021): P trainable embeddings placed into the input sequence."""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxprompt.models.prompt import Prompt

PLACEMENTS = ("prefix", "after_bos", "suffix")


class SoftPrompt(nn.Module):
  """The prompt is one [P, D] float32 param; `placement` says where it enters the sequence.

  prefix: before the first token (Lester et al., T5). after_bos: after a decoder's BOS token.
  suffix: after each example's last valid token.
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
    return Prompt(embeddings_BxPxD=embeddings_PxD[None], insert_at_B=self._insert_at(batch["input_mask"]))

  def _insert_at(self, input_mask_BxL: jax.Array) -> jax.Array | None:
    if self.placement == "prefix":
      return None
    if self.placement == "after_bos":
      return jnp.ones(input_mask_BxL.shape[:1], jnp.int32)
    return jnp.sum(input_mask_BxL, axis=1, dtype=jnp.int32)

  @staticmethod
  def embeddings(params: dict) -> jax.Array:
    """The [P, D] prompt: what is exported as .npy and served."""
    return params["embeddings"]

  @staticmethod
  def params_from_embeddings(embeddings_PxD: jax.Array) -> dict:
    """The inverse of `embeddings`: params holding an exported prompt."""
    return {"embeddings": embeddings_PxD}
