"""Decoder-only runs: prompt tuning (configs/smollm_sst2_prompt.py shrunk), and zero-/k-shot
evaluation of the real SmolLM2-135M checked against plain per-example scoring."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import smollm_sst2_prompt
from jaxprompt import experiment, sharding
from jaxprompt.evaluation import evaluate
from jaxprompt.models.llama import Llama
from jaxprompt.training import train_and_evaluate
from tests.assets import smollm2_gguf
from tests.conftest import SHARED_DATA
from tests.run_configs import apply_overrides


def _config(checkpoint: str, **changes):
  config = smollm_sst2_prompt.get_config("data=local")
  config.model.checkpoint = checkpoint
  config.model.tokenizer = str(smollm2_gguf())
  config.data.train.files = (str(SHARED_DATA / "sst2" / "dev.tsv"),)
  config.data.eval.files = (str(SHARED_DATA / "sst2" / "dev.tsv"),)
  return apply_overrides(config, **changes)


def test_prompt_tuning_a_decoder_trains_and_resumes(tmp_path):
  config = _config("", num_steps=4, eval_every=4, checkpoint_every=2, **{"data.max_eval_examples": 16,
                   "mesh.data": 2, "mesh.fsdp": 4, "model.size": "tiny"})
  result = train_and_evaluate(config, str(tmp_path))
  assert result["step"] == 4 and result["eval"]["eval/examples"] == 16
  assert np.load(tmp_path / "prompts" / "best.npy").shape == (16, 32)
  config.num_steps, config.eval_every = 6, 6
  assert train_and_evaluate(config, str(tmp_path))["step"] == 6  # resumed from step 4


@pytest.fixture(scope="module")
def smollm():
  config = _config(str(smollm2_gguf()), **{"data.max_eval_examples": 16, "prompt.method": "none"})
  return experiment.build(config)


def test_zero_shot_equals_scoring_each_example_alone(smollm):
  """The batched, left-padded, cached evaluation against plain forwards of each example."""
  exp = smollm
  feats = experiment.eval_features(exp)[""]
  with sharding.activate(exp.mesh, exp.rules):
    metrics = evaluate(exp.eval_step(), {}, exp.frozen, {"": feats}, exp)
  label_ids = jnp.array([exp.backbone.codec.encode_label(t)[0] for t in exp.tasks[0].spec.verbalizer])
  # Right padding: a causal model's logits at the real tokens do not see what comes after them.
  width = max(len(f.inputs) for f in feats)
  ids = np.array([f.inputs + [0] * (width - len(f.inputs)) for f in feats], np.int32)
  logits = jax.jit(lambda p, ids: Llama(exp.backbone.config).apply(p, ids, ids >= 0, method=Llama.forward_logits))(exp.frozen, ids)
  last = np.array([len(f.inputs) - 1 for f in feats])
  predictions = np.argmax(np.asarray(logits)[np.arange(len(feats)), last][:, np.asarray(label_ids)], axis=1)
  accuracy = float(np.mean(predictions == np.array([f.label for f in feats])))
  assert metrics["eval/accuracy"] == pytest.approx(accuracy)
  assert metrics["eval/accuracy"] > 0.6  # the frozen model is far from chance on SST-2 (0.75 on 200 rows)


def test_k_shot_prompts_are_built_and_deterministic(smollm):
  exp = smollm
  exp.config.icl.num_shots = 2
  try:
    feats, again = experiment.eval_features(exp)[""], experiment.eval_features(exp)[""]
  finally:
    exp.config.icl.num_shots = 0
  assert [f.inputs for f in feats] == [f.inputs for f in again]
  text = exp.backbone.tokenizer.decode(feats[0].inputs)
  assert text.count("Review:") == 3 and text.count("Sentiment (positive or negative):") == 3
  with sharding.activate(exp.mesh, exp.rules):
    metrics = evaluate(exp.eval_step(), {}, exp.frozen, {"": feats[:8]}, exp)
  assert metrics["eval/examples"] == 8 and 0 <= metrics["eval/accuracy"] <= 1
