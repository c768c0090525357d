"""The analytic FLOP count against XLA's own count of the same steps."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from jaxprompt.flops import t5_prompt_tuning_flops
from jaxprompt.models.layers import REMAT_BY_RECOMPUTATION
from jaxprompt.models.prompt import Prompt
from jaxprompt.models.t5 import T5, shift_right
from jaxprompt.models.t5_config import T5Config
from jaxprompt.steps import token_log_likelihood

BATCH, PROMPT, INPUT, TARGET = 2, 6, 18, 5


def _loss(prompt_PxD, params, ids, labels, *, model):
  decoder_inputs = shift_right(labels, model.config.decoder_start_token_id)
  logits = model.apply(params, ids, ids > 0, decoder_inputs, prompt=Prompt(embeddings_BxPxD=prompt_PxD[None]))
  return -jnp.sum(token_log_likelihood(logits, labels, labels > 0))


def _xla_flops(fn, *args) -> float:
  return float(jax.jit(fn).lower(*args).cost_analysis()["flops"])


def _abstract_args(config: T5Config) -> tuple:
  """(prompt, params, ids, labels) as shapes: XLA counts FLOPs without anything allocated."""
  ids = jax.ShapeDtypeStruct((BATCH, INPUT), jnp.int32)
  labels = jax.ShapeDtypeStruct((BATCH, TARGET), jnp.int32)
  mask = jax.ShapeDtypeStruct(ids.shape, bool)
  params = nn.meta.unbox(jax.eval_shape(T5(config).init, jax.random.key(0), ids, mask, labels))
  return jax.ShapeDtypeStruct((PROMPT, config.d_model), jnp.float32), params, ids, labels


@pytest.mark.parametrize("feed_forward_proj", ["gated-gelu", "relu"])
def test_analytic_flops_match_xla_for_forward_prompt_step_and_full_step(feed_forward_proj):
  # Wide enough that matmuls dominate XLA's count (it also counts norms, softmaxes, activations);
  # unrolled layers, since XLA counts a scanned loop's body once.
  config = T5Config(d_model=256, d_kv=32, d_ff=512, num_heads=4, num_encoder_layers=2, num_decoder_layers=3,
                    feed_forward_proj=feed_forward_proj, dtype="float32", param_dtype="float32", scan_layers=False)
  loss = functools.partial(_loss, model=T5(config))
  args = _abstract_args(config)

  analytic = t5_prompt_tuning_flops(config, BATCH, PROMPT, INPUT, TARGET)
  xla = {
      "forward": _xla_flops(loss, *args),
      "prompt_step": _xla_flops(jax.grad(loss), *args),
      "all_weights_step": _xla_flops(jax.grad(loss, argnums=(0, 1)), *args),
  }
  for name, counted in xla.items():
    assert getattr(analytic, name) == pytest.approx(counted, rel=0.03), name
  # What prompt tuning saves by construction: no weight-gradient matmuls (theory for T5: 0.67-0.69
  # at long inputs; a little more here, where the decoder's own share is larger).
  assert analytic.prompt_step / analytic.all_weights_step < 0.72
  assert xla["prompt_step"] / xla["all_weights_step"] < 0.72


def test_remat_policies_recompute_in_the_order_the_planner_tries_them_and_less_than_a_forward():
  counted = {}
  for policy in REMAT_BY_RECOMPUTATION:
    config = T5Config(d_model=256, d_kv=32, d_ff=512, num_heads=4, num_encoder_layers=2, num_decoder_layers=3,
                      dtype="float32", param_dtype="float32", scan_layers=False, remat_policy=policy)
    counted[policy] = _xla_flops(jax.grad(functools.partial(_loss, model=T5(config))), *_abstract_args(config))
  flops = [counted[policy] for policy in REMAT_BY_RECOMPUTATION]
  assert flops == sorted(flops) and flops[-1] > flops[0]
  # Frozen projections need no saved inputs (dx = dy W^T), so even full remat recomputes less
  # than a whole forward pass.
  forward = t5_prompt_tuning_flops(config, BATCH, PROMPT, INPUT, TARGET).forward
  assert counted["full"] - counted["none"] < forward
