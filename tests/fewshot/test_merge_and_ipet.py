"""PET's merge and soft labels, and iPET's set sizes, quotas and sampling, against hand computations
and PET's own code's behaviour (pet/modeling.py)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from jaxprompt.fewshot import ipet, merge
from jaxprompt.objectives.head import distillation_kl


def test_mean_and_weighted_mean_average_raw_scores():
  a, b = np.array([[1.0, 3.0], [0.0, -2.0]]), np.array([[3.0, 1.0], [4.0, 2.0]])
  np.testing.assert_allclose(merge.merge_scores([a, b], [0.9, 0.1], "mean"), [[2.0, 2.0], [2.0, 0.0]])
  np.testing.assert_allclose(merge.merge_scores([a, b], [0.75, 0.25], "wmean"), [[1.5, 2.5], [1.0, -1.0]])


def test_weighted_mean_falls_back_to_uniform_when_every_weight_is_zero():
  a, b = np.array([[1.0, 3.0]]), np.array([[3.0, 5.0]])
  np.testing.assert_allclose(merge.merge_scores([a, b], [0.0, 0.0], "wmean"), [[2.0, 4.0]])


def test_merge_errors_name_what_differs():
  with pytest.raises(ValueError, match="differ in shape"):
    merge.merge_scores([np.zeros((2, 3)), np.zeros((3, 3))], [1, 1], "mean")
  with pytest.raises(ValueError, match="'max' is not one of"):
    merge.merge_scores([np.zeros((2, 3))], [1], "max")


def test_distillation_loss_is_kl_at_temperature_times_its_square():
  student, teacher = np.array([[1.0, 2.0, 0.5], [0.0, 0.0, 3.0]]), np.array([[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
  t = 2.0
  p = np.exp(teacher / t) / np.exp(teacher / t).sum(-1, keepdims=True)
  q = np.exp(student / t) / np.exp(student / t).sum(-1, keepdims=True)
  by_hand = (p * np.log(p / q)).sum(-1) * t**2
  total, count = distillation_kl(jnp.asarray(student), jnp.asarray(teacher), jnp.array([True, True]), t)
  np.testing.assert_allclose(float(total), by_hand.sum(), rtol=1e-6)
  assert float(count) == 2
  # Padding rows (NaN teachers) count for nothing.
  padded = np.concatenate([teacher, np.full((1, 3), np.nan)])
  total, count = distillation_kl(jnp.asarray(np.concatenate([student, student[:1]])), jnp.asarray(padded),
                                 jnp.array([True, True, False]), t)
  np.testing.assert_allclose(float(total), by_hand.sum(), rtol=1e-6)
  assert float(count) == 2


@pytest.mark.parametrize("labeled, sizes", [(10, [10, 50, 250, 1250]), (50, [50, 250, 1250]), (0, [0, 10, 50, 250])])
def test_the_training_set_grows_five_fold_a_generation(labeled, sizes):
  assert [ipet.total_examples(labeled, g, 5.0) for g in range(len(sizes))][1:] == sizes[1:]


def test_quotas_follow_the_labelled_sets_label_counts_or_split_equally():
  assert ipet.label_quotas([0, 0, 0, 1], 2, 16) == [12, 4]
  assert ipet.label_quotas([0, 1, 2], 3, 10) == [3, 3, 3]  # PET truncates each label's share
  assert ipet.label_quotas([], 3, 10) == [4, 3, 3]  # PET's eq_div


def test_labellers_are_a_quarter_of_the_others_and_never_the_member_itself():
  rng = np.random.default_rng(0)
  others = [f"p{p}-r{r}" for p in range(4) for r in range(3)][1:]  # 11 others of p0-r0
  picked = ipet.pick_labellers(others, 0.25, rng)
  assert len(picked) == 3 and len(set(picked)) == 3 and "p0-r0" not in picked
  assert len(ipet.pick_labellers(others[:1], 0.25, rng)) == 1  # PET would pick round(0.25) = 0
  with pytest.raises(ValueError, match="other members: there are none"):
    ipet.pick_labellers([], 0.25, rng)


def test_sampling_keeps_quotas_draws_by_confidence_without_replacement():
  probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.55, 0.45], [0.3, 0.7]])
  picked, labels = ipet.sample_examples(probs, [3, 2], np.random.default_rng(1))
  assert sorted(picked[labels == 0].tolist()) == [0, 1, 3]  # every example predicted 0, once each
  assert sorted(picked[labels == 1].tolist()) == [2, 4]
  # Drawn by confidence: over many draws of 1 of label 0's pool, the 0.9 example wins most.
  wins = np.bincount([ipet.sample_examples(probs, [1, 0], np.random.default_rng(s))[0][0] for s in range(2000)],
                     minlength=5)
  np.testing.assert_allclose(wins[[0, 1, 3]] / 2000, np.array([0.9, 0.6, 0.55]) / 2.05, atol=0.03)


def test_a_pool_smaller_than_its_quota_is_repeated_as_pet_does():
  probs = np.array([[0.9, 0.1], [0.2, 0.8]])
  picked, labels = ipet.sample_examples(probs, [3, 0], np.random.default_rng(0))
  assert picked.tolist() == [0, 0, 0] and labels.tolist() == [0, 0, 0]


def test_zero_shot_pools_are_each_labels_most_likely_examples():
  probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.55, 0.45]])
  picked, labels = ipet.sample_examples(probs, [2, 2], np.random.default_rng(0), n_most_likely=2)
  assert sorted(picked[labels == 0].tolist()) == [0, 1]
  assert sorted(picked[labels == 1].tolist()) == [2, 3]  # 3 is predicted 0 but is label 1's second most likely


def test_a_label_nobody_predicts_takes_the_examples_most_likely_for_it():
  probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.7, 0.3]])  # PET would loop forever for label 1
  picked, labels = ipet.sample_examples(probs, [1, 2], np.random.default_rng(0))
  assert sorted(picked[labels == 1].tolist()) == [1, 2]
