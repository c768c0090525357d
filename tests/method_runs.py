"""The method configs (configs/prefix_tuning.py, p_tuning.py, p_tuning_v2.py, multi_task.py) shrunk
for tests: tiny random T5 and Llama backbones with their real vocabularies, the real MiniLM encoder,
the real SST-2 / SuperGLUE files, a batch of 8 on the 2x4 fake-device mesh; and a short training
check of one (`train_and_check`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import jax
import ml_collections
import numpy as np

from configs import cloze, multi_task, p_tuning, p_tuning_v2, prefix_tuning
from jaxprompt import experiment, sharding
from jaxprompt.tasks import pipeline
from tests.assets import minilm_dir, smollm2_gguf
from tests.conftest import SHARED_DATA
from tests.run_configs import apply_overrides, localized, small_sst2_files

# Enough for SST-2 sentences with P-tuning's anchors, which must not be cut.
_SMALL = {"batch_size": 8, "eval_batch_size": 8, "data.max_input_len": 128, "data.bucket_lengths": (32, 64, 128),
          "data.max_eval_examples": 16, "mesh.data": 2, "mesh.fsdp": 4, "num_steps": 4, "eval_every": 4,
          "checkpoint_every": 2, "log_every": 1}


def _t5(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  config.model.tokenizer = str(SHARED_DATA / "t5_vocab" / "spiece.model")
  # The scanned layers' random init, which these cases' loss thresholds were set on (a random
  # backbone's weights depend on the layout; "auto" would unroll at this size).
  config.model.scan_layers = True
  return config


def _tiny_llama(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A random 2-layer Llama with SmolLM2's real tokenizer."""
  config.model.checkpoint, config.model.size = "", "tiny"
  config.model.tokenizer = str(smollm2_gguf())
  return config


def _minilm(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  config.model.checkpoint = str(minilm_dir())
  return config


def tiny_albert(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A random 2-layer ALBERT (factorised embeddings, one shared layer) with MiniLM's vocabulary."""
  config.model.family, config.model.checkpoint, config.model.size = "albert", "", "tiny"
  config.model.tokenizer = str(minilm_dir())
  return config


def tiny_mlm(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A random 2-layer BERT with an MLM head (or ALBERT, for its family) and MiniLM's vocabulary."""
  config.model.checkpoint, config.model.size = "", "tiny"
  config.model.tokenizer = str(minilm_dir())
  return config


def small(config: ml_collections.ConfigDict, **overrides) -> ml_collections.ConfigDict:
  return apply_overrides(localized(config), **{**_SMALL, **overrides})


def write_conll(folder: Path) -> tuple[str, str]:
  """(train, eval) CoNLL files: sentences whose names, organisations and places recur, so that the
  tags are learnable from the words alone."""
  people, orgs, places = ["John", "Mary", "Peter Smith", "Anna"], ["Reuters", "the EU", "Siemens"], ["Paris", "Berlin", "New York"]
  lines = ["-DOCSTART- O", ""]
  for i in range(48):
    person, org, place = people[i % 4], orgs[i % 3], places[(i // 3) % 3]
    words = person.split() + ["told"] + org.split() + ["in"] + place.split() + ["."]
    tags = (["B-PER"] + ["I-PER"] * (len(person.split()) - 1) + ["O"]
            + (["O"] if org.startswith("the ") else []) + ["B-ORG"] + ["O"]
            + ["B-LOC"] + ["I-LOC"] * (len(place.split()) - 1) + ["O"])
    lines += [f"{w} {t}" for w, t in zip(words, tags, strict=True)] + [""]
  train, evaluation = folder / "train.txt", folder / "eval.txt"
  train.write_text("\n".join(lines))
  evaluation.write_text("\n".join(lines[:2] + lines[2 : 2 + 8 * 9]))
  return str(train), str(evaluation)


def conll_config(folder: Path, **overrides) -> ml_collections.ConfigDict:
  train, evaluation = write_conll(folder)
  config = _minilm(p_tuning_v2.get_config("task=conll2003"))
  config.data.train.files, config.data.eval.files = (train,), (evaluation,)
  return small(config, **{"prompt.length": 4, "optimizer.learning_rate": 3e-2, **overrides})


CASES: dict[str, Callable[..., ml_collections.ConfigDict]] = {
    # Every attention kind of T5, with the MLP reparameterisation.
    "prefix_tuning-t5": lambda **o: small(_t5(small_sst2_files(prefix_tuning.get_config("size=tiny,data=local"))), **o),
    "prefix_tuning-llama": lambda **o: small(_tiny_llama(small_sst2_files(prefix_tuning.get_config("model=smollm,data=local"))),
                                              **{"prompt.length": 4, "prompt.reparam_hidden": 16,
                                                 "optimizer.learning_rate": 1e-2, **o}),
    "p_tuning-t5": lambda **o: small(_t5(small_sst2_files(p_tuning.get_config("model=t5,size=tiny,data=local"))),
                                      **{"optimizer.learning_rate": 3e-2, **o}),
    "p_tuning-llama": lambda **o: small(_tiny_llama(small_sst2_files(p_tuning.get_config("data=local"))),
                                         **{"optimizer.learning_rate": 3e-2, **o}),
    "p_tuning_v2-bert": lambda **o: small(_minilm(small_sst2_files(p_tuning_v2.get_config("task=sst2,data=local"))),
                                           **{"prompt.length": 4, "optimizer.learning_rate": 3e-2, **o}),
    "p_tuning_v2-llama": lambda **o: small(_tiny_llama(small_sst2_files(p_tuning.get_config("data=local"))), **{
        "prompt.method": "p_tuning_v2", "prompt.length": 4, "task.template": "Review: {sentence} Sentiment:",
        "loss_over": "vocabulary", "optimizer.learning_rate": 3e-2, **o}),
    "multi_task-t5": lambda **o: small(_t5(multi_task.get_config("size=tiny,tasks=cb+rte,data=local")),
                                        **{"data.max_input_len": 256, "data.bucket_lengths": (64, 128, 256), **o}),
}

# Cloze patterns on a random MLM: LM-BFF's SST-2 template (one mask), PET's COPA (multiple masks).
# A soft prompt barely moves a random MLM's mask logits, so these are not in the loss-falls test.
CLOZE_CASES: dict[str, Callable[..., ml_collections.ConfigDict]] = {
    "prompt_tuning-bert-cloze": lambda **o: small(
        tiny_mlm(small_sst2_files(cloze.get_config("recipe=lm_bff,task=sst2,train=prompt,data=local"))), **{"prompt.length": 4, **o}),
    "prompt_tuning-albert-copa": lambda **o: small(
        tiny_mlm(cloze.get_config("recipe=pet,task=copa,train=prompt,data=local")), **{"prompt.length": 4, **o}),
}


def host(tree):
  return jax.tree.map(lambda x: np.array(x, copy=True), tree)


def train_and_check(config: ml_collections.ConfigDict, steps: int) -> tuple[float, float]:
  """Trains `steps` steps of 8 over the task's first 32 examples; checks the frozen backbone is
  untouched and every prompt param moved; returns the loss on those 32 examples before and after."""
  config.num_steps = steps  # the schedule's horizon (linear decay reaches 0 there)
  exp = experiment.build(config)
  examples = experiment.train_features(exp)[:32]
  args = (config.data.max_input_len, config.data.max_target_len, tuple(config.data.bucket_lengths), 0, 1,
          exp.backbone.codec.pad_inputs_left)
  iterator = pipeline.train_iterator(examples, config.batch_size, config.seed, *args)
  fixed_batches = [pipeline.to_global(b, exp.batch_sharding) for b in pipeline.eval_batches(examples, 8, *args)]
  loss_sum = jax.jit(exp.backbone.loss_sum(exp.method, exp.objective_labels))
  step = exp.train_step()

  with sharding.activate(exp.mesh, exp.rules):
    def loss(params):
      sums = [loss_sum(params, exp.frozen, b, jax.random.key(0)) for b in fixed_batches]
      return float(sum(s for s, _ in sums) / sum(n for _, n in sums))

    state = exp.init_state(exp.init_params(jax.random.key(config.seed)))
    frozen_before, params_before, loss_before = host(exp.frozen), host(state.params), loss(state.params)
    for _ in range(steps):
      state, _ = step(state, exp.frozen, pipeline.to_global(next(iterator), exp.batch_sharding), jax.random.key(1))
    loss_after = loss(state.params)

  jax.tree.map(np.testing.assert_array_equal, frozen_before, host(exp.frozen))
  moved = jax.tree.map(lambda a, b: not np.array_equal(a, b), params_before, host(state.params))
  assert all(jax.tree.leaves(moved)), f"prompt params that did not move: {moved}"
  return loss_before, loss_after
