"""Runs of one model sharing its loaded backbone (experiment.beside): every weight is there
whichever ones the first run trains, and a different model is refused."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxprompt import experiment
from jaxprompt.training import train_and_evaluate
from tests.run_configs import apply_overrides, tiny_config


def test_a_run_beside_a_fine_tune_sees_the_whole_backbone():
  fine_tune = experiment.build(apply_overrides(tiny_config("sst2"), **{"model.trainable": "all", "prompt.method": "none"}))
  assert not jax.tree.leaves(fine_tune.backbone.frozen)  # all of it is the run's trainable weights
  prompted = experiment.beside(fine_tune, tiny_config("sst2", **{"batch_size": 16}))
  assert prompted.backbone.frozen is not None and not prompted.pretrained
  whole = fine_tune.merged(fine_tune.pretrained)
  jax.tree.map(np.testing.assert_array_equal, prompted.merged(prompted.pretrained), whole)


def test_another_model_or_mesh_is_refused():
  exp = experiment.build(tiny_config("sst2"))
  for key, value in (("model.dropout_rate", 0.3), ("mesh.data", 4)):
    with pytest.raises(ValueError, match="needs its model, mesh and rules"):
      experiment.beside(exp, tiny_config("sst2", **{key: value}))
  with pytest.raises(ValueError, match="batch_size=3 does not split"):
    experiment.beside(exp, tiny_config("sst2", **{"batch_size": 3}))


def test_training_beside_keeps_the_first_runs_weights(tmp_path):
  """A fine-tune beside another trains copies: its steps donate their state, never `exp`'s weights."""
  config = tiny_config("sst2", **{"model.trainable": "all", "prompt.method": "none", "num_steps": 2, "eval_every": 2,
                                  "checkpoint_every": 2})
  exp = experiment.build(config)
  before = jax.tree.map(np.array, exp.pretrained)
  train_and_evaluate(config, str(tmp_path / "run"), beside=exp)
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.array, exp.pretrained), before)
