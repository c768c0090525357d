"""Task metrics on small hand-computed cases."""

import numpy as np
import pytest

from jaxprompt.tasks.metrics import bio_spans, exact_match, tagging_metrics, task_metrics, words_match


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


TAGS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")
O, BP, IP, BL, IL = range(5)


def test_tagging_metrics_by_hand():
  # Row 0: [CLS] Peter Black ##burn met Paris [SEP] pad; row 1: [CLS] in New York [SEP] pad pad pad.
  labels = np.array([
      [-1, BP, IP, -1, O, BL, -1, -1],
      [-1, O, BL, IL, -1, -1, -1, -1],
  ])
  predictions = np.array([
      [BP, BP, O, IP, O, BL, IL, IL],  # ignored positions hold anything
      [O, O, BL, IL, BP, O, O, O],
  ])
  # Gold spans: PER(0-1), LOC(3) in row 0; LOC(1-2) in row 1. Predicted: PER(0), LOC(3); LOC(1-2).
  # 2 of 3 predicted spans are right and 2 of 3 gold spans are found; 6 of 7 labelled tokens are right.
  assert tagging_metrics(predictions, labels, TAGS) == pytest.approx(
      {"span_precision": 2 / 3, "span_recall": 2 / 3, "span_f1": 2 / 3, "token_accuracy": 6 / 7}
  )
  # Nothing predicted: precision, recall and F1 are 0; the O tokens are still right.
  nothing = np.zeros_like(labels)
  assert tagging_metrics(nothing, labels, TAGS) == pytest.approx(
      {"span_precision": 0.0, "span_recall": 0.0, "span_f1": 0.0, "token_accuracy": 2 / 7}
  )
  # One extra wrong span: P = 3/4, R = 3/3, F1 = 2 * 3 / (3 + 4).
  perfect_plus_one = np.where(labels >= 0, labels, O)
  perfect_plus_one[0, 4] = BL
  assert tagging_metrics(perfect_plus_one, labels, TAGS) == pytest.approx(
      {"span_precision": 3 / 4, "span_recall": 1.0, "span_f1": 6 / 7, "token_accuracy": 6 / 7}
  )


def test_span_f1_counts_spans_not_tokens():
  # A span with one wrong token counts as entirely wrong, though most of its tokens are right.
  labels = np.array([[BP, IP, IP, IP]])
  predictions = np.array([[BP, IP, IP, O]])
  metrics = tagging_metrics(predictions, labels, TAGS)
  assert (metrics["span_f1"], metrics["token_accuracy"]) == (0.0, 3 / 4)


@pytest.mark.parametrize(
    "tags, spans",
    [
        (["B-PER", "I-PER", "O", "B-LOC"], [("PER", 0, 1), ("LOC", 3, 3)]),
        (["B-PER", "B-PER", "I-PER"], [("PER", 0, 0), ("PER", 1, 2)]),  # B- starts a new span
        (["I-PER", "I-PER", "O", "I-LOC"], [("PER", 0, 1), ("LOC", 3, 3)]),  # IOB1: I- after O starts one
        (["B-PER", "I-LOC", "I-LOC"], [("PER", 0, 0), ("LOC", 1, 2)]),  # a type change starts one
        (["I-PER", "B-PER"], [("PER", 0, 0), ("PER", 1, 1)]),
        (["O", "O"], []),
        ([], []),
        (["B-MISC-X", "I-MISC-X"], [("MISC-X", 0, 1)]),  # types may hold hyphens
    ],
)
def test_bio_spans_as_seqeval_default_mode(tags, spans):
  assert bio_spans(tags) == spans


def test_tagging_metric_errors():
  with pytest.raises(ValueError, match="every label is -1"):
    tagging_metrics(np.zeros((1, 2)), np.full((1, 2), -1), TAGS)
  with pytest.raises(ValueError, match="same \\[B, L\\] shape"):
    tagging_metrics(np.zeros((1, 2)), np.zeros((1, 3)), TAGS)
  with pytest.raises(ValueError, match="A prediction is outside \\[0, 5\\)"):
    tagging_metrics(np.array([[7]]), np.array([[0]]), TAGS)
  with pytest.raises(ValueError, match="'E-PER' is not a BIO tag"):
    bio_spans(["E-PER"])
  with pytest.raises(ValueError, match="use tagging_metrics"):
    task_metrics("span_f1", np.array([0]), np.array([0]), np.array([0]))


def test_regression_metrics_are_pearson_and_spearman_over_scored_examples():
  import scipy.stats  # noqa: PLC0415 - the reference (sentence-transformers brings scipy)

  from jaxprompt.tasks.metrics import regression_metrics  # noqa: PLC0415

  rng = np.random.default_rng(0)
  scores = rng.uniform(0, 5, 50).round(1)  # ties, as STS-B's scores have
  predictions = scores + rng.normal(0, 1.5, 50)
  with_unscored = np.concatenate([scores, [np.nan, np.nan]])
  got = regression_metrics(np.concatenate([predictions, [9.0, -9.0]]), with_unscored)
  assert got["pearson"] == pytest.approx(scipy.stats.pearsonr(predictions, scores)[0], abs=1e-9)
  assert got["spearman"] == pytest.approx(scipy.stats.spearmanr(predictions, scores)[0], abs=1e-9)
  with pytest.raises(ValueError, match="at least two"):
    regression_metrics(np.array([1.0, 2.0]), np.array([np.nan, 3.0]))


@pytest.mark.parametrize("generated, target, match", [
    ("the trophy", "The trophy", True), ("trophy", "the trophy", True), ("the big trophy", "trophy", True),
    ("suitcase", "the trophy", False), ("Mr. Jones", "mr jones", True), ("", "the trophy", True),
])
def test_words_match_is_t5s_wsc_comparison(generated, target, match):
  assert words_match(generated, target) is match
