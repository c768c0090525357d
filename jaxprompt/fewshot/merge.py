"""PET's ensemble: the members' class scores merged into one teacher (pet/modeling.py's merge_logits).

`mean` averages the raw score vectors of every member; `wmean` (PET's default) weights each member
by its accuracy on its training set before training, a zero-shot measure of its pattern's quality.
Scores are averaged before any softmax, as PET does. When every weight is 0, wmean falls back to
uniform weights (PET divides by zero there, pet#103).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

REDUCTIONS = ("mean", "wmean")


def merge_scores(scores: Sequence[np.ndarray], weights: Sequence[float], reduction: str) -> np.ndarray:
  """[N, C] merged scores of the members' [N, C] scores."""
  if reduction not in REDUCTIONS:
    raise ValueError(f"reduction {reduction!r} is not one of {REDUCTIONS}")
  if not scores:
    raise ValueError("merging an ensemble needs at least one member's scores")
  shapes = {np.shape(s) for s in scores}
  if len(shapes) != 1:
    raise ValueError(f"the members' scores differ in shape: {sorted(shapes)}")
  if len(weights) != len(scores):
    raise ValueError(f"{len(scores)} members' scores but {len(weights)} weights")
  stacked_MxNxC = np.stack([np.asarray(s, np.float64) for s in scores])
  weights_M = np.asarray(weights, np.float64)
  if reduction == "mean" or not weights_M.sum() > 0:
    weights_M = np.ones_like(weights_M)
  return np.tensordot(weights_M / weights_M.sum(), stacked_MxNxC, axes=1)


def softmax(scores_NxC: np.ndarray) -> np.ndarray:
  shifted = scores_NxC - scores_NxC.max(axis=-1, keepdims=True)
  e = np.exp(shifted)
  return e / e.sum(axis=-1, keepdims=True)
