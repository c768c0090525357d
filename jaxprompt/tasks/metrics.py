"""Task metrics on class predictions: accuracy, macro-F1 (CB), F1a and exact match (MultiRC);
entity-level span F1 and token accuracy on per-token tag predictions (NER); Pearson and Spearman
correlations of predicted scores (regression, STS-B)."""

from __future__ import annotations

from collections.abc import Sequence

import re

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
  elif metric == "span_f1":
    raise ValueError("'span_f1' scores per-token tags: use tagging_metrics")
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


def tagging_metrics(
    predictions_BxL: np.ndarray, labels_BxL: np.ndarray, label_names: Sequence[str]
) -> dict[str, float]:
  """Entity-level span precision / recall / F1 and token accuracy over the labelled positions.

  Positions whose label is -1 (later sub-tokens, special tokens, padding) are left out; what remains
  of a row is its sentence's word-level tag sequence, read as BIO / IOB2 spans the way seqeval's
  default (conlleval) mode reads them: an I- tag that does not continue a span of its type starts one.
  Span scores are micro-averaged over all entities of all rows.
  """
  predictions_BxL, labels_BxL = np.asarray(predictions_BxL), np.asarray(labels_BxL)
  if predictions_BxL.shape != labels_BxL.shape or labels_BxL.ndim != 2:
    raise ValueError(f"predictions {predictions_BxL.shape} and labels {labels_BxL.shape} must be the same [B, L] shape")
  labelled_BxL = labels_BxL != -1
  if not labelled_BxL.any():
    raise ValueError("No labelled tokens: every label is -1")
  names = np.asarray(label_names, dtype=object)
  for what, values in (("prediction", predictions_BxL[labelled_BxL]), ("label", labels_BxL[labelled_BxL])):
    if values.min() < 0 or values.max() >= len(names):
      raise ValueError(f"A {what} is outside [0, {len(names)}): {sorted(set(values.tolist()))}")
  true_spans, predicted_spans = set(), set()
  for row, labelled in enumerate(labelled_BxL):
    true_spans.update((row, *span) for span in bio_spans(names[labels_BxL[row, labelled]]))
    predicted_spans.update((row, *span) for span in bio_spans(names[predictions_BxL[row, labelled]]))
  hits = len(true_spans & predicted_spans)
  return {
      "span_precision": hits / len(predicted_spans) if predicted_spans else 0.0,
      "span_recall": hits / len(true_spans) if true_spans else 0.0,
      "span_f1": 2 * hits / (len(true_spans) + len(predicted_spans)) if true_spans or predicted_spans else 0.0,
      "token_accuracy": float(np.mean(predictions_BxL[labelled_BxL] == labels_BxL[labelled_BxL])),
  }


def bio_spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
  """The (type, first, last) word spans of a BIO tag sequence, as seqeval's default mode finds them."""
  spans = []
  previous, previous_type, begin = "O", "", 0
  for i, tag in enumerate([*tags, "O"]):  # a final O closes the last span
    prefix, entity_type = (tag, "") if tag == "O" else (tag[0], tag[2:])
    if prefix not in ("B", "I", "O") or (prefix != "O" and tag[1:2] != "-"):
      raise ValueError(f"{tag!r} is not a BIO tag ('O', 'B-<type>' or 'I-<type>')")
    ends = previous != "O" and (prefix in ("B", "O") or entity_type != previous_type)
    if ends:
      spans.append((previous_type, begin, i - 1))
    if prefix == "B" or (prefix == "I" and (previous == "O" or entity_type != previous_type)):
      begin = i
    previous, previous_type = prefix, entity_type
  return spans


def regression_metrics(predictions: np.ndarray, scores: np.ndarray) -> dict[str, float]:
  """Pearson and Spearman correlations over the examples with a score (NaN: none)."""
  predictions, scores = np.asarray(predictions, np.float64).reshape(-1), np.asarray(scores, np.float64).reshape(-1)
  keep = np.isfinite(scores)
  if keep.sum() < 2:
    raise ValueError(f"{int(keep.sum())} scored examples: a correlation needs at least two")
  predictions, scores = predictions[keep], scores[keep]
  return {"pearson": _pearson(predictions, scores), "spearman": _pearson(_ranks(predictions), _ranks(scores))}


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
  a, b = a - a.mean(), b - b.mean()
  denominator = np.sqrt((a * a).sum() * (b * b).sum())
  return float((a * b).sum() / denominator) if denominator else 0.0


def _ranks(x: np.ndarray) -> np.ndarray:
  """Ranks with ties sharing their mean rank (what Spearman's correlation ranks by)."""
  order = np.argsort(x, kind="stable")
  ranks = np.empty(len(x))
  ranks[order] = np.arange(len(x), dtype=np.float64)
  _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
  sums = np.zeros(len(counts))
  np.add.at(sums, inverse, ranks)
  return (sums / counts)[inverse]


def words_match(generated: str, target: str) -> bool:
  """T5's WSC comparison, as PET uses it: lower-cased, split at non-letters, and either word list
  contained in the other (so, as in PET, generating no word at all matches)."""
  words = lambda text: [w for w in re.split("[^a-zA-Z]", text.lower().strip()) if w]
  ours, theirs = words(generated), words(target)
  return all(w in theirs for w in ours) or all(w in ours for w in theirs)
