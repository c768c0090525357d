"""T5's objective: batched rank classification equals scoring each label with teacher forcing."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprompt.models.t5 import T5, shift_right
from jaxprompt.models.t5_config import T5Config
from jaxprompt.objectives import seq2seq
from jaxprompt.prompts import initializers
from jaxprompt.prompts.soft_prompt import SoftPrompt

CONFIG = T5Config.preset("tiny", vocab_size=64, dtype="float32")
METHOD = SoftPrompt(3, CONFIG.d_model, initializers.uniform())


def test_rank_classification_equals_scoring_each_label_alone():
  ids = jnp.ones((1, 4), jnp.int32)
  params = nn.meta.unbox(jax.jit(T5(CONFIG).init)(jax.random.key(0), ids, ids > 0, ids))
  inputs = np.array([[5, 6, 7, 1], [8, 9, 1, 0]], np.int32)
  targets = np.array([[10, 1, 0], [11, 12, 1]], np.int32)
  batch = {"inputs": inputs, "input_mask": inputs > 0, "targets": targets, "target_mask": targets > 0}
  labels = np.array([[10, 1, 0], [11, 12, 1], [13, 1, 0]], np.int32)
  prompt_params = nn.meta.unbox(METHOD.init(jax.random.key(1), batch))["params"]
  out = jax.jit(functools.partial(seq2seq.eval_step, model=T5(CONFIG), method=METHOD, max_decode_len=3))(
      prompt_params, params, batch, labels, labels > 0)
  prompt = METHOD.apply({"params": prompt_params}, batch)
  forward = jax.jit(T5(CONFIG).apply)
  for b in range(2):
    for c, label in enumerate(labels):
      logits = forward(params, inputs[b : b + 1], inputs[b : b + 1] > 0, shift_right(label[None], 0), prompt=prompt)
      logp = jax.nn.log_softmax(logits[0])
      expected = sum(float(logp[j, label[j]]) for j in range(int((label > 0).sum())))
      np.testing.assert_allclose(out["label_scores"][b, c], expected, atol=1e-5)
  np.testing.assert_allclose(out["label_scores"][:, :2].diagonal(), out["target_logp"], atol=1e-5)


def test_each_examples_choices_are_scored_as_each_alone_and_train_by_pets_hinge():
  """A cloze task's per-example choices (COPA) on T5: one encoder pass, every choice decoded."""
  from jaxprompt.objectives import multi_mask  # noqa: PLC0415

  ids = jnp.ones((1, 4), jnp.int32)
  params = nn.meta.unbox(jax.jit(T5(CONFIG).init)(jax.random.key(0), ids, ids > 0, ids))
  inputs = np.array([[5, 6, 7, 1], [8, 9, 1, 0]], np.int32)
  candidates = np.array([[[10, 11, 1], [12, 1, 0]], [[13, 1, 0], [14, 15, 1]]], np.int32)
  batch = {"inputs": inputs, "input_mask": inputs > 0, "targets": candidates[:, 0], "target_mask": candidates[:, 0] > 0,
           "candidates": candidates, "candidate_mask": candidates > 0, "label": np.array([1, 0], np.int32),
           "example_mask": np.array([True, True])}
  prompt_params = nn.meta.unbox(METHOD.init(jax.random.key(1), batch))["params"]
  model = T5(CONFIG)
  out = jax.jit(functools.partial(seq2seq.eval_step, model=model, method=METHOD, max_decode_len=3, choices=True))(
      prompt_params, params, batch, None, None)
  prompt = METHOD.apply({"params": prompt_params}, batch)

  def alone(b, c):
    target = candidates[b, c][None]
    logits = model.apply(params, inputs[b : b + 1], inputs[b : b + 1] > 0, shift_right(target, 0), None,
                         jax.tree.map(lambda x: x[b : b + 1] if x.shape[0] == 2 else x, prompt))
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)[0]
    return float(sum(logp[j, t] for j, t in enumerate(target[0]) if t))

  expected = np.array([[alone(b, c) for c in range(2)] for b in range(2)])
  np.testing.assert_allclose(out["label_scores"], expected, atol=1e-5, rtol=1e-5)
  total, count = jax.jit(functools.partial(seq2seq.loss_sum, model=model, method=METHOD, choices=True))(
      prompt_params, params, batch, jax.random.key(0))
  hinge, n = multi_mask.hinge_loss(jnp.asarray(expected, jnp.float32), batch["label"], batch["example_mask"],
                                   np.ones((2, 2), bool))
  assert float(count) == float(n) == 2 and float(total) == pytest.approx(float(hinge), rel=1e-5, abs=1e-5)
