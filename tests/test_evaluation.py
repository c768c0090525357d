"""Evaluation batches its examples shortest first into the buckets, and the metrics are those of
padding every batch to the longest input."""

from __future__ import annotations

import dataclasses

import jax

from jaxprompt import evaluation, experiment
from tests.run_configs import tiny_config


def test_bucketed_shortest_first_evaluation_equals_padding_to_the_longest():
  config = tiny_config(eval_batch_size=8)
  config.data.max_eval_examples = 40
  config.data.bucket_lengths = (24, 32, 48, 64)
  exp = experiment.build(config)
  features = experiment.eval_features(exp)
  params = exp.init_params(jax.random.key(0))
  eval_step = exp.eval_step()
  lengths = []

  def recording_step(prompt, frozen, batch, *labels):
    lengths.append(batch["inputs"].shape[1])
    return eval_step(prompt, frozen, batch, *labels)

  bucketed = evaluation.evaluate(recording_step, params, exp.frozen, features, exp)
  assert lengths == sorted(lengths) and len(set(lengths)) > 1, lengths

  unbucketed_config = config.copy_and_resolve_references()
  unbucketed_config.data.bucket_lengths = ()
  padded = evaluation.evaluate(eval_step, params, exp.frozen, features, dataclasses.replace(exp, config=unbucketed_config))
  assert bucketed.keys() == padded.keys() and bucketed["eval/examples"] == 40
  for key, value in padded.items():
    assert abs(bucketed[key] - value) <= 1e-5 * abs(value), key
