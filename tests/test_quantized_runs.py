"""Runs on a quantised frozen backbone: prompt methods train and resume on the 8-device mesh, the
planner counts the quantised weights, and weights that train cannot be quantised."""

from __future__ import annotations

import math

import jax
import pytest
from flax import traverse_util

from jaxprompt import experiment, sharding
from jaxprompt.models.quantized import QuantizedKernel
from jaxprompt.plan import abstract_experiment, plan
from jaxprompt.training import train_and_evaluate
from tests.method_runs import CASES, CLOZE_CASES, train_and_check
from tests.run_configs import tiny_config

is_kernel = lambda x: isinstance(x, QuantizedKernel)


def _kernels(frozen) -> list[QuantizedKernel]:
  return [x for x in jax.tree.leaves(frozen, is_leaf=is_kernel) if is_kernel(x)]


# Every family and every kind of prompt (tests/method_runs.py), each with one of the schemes: T5's
# prefixes of every attention kind and its mixture of task prompts, P-tuning's LSTM on a decoder,
# P-tuning v2's head on the real MiniLM, a cloze prompt on ALBERT's shared layer. (Prompt tuning on
# T5 is the run below; prefixes on a 4-bit Llama are served in tests/serving/test_prompt_bank.py.)
SCHEMES = ("int8", "int4", "nf4")
RUNS = {**{case: CASES[case] for case in ("prefix_tuning-t5", "multi_task-t5", "p_tuning-llama", "p_tuning_v2-bert")},
        "prompt_tuning-albert-copa": CLOZE_CASES["prompt_tuning-albert-copa"]}


# SmolLM2's own Q4_1 file trains in bench/smollm_quantised.py (the real model is slow for the suite);
# tests/weights/test_gguf_quantised.py shows its kept blocks give the float file's logits.
@pytest.mark.parametrize("index, case", enumerate(sorted(RUNS)))
def test_every_method_trains_its_prompt_on_a_quantised_backbone(index, case):
  """A few steps move every prompt param and leave the quantised codes as they were."""
  scheme = SCHEMES[index % len(SCHEMES)]
  config = RUNS[case]()
  config.model.quantization = scheme
  before, after = train_and_check(config, steps=3)
  assert 0 < after < 1e3 and 0 < before < 1e3  # finite: no NaN through the codes


def test_a_run_on_a_quantised_backbone_trains_evaluates_and_restores(tmp_path):
  config = tiny_config(**{"model.quantization": "nf4", "num_steps": 4, "eval_every": 4})
  exp = experiment.build(config)
  assert {k.scheme for k in _kernels(exp.frozen)} == {"nf4"}
  metrics = train_and_evaluate(config, str(tmp_path), beside=exp)
  assert 0 < metrics["eval"]["eval/loss"] < 1e3
  # Restored by a new run on a freshly loaded (and quantised) backbone: its fingerprint matches.
  assert train_and_evaluate(config, str(tmp_path))["step"] == 4


def test_the_planner_plans_quantised_weights():
  mesh_sizes = {"data": 2, "fsdp": 4, "tensor": 1}
  config = tiny_config(**{"model.param_dtype": "float32", "model.quantization": "nf4"})
  report = plan(config, mesh_sizes)
  assert report["quantization"] == "nf4" and report["peak_gib_per_device"] > 0
  flat = lambda exp: traverse_util.flatten_dict(exp.frozen["params"], sep="/")
  quantised = flat(abstract_experiment(config, sharding.make_mesh(mesh_sizes)))
  config.model.quantization = "none"
  full = flat(abstract_experiment(config, sharding.make_mesh(mesh_sizes)))
  kernels = [path for path, x in quantised.items() if is_kernel(x)]
  nbytes = lambda x: sum(math.prod(leaf.shape) * leaf.dtype.itemsize for leaf in jax.tree.leaves(x))
  # 4-bit codes and a float16 scale per block (64 weights, or fewer on a narrower axis) against float32.
  assert kernels and max(quantised[path].block for path in kernels) == 32  # tiny T5: 32 wide
  for path in kernels:
    assert nbytes(quantised[path]) == nbytes(full[path]) * (4 + 16 / quantised[path].block) / 32, path
  wi_0 = "encoder/layers_0/mlp/wi_0/kernel"  # the layers unrolled: "auto" at this size
  assert quantised[wi_0].values.sharding.spec == full[wi_0].sharding.spec


def test_trained_backbone_weights_cannot_be_quantised():
  config = tiny_config(**{"model.quantization": "int8", "model.trainable": "all"})
  with pytest.raises(ValueError, match="config.model.trainable='all': weights that train cannot be quantised"):
    experiment.build(config)
