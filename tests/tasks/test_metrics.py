"""Task metrics on small hand-computed cases."""

import numpy as np
import pytest

from jaxprompt.tasks.metrics import exact_match, task_metrics


def test_accuracy_ignores_unlabeled():
  metrics = task_metrics("accuracy", np.array([0, 1, 1, 0]), np.array([0, 1, 0, -1]), np.arange(4))
  assert metrics == pytest.approx({"accuracy": 2 / 3})


def test_f1_macro():
  labels = np.array([0, 0, 1, 2, 2, 2, -1])
  predictions = np.array([0, 1, 1, 2, 2, 0, 2])
  # class 0: tp 1 fp 1 fn 1 -> 1/2; class 1: tp 1 fp 1 fn 0 -> 2/3; class 2: tp 2 fp 0 fn 1 -> 4/5
  metrics = task_metrics("f1_macro", predictions, labels, np.arange(7))
  assert metrics == pytest.approx({"accuracy": 4 / 6, "f1_macro": (1 / 2 + 2 / 3 + 4 / 5) / 3})
  # A class that is only predicted counts, with F1 0.
  metrics = task_metrics("f1_macro", np.array([0, 1]), np.array([0, 0]), np.arange(2))
  assert metrics == pytest.approx({"accuracy": 1 / 2, "f1_macro": (2 / 3 + 0) / 2})


def test_multirc_f1a_and_em():
  groups = np.array([7, 7, 7, 3, 3, 9, 9])
  labels = np.array([1, 0, 1, 0, 0, 1, -1])
  predictions = np.array([0, 0, 1, 0, 0, 1, 0])
  # Answers: tp 2, fp 0, fn 1 -> F1a 4/5. Questions: 7's first answer is wrong, 3 and 9 are right.
  metrics = task_metrics("multirc", predictions, labels, groups)
  assert metrics == pytest.approx({"accuracy": 5 / 6, "f1a": 4 / 5, "em": 2 / 3})
  metrics = task_metrics("multirc", np.array([0, 0]), np.array([0, 0]), np.array([0, 0]))
  assert metrics == pytest.approx({"accuracy": 1.0, "f1a": 0.0, "em": 1.0})  # no positives at all


def test_metric_errors():
  with pytest.raises(ValueError, match="Unknown metric 'f1'"):
    task_metrics("f1", np.array([0]), np.array([0]), np.array([0]))
  with pytest.raises(ValueError, match="every label is -1"):
    task_metrics("accuracy", np.array([0]), np.array([-1]), np.array([0]))
  with pytest.raises(ValueError, match="Lengths differ"):
    task_metrics("accuracy", np.array([0, 1]), np.array([0]), np.array([0]))


def test_exact_match():
  decoded = np.array([[5, 6, 1, 0], [5, 7, 1, 0], [5, 6, 9, 9], [3, 3, 3, 3]])
  targets = np.array([[5, 6, 1, 0], [5, 6, 1, 0], [5, 6, 0, 0], [0, 0, 0, 0]])
  # Row 1 decodes another token; row 2 matches its 2-token target (no EOS); row 3 has no target.
  assert exact_match(decoded, targets, np.array([3, 3, 2, 0])) == pytest.approx(2 / 3)
  with pytest.raises(ValueError, match="4 decodings, 4 targets, 3 lengths"):
    exact_match(decoded, targets, np.array([1, 1, 1]))
