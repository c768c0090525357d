"""iPET's next-generation training sets (pet/modeling.py's generate_ipet_train_set[s]).

For generation g >= 1 every member (pattern, repetition) trains on the labelled set plus examples
its peers labelled: a random fraction (PET: 25%) of the previous generation's OTHER members merge
their unlabeled scores, softmax, and each example takes the argmax as a hard label. Per label, a
quota proportional to the labelled set's label counts (uniform with none) is drawn without
replacement with probability proportional to the example's top class probability, the pool
repeated when it is smaller than the quota. The training set grows x scale_factor (PET: 5) a
generation: |T| * d^g examples in all at generation g. Zero-shot iPET (no labelled examples)
starts from 10 / d examples, so 10 at g = 1, and in its first step takes each label's
`n_most_likely` unlabeled examples by that label's probability, whatever their argmax.

Where PET draws from one random stream shared by every member, each member here draws from its own
generator (a key per pattern, repetition and generation), so a member's set does not depend on
which other members were built first. PET picks round(25% of the others) labellers, which is 0
when a generation has fewer than 3 members; at least one labels here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from jaxprompt.fewshot.merge import merge_scores, softmax

log = logging.getLogger(__name__)
ZERO_SHOT_START = 10  # PET's original_data_size without labelled data is 10 / scale_factor


def total_examples(num_labeled: int, generation: int, scale_factor: float) -> int:
  """How many examples (labelled and new) generation `generation` trains on."""
  start = num_labeled if num_labeled else ZERO_SHOT_START / scale_factor
  return int(start * scale_factor**generation)


def label_quotas(train_labels: Sequence[int], num_labels: int, num_new: int) -> list[int]:
  """New examples per label: proportional to the labelled set's counts (PET truncates each), or an
  equal split (the remainder to the first labels) when there are no labelled examples."""
  if len(train_labels):
    counts = np.bincount(np.asarray(train_labels), minlength=num_labels)
    multiplier = num_new / len(train_labels)
    return [int(c * multiplier) for c in counts]
  return [num_new // num_labels + (i < num_new % num_labels) for i in range(num_labels)]


def pick_labellers(others: Sequence[str], fraction: float, rng: np.random.Generator) -> list[str]:
  """round(fraction * len(others)) of the other members, at least one, drawn without replacement."""
  if not others:
    raise ValueError("iPET labels a member's new examples with the previous generation's other members: there are none"
                     " (use at least two patterns or repetitions)")
  count = min(len(others), max(1, round(fraction * len(others))))
  return sorted(rng.choice(list(others), size=count, replace=False).tolist())


def sample_examples(
    probs_NxC: np.ndarray, quotas: Sequence[int], rng: np.random.Generator, n_most_likely: int = 0
) -> tuple[np.ndarray, np.ndarray]:
  """(unlabeled indices, their hard labels): each label's quota drawn from its pool, with probability
  proportional to the confidence (the label's probability), without replacement (an index repeats
  only where the pool was repeated to reach the quota). With n_most_likely, a label's pool is the n
  examples it is most likely for; a label no example is predicted as takes its quota most likely."""
  chosen, labels = [], []
  predicted_N = probs_NxC.argmax(axis=-1)
  most_likely = lambda label, n: np.argsort(-probs_NxC[:, label], kind="stable")[:n]
  for label, quota in enumerate(quotas):
    if quota == 0:
      continue
    pool = most_likely(label, n_most_likely) if n_most_likely > 0 else np.flatnonzero(predicted_N == label)
    if not len(pool):
      # PET loops forever here; its examples most likely for the label fill the quota instead.
      log.warning("iPET: no unlabeled example is predicted as label %d; its %d most likely ones are taken", label, quota)
      pool = most_likely(label, quota)
    confidence = probs_NxC[pool, label]  # the top class probability, but for pools not chosen by argmax
    repeats = -(-quota // len(pool))  # PET extends the pool with itself until it holds the quota
    pool, confidence = np.tile(pool, repeats), np.tile(confidence, repeats)
    picked = rng.choice(len(pool), size=quota, replace=False, p=confidence / confidence.sum())
    chosen.append(pool[picked])
    labels.append(np.full(quota, label))
  if not chosen:
    return np.zeros(0, int), np.zeros(0, int)
  return np.concatenate(chosen), np.concatenate(labels)


def labelled_by_peers(
    peer_scores: Sequence[np.ndarray], peer_weights: Sequence[float], reduction: str
) -> np.ndarray:
  """[N, C] class probabilities of the unlabeled set: the labellers' merged scores, softmaxed."""
  return softmax(merge_scores(peer_scores, peer_weights, reduction))
