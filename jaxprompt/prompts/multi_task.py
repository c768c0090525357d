"""Multi-task prompts: one soft prompt shared by all tasks plus one per task, chosen per example by
the batch's task ids, trained on a mixture of tasks (as in multi-task prompt tuning, e.g. Vu et
al.'s SPoT and Asai et al.'s ATTEMPT setups).

The shared and task prompts are concatenated (shared first) or added (equal lengths).
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxprompt.models.prompt import Prompt
from jaxprompt.prompts.soft_prompt import PLACEMENTS, placed_prompt

COMBINE = ("concat", "add")


class MultiTaskPrompt(nn.Module):
  """shared [Ps, D] and tasks [T, Pt, D]; example b gets shared (+|,) tasks[task_id[b]]."""

  shared_length: int
  task_length: int
  num_tasks: int
  embed_dim: int
  initializer: Callable[[jax.Array, tuple[int, ...], jnp.dtype], jax.Array]
  combine: str = "concat"
  placement: str = "prefix"

  def __post_init__(self):
    if self.combine not in COMBINE:
      raise ValueError(f"multi-task prompt combine={self.combine!r} is not one of {COMBINE}")
    if self.combine == "add" and self.shared_length != self.task_length:
      raise ValueError(f"combine='add' needs equal lengths; shared {self.shared_length}, task {self.task_length}")
    if self.placement not in PLACEMENTS or self.placement == "markers":
      raise ValueError(f"multi-task prompt placement {self.placement!r}: use prefix, after_bos or suffix")
    super().__post_init__()

  @nn.compact
  def __call__(self, batch: dict[str, jax.Array]) -> Prompt:
    d, t = self.embed_dim, self.num_tasks
    axes = ("prompt", "prompt_embed")
    shared_init = nn.with_logical_partitioning(self.initializer, axes)
    shared_PxD = self.param("shared", shared_init, (self.shared_length, d), jnp.float32)
    # The task bank [T, P, D] drawn as T*P rows of the same initialiser.
    bank = lambda rng, shape, dtype=jnp.float32: self.initializer(rng, (t * shape[1], d), dtype).reshape(shape)
    bank_init = nn.with_logical_partitioning(bank, (None,) + axes)
    tasks_TxPxD = self.param("tasks", bank_init, (t, self.task_length, d), jnp.float32)
    # Padding rows carry task id -1; any task will do for them.
    per_example_BxPxD = jnp.take(tasks_TxPxD, jnp.clip(batch["task_id"], 0, t - 1), axis=0)
    shared_BxPxD = jnp.broadcast_to(shared_PxD, (per_example_BxPxD.shape[0],) + shared_PxD.shape)
    if self.combine == "concat":
      embeddings = jnp.concatenate([shared_BxPxD, per_example_BxPxD], axis=1)
    else:
      embeddings = shared_BxPxD + per_example_BxPxD
    return placed_prompt(embeddings, self.placement, batch)

  def export(self, params: dict) -> dict[str, np.ndarray]:
    return {"shared": np.asarray(params["shared"], np.float32), "tasks": np.asarray(params["tasks"], np.float32)}

  def collapsed(self) -> MultiTaskPrompt:
    return self

  def params_from_export(self, arrays: dict[str, np.ndarray]) -> dict:
    return {"shared": jnp.asarray(arrays["shared"]), "tasks": jnp.asarray(arrays["tasks"])}
