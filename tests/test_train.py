"""The train step and loop on 8 fake devices (2-D mesh): what changes, what is saved, what resumes."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxprompt import experiment, sharding, steps
from jaxprompt.checkpoint import CheckpointMismatchError
from jaxprompt.evaluation import load_prompt_params
from jaxprompt.tasks import pipeline
from jaxprompt.training import train_and_evaluate
from tests.run_configs import tiny_config, workdir_files

# The first step's loss of configs/t5_prompt.py:size=tiny on SST-2 (seed 0): a regression pin. Its
# layers unrolled ("auto" at this size; the random init differs by layout: 11.114089 scanned).
GOLDEN_FIRST_LOSS = 10.607446670532227


def _first_batches(exp, n: int):
  feats = experiment.train_features(exp)
  c = exp.config
  it = pipeline.train_iterator(feats, c.batch_size, c.seed, c.data.max_input_len, c.data.max_target_len,
                               tuple(c.data.bucket_lengths))
  return [pipeline.to_global(next(it), exp.batch_sharding) for _ in range(n)]


def _run_steps(exp, n: int, train_step=None):
  params = exp.init_params(jax.random.key(0))
  state = exp.init_state(params)
  train_step = train_step or exp.train_step()
  losses = []
  with sharding.activate(exp.mesh, exp.rules):
    for batch in _first_batches(exp, n):
      state, metrics = train_step(state, exp.frozen, batch, jax.random.key(1))
      losses.append(float(metrics["train/loss"]))
  return state, losses


@pytest.fixture(scope="module")
def exp():
  return experiment.build(tiny_config())


def _host(tree):
  return jax.tree.map(lambda x: np.array(jax.device_get(x)), tree)


def test_a_step_changes_only_the_prompt_and_optimizer_state(exp):
  frozen_before = _host(exp.frozen)
  params = exp.init_params(jax.random.key(0))
  state = exp.init_state(params)
  before = _host(state)
  with sharding.activate(exp.mesh, exp.rules):
    new_state, metrics = exp.train_step()(state, exp.frozen, _first_batches(exp, 1)[0], jax.random.key(1))
  # The frozen weights were neither donated nor changed: bit for bit the loaded backbone.
  for a, b in zip(jax.tree.leaves(frozen_before), jax.tree.leaves(_host(exp.frozen))):
    np.testing.assert_array_equal(a, b)
  assert int(new_state.step) == 1
  assert not np.array_equal(_host(new_state.params)["embeddings"], before.params["embeddings"])
  changed = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before.opt_state), jax.tree.leaves(_host(new_state.opt_state)))]
  assert any(changed)
  assert np.isfinite(float(metrics["train/loss"]))


def test_train_step_is_traced_once(exp, monkeypatch):
  traces = []
  original = steps.train_step
  monkeypatch.setattr(steps, "train_step", lambda *a, **k: traces.append(1) or original(*a, **k))
  _run_steps(exp, 4)
  assert len(traces) == 1


def test_golden_first_step_loss(exp):
  _, losses = _run_steps(exp, 1)
  assert losses[0] == pytest.approx(GOLDEN_FIRST_LOSS, rel=1e-5)


def test_microbatches_equal_the_full_batch():
  full, _ = _run_steps(experiment.build(tiny_config()), 2)
  accumulated, _ = _run_steps(experiment.build(tiny_config(num_microbatches=2)), 2)
  np.testing.assert_allclose(_host(accumulated.params)["embeddings"], _host(full.params)["embeddings"], atol=1e-6)


def test_sharded_step_equals_one_device(exp):
  sharded, sharded_losses = _run_steps(exp, 2)
  one_device = experiment.build(tiny_config(), mesh=sharding.make_mesh({"data": 1}, devices=jax.devices()[:1]))
  single, single_losses = _run_steps(one_device, 2)
  np.testing.assert_allclose(sharded_losses, single_losses, rtol=1e-6)
  np.testing.assert_allclose(_host(sharded.params)["embeddings"], _host(single.params)["embeddings"], atol=1e-6)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("run")
  result = train_and_evaluate(tiny_config(), str(workdir))
  return workdir, result


def test_a_run_saves_prompt_only_checkpoints(finished_run):
  workdir, result = finished_run
  assert result["step"] == 6 and {"eval/accuracy", "eval/exact_match", "eval/loss"} <= set(result["eval"])
  steps_saved = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  assert steps_saved == [3, 6]
  files = workdir_files(workdir / "checkpoints" / "6")
  size = sum(p.stat().st_size for p in files)
  # Prompt [8, 16] + Adafactor's [8, 16] second moment + step: ~1 KB of arrays; the backbone's
  # embedding table alone is 2 MB. The rest is Orbax/JSON metadata.
  assert size < 100_000, [(p.name, p.stat().st_size) for p in files]
  assert not any(name in str(p) for p in files for name in ("token_embedder", "encoder", "decoder"))
  for name in ("prompts/step_3.npy", "prompts/step_6.npy", "prompts/best.npy", "metrics.jsonl"):
    assert (workdir / name).is_file(), name
  assert any((workdir / "tensorboard").iterdir())
  assert np.load(workdir / "prompts" / "step_6.npy").shape == (8, 16)


def test_restoring_another_prompt_length_fails_with_both_shapes(finished_run):
  workdir, _ = finished_run
  with pytest.raises(CheckpointMismatchError, match=r"prompt param embeddings: checkpoint shape \[8, 16\], this run \[4, 16\]"):
    train_and_evaluate(tiny_config(**{"prompt.length": 4}), str(workdir))


def test_restoring_onto_another_backbone_fails(finished_run):
  workdir, _ = finished_run
  with pytest.raises(CheckpointMismatchError, match="backbone weights differ at"):
    train_and_evaluate(tiny_config(**{"model.init_seed": 1}), str(workdir))


def test_a_checkpoint_restores_onto_a_smaller_mesh(finished_run):
  """Saved from the 2 x 4 mesh of 8 devices, restored onto 4 devices (data=2, fsdp=2): the same prompt."""
  workdir, _ = finished_run
  config = tiny_config()
  saved = experiment.build(config)
  _, on_eight, _, _ = load_prompt_params(saved, str(workdir / "checkpoints" / "6"))
  config.mesh.data, config.mesh.fsdp = 2, 2
  small = experiment.build(config, mesh=sharding.make_mesh(config.mesh.to_dict(), devices=jax.devices()[:4]))
  _, on_four, _, _ = load_prompt_params(small, str(workdir / "checkpoints" / "6"))
  assert on_four["embeddings"].sharding.mesh.devices.size == 4
  np.testing.assert_array_equal(_host(on_four)["embeddings"], _host(on_eight)["embeddings"])


def test_an_unfinished_checkpoint_is_ignored(finished_run):
  workdir, _ = finished_run
  partial = workdir / "checkpoints" / "9.orbax-checkpoint-tmp-1700000000"
  (partial / "state").mkdir(parents=True)
  (partial / "state" / "garbage").write_bytes(b"\0" * 10)
  result = train_and_evaluate(tiny_config(num_steps=8, eval_every=8), str(workdir))
  assert result["step"] == 8  # resumed from 6, not from the half-written 9
  assert not partial.exists()


def test_a_non_finite_loss_stops_with_the_step(tmp_path):
  bad = tmp_path / "nan_prompt.npy"
  np.save(bad, np.full((8, 16), np.nan, np.float32))
  config = tiny_config(**{"prompt.init": "file", "prompt.init_file": str(bad)})
  with pytest.raises(FloatingPointError, match="non-finite training loss nan at step 1"):
    train_and_evaluate(config, str(tmp_path / "run"))


def test_superglue_cb_reports_macro_f1(tmp_path):
  result = train_and_evaluate(tiny_config("cb", num_steps=2, eval_every=2, checkpoint_every=2), str(tmp_path))
  assert {"eval/accuracy", "eval/f1_macro"} <= set(result["eval"])
  assert result["eval"]["eval/examples"] == 16
