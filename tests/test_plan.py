"""The ahead-of-time planner: the real train step compiled for a mesh from abstract inputs."""

from __future__ import annotations

import math
import types

import jax
import pytest

from jaxprompt import distributed, experiment, sharding
from jaxprompt.models.t5_config import T5Config
from jaxprompt.plan import (abstract_experiment, fit, fit_candidates, judge_fit, largest_batch, parse_mesh, plan, time_estimate, tpu_devices,
                            usable_memory_gib)
from jaxprompt.weights.t5_loader import abstract_t5_params
from tests.method_runs import CASES
from tests.run_configs import tiny_config

MESH = {"data": 2, "fsdp": 4, "tensor": 1}


def test_the_plan_counts_the_sharded_weights_and_shrinks_with_remat():
  # Scanned, as the pod-size runs the planner is for are ("auto" scans from 0.5B layer weights).
  config = tiny_config(**{"data.max_input_len": 64, "batch_size": 16, "model.scan_layers": True})
  plain = plan(config, MESH)
  params = jax.tree.leaves(abstract_t5_params(T5Config.preset("tiny", param_dtype="float32")))
  total_bytes = sum(math.prod(p.shape) * 4 for p in params)  # float32
  # fsdp=4 splits every weight with an embed axis; the few without one (norm scales excepted) stay whole.
  assert total_bytes / 4 <= plain["frozen_weights_gib_per_device"] * 2**30 < total_bytes
  assert plain["peak_gib_per_device"] > plain["arguments_gib_per_device"] > 0
  assert plain["compiled_gflops_per_device"] > 0
  assert plain["analytic_gflops_per_step"] > 0  # prompt tuning: the analytic count applies

  config.model.remat_policy = "full"
  remat = plan(config, MESH)
  assert remat["temporaries_gib_per_device"] < plain["temporaries_gib_per_device"]
  assert remat["frozen_weights_gib_per_device"] == plain["frozen_weights_gib_per_device"]


def test_every_family_is_planned_from_its_checkpoints_config_without_reading_weights(monkeypatch):
  from jaxprompt.weights import placement

  def no_weights(*args, **kwargs):
    raise AssertionError("the planner read a weight")

  monkeypatch.setattr(placement, "load_params", no_weights)
  minilm = CASES["p_tuning_v2-bert"]()  # the real MiniLM: its config.json, pooler told by its tensor names
  report = plan(minilm, MESH)
  assert report["model"] == f"bert:{minilm.model.checkpoint}" and report["peak_gib_per_device"] > 0
  weights_gib = 22_713_216 * 4 / 2**30  # all-MiniLM-L6-v2's parameters in float32, over fsdp=4 (norms and biases whole)
  assert weights_gib / 4 - 0.001 <= report["frozen_weights_gib_per_device"] < weights_gib / 2  # reported to 3 decimals
  assert report["analytic_gflops_per_step"] is None  # no analytic count for encoders

  smollm = CASES["prefix_tuning-llama"]()
  smollm.model.checkpoint = smollm.model.tokenizer  # the GGUF file: its metadata is the config
  smollm.prompt.method, smollm.loss_over = "prompt_tuning", "vocabulary"
  llama = abstract_experiment(smollm, sharding.make_mesh(MESH)).backbone.config
  assert (llama.num_layers, llama.hidden_size, llama.num_kv_heads, llama.vocab_size) == (30, 576, 3, 49152)
  assert plan(smollm, MESH)["peak_gib_per_device"] > 0


def test_fit_takes_the_least_recomputation_that_fits_then_microbatches():
  config = tiny_config(**{"data.max_input_len": 128, "batch_size": 32})
  # 32 rows over 2 x 4 batch shards: 4 microbatches keep a row per shard, 8 would not.
  assert fit_candidates(config, MESH) == [
      ("none", 1), ("dots", 1), ("dots_no_batch", 1), ("qkv_out", 1), ("full", 1), ("full", 2), ("full", 4)]

  roomy = fit(config, MESH, device_memory_gib=1024.0)
  assert roomy["chosen"]["remat_policy"] == "none" and len(roomy["tried"]) == 1
  no_remat_peak = roomy["chosen"]["peak_gib_per_device"]

  tight = fit(config, MESH, device_memory_gib=no_remat_peak * 0.9)
  chosen = tight["chosen"]
  assert chosen is not None and chosen["fits"] and chosen["peak_gib_per_device"] <= no_remat_peak * 0.9
  assert tight["tried"][0] == {**tight["tried"][0], "remat_policy": "none", "fits": False}
  assert all(not t["fits"] and t["peak_gib_per_device"] > no_remat_peak * 0.9 for t in tight["tried"][:-1])
  assert (chosen["remat_policy"], chosen["num_microbatches"]) == (
      tight["tried"][-1]["remat_policy"], tight["tried"][-1]["num_microbatches"])

  hopeless = fit(config, MESH, device_memory_gib=1e-6)
  assert hopeless["chosen"] is None and len(hopeless["tried"]) == 1
  assert "weights and optimizer state alone exceed" in hopeless["why"]
  with pytest.raises(ValueError, match="--fit needs --device_memory_gib.* or --tpu_topology"):
    fit(config, MESH)


def test_largest_batch_doubles_then_bisects_to_the_last_batch_that_fits():
  config = tiny_config(**{"data.max_input_len": 128, "batch_size": 8})
  at_32 = plan(tiny_config(**{"data.max_input_len": 128, "batch_size": 32}), MESH)["peak_gib_per_device"]
  found = largest_batch(config, MESH, device_memory_gib=at_32)
  assert found["largest_batch"] == 32 and found["chosen"]["batch_size"] == 32 and found["chosen"]["fits"]
  # 8, 16, 32 fit; 64 does not; bisecting in steps of the 8 batch shards: 48, then 40.
  assert [(t["batch_size"], t["fits"]) for t in found["tried"]] == [
      (8, True), (16, True), (32, True), (64, False), (48, False), (40, False)]

  hopeless = largest_batch(config, MESH, device_memory_gib=1e-6)
  assert hopeless["largest_batch"] is None and "weights and optimizer state alone exceed" in hopeless["why"]


def test_the_time_estimate_bills_every_device():
  estimate = time_estimate({"analytic_gflops_per_step": 445_800.0, "devices": 8}, 30_000, 197.0, 0.4)
  assert estimate["step_s"] == pytest.approx(445.8 / (8 * 197 * 0.4), abs=1e-3)
  assert estimate["device_hours_for_num_steps"] == pytest.approx(8 * estimate["hours_for_num_steps"], rel=1e-2)


def test_a_tpu_plan_is_judged_by_its_whole_peak_against_the_hbm_libtpu_says_is_usable():
  v5e = types.SimpleNamespace(device_kind="TPU v5 lite")
  assert usable_memory_gib([v5e], 0.0) == 15.75
  assert usable_memory_gib([v5e], 12.0) == 12.0  # --device_memory_gib wins
  assert usable_memory_gib(None, 0.0) == 0.0  # simulated CPU devices: no judgement unless asked
  with pytest.raises(ValueError, match=r"--fit needs --device_memory_gib.*no usable HBM is known for 'TPU v9'"):
    fit(tiny_config(), MESH, [types.SimpleNamespace(device_kind="TPU v9")])
  # libtpu accepted T5-XXL at batch 64 on a v5e-8: its temporaries fit, not beside the weights.
  assert judge_fit({"peak_gib_per_device": 16.768}, 15.75)["fits"] is False


def test_a_tpu_plan_without_its_compiler_or_with_a_bad_slice_name_says_how_to_get_one():
  with pytest.raises(ValueError, match=r"--tpu_topology='v9:1x1'.*pip install 'jax\[tpu\]'.*v5e:2x4"):
    tpu_devices("v9:1x1")


def test_the_abstract_state_matches_the_real_one_and_allocates_nothing():
  exp = experiment.build(tiny_config())
  real = exp.init_state(exp.init_params(jax.random.key(0)))
  abstract = exp.abstract_state
  assert all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(abstract))
  assert jax.tree.structure(abstract) == jax.tree.structure(real)
  for a, r in zip(jax.tree.leaves(abstract), jax.tree.leaves(real)):
    assert (a.shape, a.dtype, a.sharding) == (r.shape, r.dtype, r.sharding)


def test_mesh_argument():
  assert parse_mesh("fsdp:4") == {"data": 1, "fsdp": 4, "tensor": 1}
  with pytest.raises(ValueError, match="axis:size"):
    parse_mesh("fsdp=4")


def test_distributed_starts_only_when_asked_or_launched_as_one_of_many(monkeypatch):
  for key in ("TPU_WORKER_HOSTNAMES", "SLURM_NTASKS", "SLURM_JOB_ID", "SLURM_NTASKS_PER_NODE", "SLURM_GPUS_ON_NODE",
              "OMPI_COMM_WORLD_SIZE", "JAX_COORDINATOR_ADDRESS"):
    monkeypatch.delenv(key, raising=False)
  assert distributed.launched_as_one_of_many() is None
  distributed.initialize()  # one process: nothing starts
  monkeypatch.setenv("SLURM_JOB_ID", "7")
  monkeypatch.setenv("SLURM_NTASKS", "4")
  assert distributed.launched_as_one_of_many() == "SLURM"
  monkeypatch.setenv("SLURM_GPUS_ON_NODE", "8")
  assert distributed.slurm_node_gpus() is None  # one process per GPU: JAX's default
  monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "1")
  assert distributed.slurm_node_gpus() == list(range(8))  # one process drives the node's 8 GPUs
  monkeypatch.setenv("SLURM_NTASKS", "1")
  monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "10.0.0.1,10.0.0.2")
  assert distributed.launched_as_one_of_many() == "a TPU pod slice"
  with pytest.raises(ValueError, match="together"):
    distributed.initialize("127.0.0.1:1234", 2)
