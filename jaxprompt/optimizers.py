"""The optimizer of the trainable pytree, and its learning-rate schedule, from `config.optimizer`."""

from __future__ import annotations

from typing import Any

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
    optimizer = optax.adamw(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=opt.weight_decay)
  if opt.clip_norm > 0:
    optimizer = optax.chain(optax.clip_by_global_norm(opt.clip_norm), optimizer)
  return optimizer, schedule
