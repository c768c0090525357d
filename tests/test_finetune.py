"""Prompt-based fine-tuning (config.model.trainable): exactly the chosen backbone weights train, as
float32 masters sharded like the weights (their moments too), the loss falls, checkpoints hold only
them and resume bitwise, another trainable set is refused naming both, and the best backbone is
exported as a Hugging Face directory that transformers loads and that reproduces our logits."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
import transformers
from flax import traverse_util

from jaxprompt import experiment, sharding, training
from jaxprompt.checkpoint import CheckpointMismatchError
from jaxprompt.evaluation import load_prompt_params
from jaxprompt.models.bert import Bert
from jaxprompt.plan import plan
from jaxprompt.tasks import pipeline
from jaxprompt.training import train_and_evaluate
from tests.method_runs import CLOZE_CASES
from tests.run_configs import apply_overrides, localized, workdir_files

STEPS = 16


def _config(trainable: str, **overrides):
  """LM-BFF's SST-2 template on a random BERT MLM, no prompt: the backbone weights alone train."""
  return CLOZE_CASES["prompt_tuning-bert-cloze"](**{
      "prompt.method": "none", "model.trainable": trainable, "optimizer.learning_rate": 1e-3,
      "optimizer.decay_biases_and_norms": False, "optimizer.weight_decay": 0.01, **overrides})


def _host(tree):
  return jax.tree.map(lambda x: np.array(x, copy=True), tree)


def _flat(tree):
  return traverse_util.flatten_dict(tree["params"], sep="/")


def _train(config):
  """STEPS steps over the first 32 examples; (experiment, pretrained weights, state, loss before, after)."""
  config.num_steps = STEPS
  exp = experiment.build(config)
  examples = experiment.train_features(exp)[:32]
  args = (config.data.max_input_len, config.data.max_target_len, tuple(config.data.bucket_lengths))
  iterator = pipeline.train_iterator(examples, config.batch_size, config.seed, *args)
  fixed = [pipeline.to_global(b, exp.batch_sharding) for b in pipeline.eval_batches(examples, 8, *args)]
  loss_sum = jax.jit(exp.backbone.loss_sum(exp.method, exp.objective_labels))
  pretrained = _host(_flat(exp.merged(exp.pretrained)))
  step = exp.train_step()
  with sharding.activate(exp.mesh, exp.rules):
    def loss(state):
      sums = [loss_sum(state.params, exp.merged(state.backbone), b, jax.random.key(0)) for b in fixed]
      return float(sum(s for s, _ in sums) / sum(n for _, n in sums))

    state = exp.init_state(exp.init_params(jax.random.key(0)))
    before = loss(state)
    for _ in range(STEPS):
      state, _ = step(state, exp.frozen, pipeline.to_global(next(iterator), exp.batch_sharding), jax.random.key(1))
    after = loss(state)
  return exp, pretrained, state, before, after


# Biases alone move a random model's mask logits little: their loss need only fall.
@pytest.mark.parametrize("trainable,learning_rate,falls_to", [("all", 1e-3, 0.9), ("bias$", 3e-2, 0.998)])
def test_fine_tuning_changes_exactly_the_chosen_weights_and_the_loss_falls(trainable, learning_rate, falls_to):
  exp, pretrained, state, before, after = _train(_config(trainable, **{"optimizer.learning_rate": learning_rate}))
  chosen = set(exp.trainable_paths)
  assert chosen == ({p for p in pretrained if p.endswith("bias")} if trainable == "bias$" else set(pretrained))
  assert set(state.backbone) == chosen and all(x.dtype == np.float32 for x in state.backbone.values())
  merged = _host(_flat(exp.merged(state.backbone)))
  for path, weight in pretrained.items():
    if path in chosen and not path.startswith("pooler/"):  # the cloze loss never reads the pooler
      assert not np.array_equal(merged[path], weight), f"{path} did not train"
    elif path in chosen:
      assert path.startswith("pooler/")
    else:
      np.testing.assert_array_equal(merged[path], weight, err_msg=f"{path} changed but does not train")
  assert after < falls_to * before, (before, after)


def test_the_trained_weights_and_their_moments_keep_the_weights_sharding():
  config = _config("all", **{"mesh.data": 1, "mesh.fsdp": 8})
  exp = experiment.build(config)
  kernel = "encoder/layers_0/mlp/wi/kernel"  # the layers unrolled: "auto" at this size
  weight_sharding, ndim = exp.pretrained[kernel].sharding, exp.pretrained[kernel].ndim
  assert not weight_sharding.is_fully_replicated  # fsdp splits it
  state = exp.init_state(exp.init_params(jax.random.key(0)))
  assert state.backbone[kernel].sharding.is_equivalent_to(weight_sharding, ndim)
  moments = [leaf for leaf in jax.tree.leaves(state.opt_state) if getattr(leaf, "shape", None) == state.backbone[kernel].shape]
  same_shape = [w for w in state.backbone.values() if w.shape == state.backbone[kernel].shape]  # each layer's
  assert len(moments) == 2 * len(same_shape) and all(m.sharding.is_equivalent_to(weight_sharding, ndim) for m in moments)
  # The planner counts them the same way: float32 masters and both moments, split 8 ways.
  report = plan(config, {"data": 1, "fsdp": 8, "tensor": 1})
  total = sum(int(np.prod(s.shape)) * 4 for s in exp.trained_shapes.values())
  assert report["trained_backbone_weights"] == len(exp.trained_shapes)
  assert total / 8 / 2**30 - 0.002 <= report["trained_masters_gib_per_device"] <= total / 2 / 2**30
  assert report["optimizer_state_gib_per_device"] == pytest.approx(2 * report["trained_masters_gib_per_device"], abs=2e-3)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """The same 4 steps of bias-only fine-tuning straight, and preempted after step 2 then resumed."""
  config = _config("bias$", **{"num_steps": 4, "eval_every": 4, "checkpoint_every": 2})
  straight, resumed = tmp_path_factory.mktemp("straight"), tmp_path_factory.mktemp("resumed")
  metrics = train_and_evaluate(config, str(straight))["eval"]
  original = training.PreemptionWatcher.requested
  training.PreemptionWatcher.requested = lambda self, step: step == 2
  try:
    assert train_and_evaluate(config, str(resumed))["step"] == 2
  finally:
    training.PreemptionWatcher.requested = original
  assert train_and_evaluate(config, str(resumed))["step"] == 4
  return config, straight, resumed, metrics


def test_kill_and_resume_equals_the_uninterrupted_run_bitwise(runs):
  config, straight, resumed, _ = runs
  exp = experiment.build(config)
  _, _, a, _ = load_prompt_params(exp, str(straight / "checkpoints" / "4"))
  _, _, b, _ = load_prompt_params(exp, str(resumed / "checkpoints" / "4"))
  assert set(a) == set(exp.trainable_paths) and a
  jax.tree.map(np.testing.assert_array_equal, _host(a), _host(b))


def test_checkpoints_hold_the_trained_weights_only(runs):
  _, straight, _, _ = runs
  files = workdir_files(straight / "checkpoints" / "4")
  size = sum(p.stat().st_size for p in files)
  # Biases of a 2-layer, 32-wide BERT with their two moments: kilobytes; its 30,522 x 32 embedding
  # table alone would be 3.9 MB.
  assert size < 400_000, [(p.name, p.stat().st_size) for p in files]


def test_restoring_into_another_trainable_set_fails_naming_both(runs):
  config, straight, _, _ = runs
  other = _config("mlm_head/", **{"num_steps": 4})
  with pytest.raises(CheckpointMismatchError, match=r"trainable backbone weights: checkpoint \d+ weights: .*bias.*"
                                                    r"this run \d+ weights: mlm_head/"):
    train_and_evaluate(other, str(straight))
  del config


def test_the_best_backbone_is_a_hugging_face_directory_transformers_reproduces(runs):
  config, straight, _, metrics = runs
  directory = straight / "backbone_best"
  assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in directory.iterdir()}
  hf = transformers.BertForMaskedLM.from_pretrained(str(directory)).eval()
  exp = experiment.build(config)
  _, _, trained, _ = load_prompt_params(exp, str(straight / "checkpoints" / "4"))
  ids = np.asarray(experiment.train_features(exp)[0].inputs)[None]
  model = Bert(exp.backbone.config.replace(dtype="float32"))
  hidden = model.apply(exp.merged(trained), ids, ids > -1).hidden_BxTxD
  ours = np.asarray(model.apply(exp.merged(trained), hidden, method=Bert.mlm_logits))
  with torch.no_grad():
    theirs = hf(input_ids=torch.tensor(ids, dtype=torch.long)).logits.numpy()
  np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=1e-4)
  assert "eval/accuracy" in metrics


def test_a_run_with_nothing_to_train_says_so():
  exp = experiment.build(_config("none"))
  with pytest.raises(ValueError, match="nothing to train"):
    exp.train_step()
  with pytest.raises(ValueError, match=r"trainable='nothing_matches\$' matches none of the backbone's weights: "):
    experiment.build(_config("nothing_matches$"))


def _train_losses(workdir) -> list[float]:
  import json  # noqa: PLC0415

  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  return [row["train/loss"] for row in rows if "train/loss" in row]


def test_pets_auxiliary_mlm_loss_reads_unlabeled_batches_and_resumes_bitwise(tmp_path, monkeypatch):
  def config(alpha: float):
    c = _config("bias$", **{"num_steps": 4, "eval_every": 4, "checkpoint_every": 2, "cloze.mlm_alpha": alpha,
                            "data.unlabeled_batch_size": 16})
    c.data.unlabeled = c.data.train.copy_and_resolve_references()  # SST-2's rows; their labels go unread
    c.data.unlabeled.files = c.data.eval.files
    return c

  plain, mixed, resumed = tmp_path / "plain", tmp_path / "mixed", tmp_path / "resumed"
  train_and_evaluate(config(0.0), str(plain))
  train_and_evaluate(config(0.5), str(mixed))
  # The MLM term changes the loss (a random MLM's token loss is ~ln(30522) = 10.3, far above the task's 0.7).
  assert all(m > p + 2.0 for m, p in zip(_train_losses(mixed), _train_losses(plain), strict=True))
  with monkeypatch.context() as patch:
    patch.setattr(training.PreemptionWatcher, "requested", lambda self, step: step == 2)
    assert train_and_evaluate(config(0.5), str(resumed))["step"] == 2
  assert train_and_evaluate(config(0.5), str(resumed))["step"] == 4
  exp = experiment.build(config(0.5))
  _, _, a, _ = load_prompt_params(exp, str(mixed / "checkpoints" / "4"))
  _, _, b, _ = load_prompt_params(exp, str(resumed / "checkpoints" / "4"))
  jax.tree.map(np.testing.assert_array_equal, _host(a), _host(b))
  assert _train_losses(resumed)[-2:] == _train_losses(mixed)[-2:]


def test_the_auxiliary_mlm_loss_needs_weights_that_train():
  config = _config("none", **{"prompt.method": "prompt_tuning", "cloze.mlm_alpha": 1e-4})
  with pytest.raises(ValueError, match="mlm_alpha trains the MLM on unlabeled text: it needs backbone weights"):
    experiment.build(config).objective_labels


def test_a_regression_fine_tunes_on_scores_and_reports_correlations(tmp_path):
  """LM-BFF's STS-B preset: two pole words interpolated, KL to the scaled score, Pearson and Spearman."""
  rng = np.random.default_rng(0)
  words = ["a man plays", "the cat sleeps", "kids run fast", "rain falls", "a woman sings", "dogs bark loudly"]
  rows = ["sentence1\tsentence2\tscore"] + [
      f"{words[i % 6]} .\t{words[(i * 5) % 6]} today .\t{rng.uniform(0, 5):.2f}" for i in range(48)]
  (tmp_path / "stsb.tsv").write_text("\n".join(rows) + "\n")
  from configs import cloze  # noqa: PLC0415

  config = cloze.get_config("recipe=lm_bff,task=stsb")
  config.data.train.kind = config.data.eval.kind = "tsv"
  config.data.train.files = config.data.eval.files = (str(tmp_path / "stsb.tsv"),)
  config.data.train.tfds_name = config.data.eval.tfds_name = config.data.train.split = config.data.eval.split = ""
  config.task.label_field = "score"  # GLUE's tsv column (TFDS calls it label)
  small = CLOZE_CASES["prompt_tuning-bert-cloze"]()
  config.model, config.mesh = small.model, small.mesh
  config.model.trainable = "all"
  for key in ("batch_size", "eval_batch_size", "data.max_input_len", "data.bucket_lengths"):
    section, _, leaf = key.rpartition(".")
    (config[section] if section else config)[leaf] = (small[section] if section else small)[leaf]
  config.num_steps, config.eval_every, config.checkpoint_every, config.log_every = 4, 4, 4, 1
  config.best_metric, config.optimizer.learning_rate = "eval/pearson", 1e-3
  result = train_and_evaluate(config, str(tmp_path / "run"))["eval"]
  assert {"eval/pearson", "eval/spearman", "eval/loss"} <= set(result) and result["eval/examples"] == 48
  assert -1.0 <= result["eval/pearson"] <= 1.0 and np.isfinite(result["eval/loss"])


def test_a_prompt_method_trains_alongside_the_chosen_weights():
  """P-tuning v1 tuned both: here a soft prompt and the biases, in one state and one optimizer."""
  config = _config("bias$", **{"prompt.method": "prompt_tuning", "optimizer.learning_rate": 1e-2})
  config.num_steps = 2
  exp = experiment.build(config)
  params = exp.init_params(jax.random.key(0))
  before = _host(params)
  state = exp.init_state(params)
  feats = experiment.train_features(exp)[:8]
  batch = next(pipeline.eval_batches(feats, 8, config.data.max_input_len, config.data.max_target_len,
                                     tuple(config.data.bucket_lengths)))
  pretrained_bias = _host(state.backbone["mlm_head/bias"])
  with sharding.activate(exp.mesh, exp.rules):
    state, _ = exp.train_step()(state, exp.frozen, pipeline.to_global(batch, exp.batch_sharding), jax.random.key(1))
  assert not np.array_equal(_host(state.params)["embeddings"], before["embeddings"])
  assert not np.array_equal(_host(state.backbone["mlm_head/bias"]), pretrained_bias)


def test_wsc_generates_its_referent_trains_on_positives_and_scores_by_word_match(tmp_path):
  from configs import cloze  # noqa: PLC0415

  config = CLOZE_CASES["prompt_tuning-bert-cloze"]()
  wsc = cloze.get_config("recipe=pet,task=wsc,train=bias,data=local")
  config.task, config.data.train, config.data.eval = wsc.task, wsc.data.train, wsc.data.eval
  config = localized(config)
  config = apply_overrides(config, **{"prompt.method": "none", "model.trainable": "bias$", "num_steps": 2,
                                      "eval_every": 2, "checkpoint_every": 2, "optimizer.learning_rate": 1e-3})
  exp = experiment.build(config)
  train = experiment.train_features(exp)
  assert train and all(f.label == 1 for f in train)  # PET keeps WSC's positive examples
  result = train_and_evaluate(config, str(tmp_path))
  metrics = result["eval"]
  assert metrics["eval/examples"] == config.data.max_eval_examples and 0.0 <= metrics["eval/accuracy"] <= 1.0
  losses = _train_losses(tmp_path)
  assert all(np.isfinite(losses)) and losses[0] > 1.0  # the referent's tokens over a 30k vocabulary
