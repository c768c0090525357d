"""Optimizers and learning-rate schedules from config.optimizer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import t5_prompt
from jaxprompt.optimizers import learning_rate_schedule, make_optimizer


def _opt(**changes) -> ml_collections.ConfigDict:
  opt = t5_prompt.get_config("size=tiny").optimizer
  opt.update(changes)
  return opt


@pytest.mark.parametrize("schedule,expected", [
    ("constant", [0.0, 0.5, 1.0, 1.0, 1.0]),
    ("linear", [0.0, 0.5, 1.0, 0.5, 0.0]),
    ("cosine", [0.0, 0.5, 1.0, 0.5, 0.0]),
    ("rsqrt", [0.0, 0.5, 1.0, (2 / 4) ** 0.5, (2 / 6) ** 0.5]),
])
def test_schedules_warm_up_then_follow_their_shape(schedule, expected):
  fn = learning_rate_schedule(_opt(learning_rate=1.0, schedule=schedule, warmup_steps=2), num_steps=6)
  np.testing.assert_allclose([float(fn(s)) for s in (0, 1, 2, 4, 6)], expected, atol=1e-6)


@pytest.mark.parametrize("name", ["adafactor", "adam"])
def test_optimizers_step_and_clip(name):
  opt, _ = make_optimizer(_opt(name=name, learning_rate=0.1, clip_norm=1.0), num_steps=10)
  params = {"embeddings": jnp.ones((4, 8))}
  grads = {"embeddings": jnp.full((4, 8), 100.0)}
  updates, _ = opt.update(grads, opt.init(params), params)
  new = optax.apply_updates(params, updates)
  assert not np.allclose(new["embeddings"], params["embeddings"])
  assert float(optax.tree.norm(updates)) < 2.0  # clipped gradients and bounded updates, not 100s


def test_unknown_names_are_errors():
  with pytest.raises(ValueError, match="config.optimizer.name='sgd' is not one of"):
    make_optimizer(_opt(name="sgd"), 10)
  with pytest.raises(ValueError, match="config.optimizer.schedule='step' is not one of"):
    make_optimizer(_opt(schedule="step"), 10)


def test_adamw_can_leave_biases_and_norms_undecayed_as_pet_and_lm_bff_train():
  params = {"prompt": {"embeddings": jnp.ones((2, 3))},
            "encoder/layers/mlp/wi/kernel": jnp.ones((3, 4)), "encoder/layers/mlp/wi/bias": jnp.ones((4,)),
            "encoder/layers/attention_norm/scale": jnp.ones((3,)), "mlm_head/norm/bias": jnp.ones((3,))}
  zero_grads = jax.tree.map(jnp.zeros_like, params)
  # With zero gradients only weight decay moves a weight.
  for decay_all, decayed in ((True, set(params)), (False, {"prompt", "encoder/layers/mlp/wi/kernel"})):
    optimizer, _ = make_optimizer(_opt(name="adam", learning_rate=1.0, weight_decay=0.5,
                                       decay_biases_and_norms=decay_all), 10)
    updates, _ = optimizer.update(zero_grads, optimizer.init(params), params)
    moved = {k for k, v in updates.items() if np.abs(np.asarray(jax.tree.leaves(v)[0])).max() > 0}
    assert moved == decayed, (decay_all, moved)
