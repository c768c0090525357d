"""T5's objective: batched rank classification equals scoring each label with teacher forcing."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

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
