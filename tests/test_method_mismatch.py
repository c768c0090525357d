"""A saved prompt that does not fit the run fails with both shapes named: a deep prompt for 24
layers into a 6-layer encoder, and a P-tuning checkpoint whose pseudo-token count is not the
template's."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxprompt import experiment
from jaxprompt.checkpoint import CheckpointMismatchError, PromptCheckpoints
from jaxprompt.evaluation import evaluate_prompt, load_prompt_params
from tests.method_runs import CASES


def test_a_24_layer_deep_prompt_does_not_load_into_a_6_layer_encoder(tmp_path):
  exp = experiment.build(CASES["p_tuning_v2-bert"]())  # MiniLM: 6 layers, 12 heads of 32
  arrays = exp.method.export(exp.init_params(jax.random.key(0)))
  deeper = {k: np.zeros((24,) + v.shape[1:], v.dtype) if k.endswith(("keys", "values")) else v for k, v in arrays.items()}
  path = tmp_path / "deep24.npz"
  np.savez(path, **deeper)
  with pytest.raises(CheckpointMismatchError) as error:
    load_prompt_params(exp, str(path))
  message = str(error.value)
  assert "(24, 4, 12, 32)" in message and "(6, 4, 12, 32)" in message, message


def test_a_p_tuning_template_with_fewer_pseudo_tokens_than_the_checkpoint_fails(tmp_path):
  config = CASES["p_tuning-llama"]()
  assert config.task.template.count("[P") == 5
  exp = experiment.build(config)
  params = exp.init_params(jax.random.key(0))
  checkpoints = PromptCheckpoints(tmp_path, keep=1, best_metric=None, asynchronous=False)
  checkpoints.save(exp.init_state(params), {"iterator": {}, "best": {}}, exp.checkpoint_meta(params))
  checkpoints.close()
  config.task.template = "[P0][P1][P2] {sentence} [P3] Sentiment:"
  with pytest.raises(CheckpointMismatchError) as error:
    evaluate_prompt(config, str(tmp_path))
  message = str(error.value)
  assert "checkpoint shape [5, 32], this run [4, 32]" in message, message
