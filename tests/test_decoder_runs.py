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


def _copa_config(**changes):
  """PET's COPA pattern 1 on the real SmolLM2: the choices continue '... because' / '..., so'."""
  from configs import cloze  # noqa: PLC0415

  config = cloze.get_config("recipe=pet,task=copa,pattern=1,train=prompt,data=local")
  config.model.family, config.model.checkpoint = "llama", str(smollm2_gguf())
  config.model.tokenizer, config.model.dropout_rate = "", 0.0
  config.data.train.files = (str(SHARED_DATA / "superglue" / "COPA" / "train32.jsonl"),)
  config.data.eval.files = (str(SHARED_DATA / "superglue" / "COPA" / "val.jsonl"),)
  config.data.max_target_len, config.max_decode_len = 16, 1
  return apply_overrides(config, **{"data.max_eval_examples": 8, "batch_size": 8, "eval_batch_size": 8,
                                    "mesh.data": 1, "data.max_input_len": 64, "data.bucket_lengths": (64,),
                                    "prompt.length": 4, **changes})


def test_copa_choices_continuing_the_pattern_are_scored_as_each_alone_and_train_by_pets_hinge():
  from jaxprompt.objectives import multi_mask  # noqa: PLC0415
  from jaxprompt.tasks import pipeline  # noqa: PLC0415

  config = _copa_config()
  exp = experiment.build(config, mesh=sharding.make_mesh({"data": 1}, devices=jax.devices()[:1]))
  feats = experiment.eval_features(exp)[""][:8]
  tokenizer = exp.backbone.tokenizer
  assert all(len(f.candidates) == 2 and f.targets == f.candidates[f.label][: len(f.targets)] for f in feats)
  assert all(tokenizer.decode(f.inputs).rstrip().endswith(("because", ", so")) for f in feats)
  model = Llama(exp.backbone.config)
  forward = jax.jit(lambda p, ids: model.apply(p, ids, ids >= 0, method=Llama.forward_logits))

  # Each choice's log-prob continuing its input, as if alone: right padding, which a causal model's
  # logits at the real tokens do not see, puts every (input + choice) in one forward and one compile.
  rows = [(f.inputs, choice) for f in feats for choice in f.candidates]
  width = max(len(inputs) + len(choice) for inputs, choice in rows)
  ids = np.array([inputs + choice + [0] * (width - len(inputs) - len(choice)) for inputs, choice in rows], np.int32)
  logp = jax.nn.log_softmax(np.asarray(forward(exp.frozen, ids)).astype(np.float64), axis=-1)
  expected = np.array([sum(float(logp[r, len(inputs) - 1 + j, t]) for j, t in enumerate(choice))
                       for r, (inputs, choice) in enumerate(rows)]).reshape(len(feats), -1)
  args = (config.data.max_input_len, config.data.max_target_len, (64,), 0, 1, True)
  batch = next(pipeline.eval_batches(feats, 8, *args))
  scores = np.asarray(jax.jit(exp.backbone.eval_step(None, exp.objective_labels, 1))({}, exp.frozen, batch, None,
                                                                                        None)["label_scores"])
  np.testing.assert_allclose(scores, expected, atol=2e-3, rtol=1e-4)
  total, count = jax.jit(exp.backbone.loss_sum(None, exp.objective_labels))({}, exp.frozen, batch, jax.random.key(0))
  hinge, n = multi_mask.hinge_loss(jnp.asarray(expected, jnp.float32), batch["label"], batch["example_mask"],
                                   np.ones((8, 2), bool))
  assert float(count) == float(n) == 8 and float(total) == pytest.approx(float(hinge), rel=1e-3, abs=1e-3)
