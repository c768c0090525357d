"""Task metrics on class predictions: accuracy, macro-F1 (CB), F1a and exact match (MultiRC)."""

from __future__ import annotations


import numpy as np


def task_metrics(metric: str, predictions: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> dict[str, float]:
  """The metrics of `metric` over the examples with a label (label -1 is ignored).

  "accuracy": accuracy. "f1_macro": accuracy and the mean F1 of the classes that occur in the
  labels or predictions. "multirc": accuracy, F1 of class 1 over all answer options ("f1a") and
  the fraction of questions (groups) with every answer right ("em").
  """
  predictions, labels, groups = (np.asarray(a).reshape(-1) for a in (predictions, labels, groups))
  if not len(predictions) == len(labels) == len(groups):
    raise ValueError(f"Lengths differ: {len(predictions)} predictions, {len(labels)} labels, {len(groups)} groups")
  keep = labels != -1
  predictions, labels, groups = predictions[keep], labels[keep], groups[keep]
  if not len(labels):
    raise ValueError("No labelled examples: every label is -1")
  correct = predictions == labels
  result = {"accuracy": float(correct.mean())}
  if metric == "accuracy":
    pass
  elif metric == "f1_macro":
    classes = np.union1d(labels, predictions)
    result["f1_macro"] = float(np.mean([_f1(predictions == c, labels == c) for c in classes]))
  elif metric == "multirc":
    result["f1a"] = _f1(predictions == 1, labels == 1)
    _, group_ids = np.unique(groups, return_inverse=True)
    all_right = np.ones(group_ids.max() + 1, bool)
    np.logical_and.at(all_right, group_ids, correct)
    result["em"] = float(all_right.mean())
  else:
    raise ValueError(f"Unknown metric {metric!r}; expected 'accuracy', 'f1_macro' or 'multirc'")
  return result


def _f1(predicted: np.ndarray, actual: np.ndarray) -> float:
  """Binary F1 = 2TP / (2TP + FP + FN); 0 when there are neither positives nor positive predictions."""
  true_pos = np.sum(predicted & actual)
  denominator = 2 * true_pos + np.sum(predicted & ~actual) + np.sum(~predicted & actual)
  return float(2 * true_pos / denominator) if denominator else 0.0


def exact_match(decoded: np.ndarray, targets: np.ndarray, target_lengths: np.ndarray) -> float:
  """The fraction of examples whose decoded tokens start with their target's tokens.

  Examples with an empty target are left out. A target that ends with EOS (T5's) thus also
  requires the decoding to stop there.
  """
  if not len(decoded) == len(targets) == len(target_lengths):
    raise ValueError(f"{len(decoded)} decodings, {len(targets)} targets, {len(target_lengths)} lengths")
  scored = [(d, t, int(n)) for d, t, n in zip(decoded, targets, target_lengths) if n > 0]
  if not scored:
    raise ValueError("No non-empty targets to compare")
  return float(np.mean([np.array_equal(d[:n], t[:n]) for d, t, n in scored]))
