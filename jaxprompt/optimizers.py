"""The optimizer of the trainable pytree, and its learning-rate schedule, from `config.optimizer`."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

SCHEDULES = ("constant", "linear", "cosine", "rsqrt")
OPTIMIZERS = ("adafactor", "adam")


def learning_rate_schedule(opt: Any, num_steps: int) -> optax.Schedule:
  """Linear warm-up to `learning_rate`, then constant, linear decay to 0, cosine, or 1/sqrt(step)."""
  if opt.schedule not in SCHEDULES:
    raise ValueError(f"config.optimizer.schedule={opt.schedule!r} is not one of {SCHEDULES}")
  lr, warmup = opt.learning_rate, opt.warmup_steps
  after = max(num_steps - warmup, 1)
  if opt.schedule == "constant":
    main = optax.constant_schedule(lr)
  elif opt.schedule == "linear":
    main = optax.linear_schedule(lr, 0.0, after)
  elif opt.schedule == "cosine":
    main = optax.cosine_decay_schedule(lr, after)
  else:  # T5's inverse square root, continuing from where the warm-up ends
    offset = max(warmup, 1)
    # join_schedules also evaluates this piece before its boundary (negative steps): keep it finite.
    main = lambda step: lr * jnp.sqrt(offset / jnp.maximum(step + offset, 1))
  if warmup == 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def _decayed(params: Any) -> Any:
  """True for the weights AdamW decays: all but biases and norms (PET's and LM-BFF's no_decay list,
  "bias" and "LayerNorm.weight"; here norms are the modules named *norm*)."""
  def decays(path, _) -> bool:
    names = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
    parts = [part for name in names for part in name.split("/")]
    return parts[-1] != "bias" and not any("norm" in part for part in parts[:-1])

  return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(opt: Any, num_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """(optimizer, schedule). Gradients are clipped by global norm first when `clip_norm` > 0."""
  if opt.name not in OPTIMIZERS:
    raise ValueError(f"config.optimizer.name={opt.name!r} is not one of {OPTIMIZERS}")
  schedule = learning_rate_schedule(opt, num_steps)
  if opt.name == "adafactor":
    optimizer = optax.adafactor(
        learning_rate=schedule,
        decay_rate=opt.decay_rate,
        multiply_by_parameter_scale=opt.multiply_by_parameter_scale,
        clipping_threshold=opt.update_clipping,
        weight_decay_rate=opt.weight_decay or None,
    )
  else:
    mask = None if opt.decay_biases_and_norms else _decayed
    optimizer = optax.adamw(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=opt.weight_decay, mask=mask)
  if opt.clip_norm > 0:
    optimizer = optax.chain(optax.clip_by_global_norm(opt.clip_norm), optimizer)
  return optimizer, schedule
