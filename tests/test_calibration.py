"""Contextual calibration: p_cf and the calibrated scores by hand; a tiny T5's zero- and k-shot
evaluation reporting both metrics, its calibrated predictions argmax(p / p_cf) of the scores the eval
step gave, and the content-free inputs it scored formatted as the task's inputs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from jaxprompt import calibration, evaluation, experiment, sharding
from jaxprompt.tasks import features as features_lib
from jaxprompt.tasks import icl, readers
from jaxprompt.tasks.catalog import TAGGING_TASKS
from jaxprompt.tasks.cloze_presets import LM_BFF_PRESETS
from jaxprompt.tasks.metrics import task_metrics
from jaxprompt.tasks.records import Record
from tests.method_runs import CASES, CLOZE_CASES
from tests.run_configs import tiny_config

CONTENT_FREE = ("N/A", "", "[MASK]")


def _softmax(scores: np.ndarray) -> np.ndarray:
  e = np.exp(scores - scores.max(axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


def test_p_cf_and_calibrated_scores_equal_a_hand_computation():
  # Class probabilities as log-probabilities plus a constant (a softmax does not see it).
  cf_probs = np.array([[0.5, 0.5], [0.7, 0.3], [0.9, 0.1]])
  p_cf = calibration.content_free_probabilities(np.log(cf_probs) + 3.0, num_strings=3)
  np.testing.assert_allclose(p_cf, [[0.7, 0.3]])
  # p = (0.6, 0.4): p / p_cf = (6/7, 4/3), which sum to 46/21.
  q = calibration.calibrate(np.log([[0.6, 0.4], [0.2, 0.8]]) - 1.0, p_cf)
  np.testing.assert_allclose(q, [[9 / 23, 14 / 23], [(2 / 7) / (2 / 7 + 8 / 3), (8 / 3) / (2 / 7 + 8 / 3)]])
  # Two groups of two (k-shot: one p_cf per example), three classes.
  groups = np.log([[0.2, 0.2, 0.6], [0.4, 0.4, 0.2], [0.1, 0.8, 0.1], [0.3, 0.4, 0.3]])
  p_cf = calibration.content_free_probabilities(groups, num_strings=2)
  np.testing.assert_allclose(p_cf, [[0.3, 0.3, 0.4], [0.2, 0.6, 0.2]])
  # p / p_cf: (1, 1, 1) for the first example; (2.5, 0.5, 1), which sum to 4, for the second.
  q = calibration.calibrate(np.log([[0.3, 0.3, 0.4], [0.5, 0.3, 0.2]]), p_cf)
  np.testing.assert_allclose(q, [[1 / 3, 1 / 3, 1 / 3], [0.625, 0.125, 0.25]])


def test_a_uniform_p_cf_changes_nothing():
  scores = np.random.default_rng(0).normal(size=(20, 4)) * 5
  q = calibration.calibrate(scores, np.full((1, 4), 0.25))
  np.testing.assert_allclose(q, _softmax(scores), rtol=1e-12)


@pytest.fixture(scope="module")
def t5():
  """The tiny random T5 alone (zero- / k-shot evaluation) on 16 SST-2 rows, calibrating."""
  config = tiny_config("sst2", eval_batch_size=8, **{"prompt.method": "none", "calibration.enabled": True})
  return experiment.build(config)


def _evaluate_recording(exp, monkeypatch):
  """(metrics, the predictions task_metrics saw in order, every row the eval step scored: unpadded
  inputs, label, group and label scores, in order)."""
  predictions, rows = [], []

  def recording_metrics(metric, predicted, *args):
    predictions.append(np.asarray(predicted))
    return task_metrics(metric, predicted, *args)

  eval_step = exp.eval_step()

  def recording_step(prompt, frozen, batch, *labels):
    out = eval_step(prompt, frozen, batch, *labels)
    fields = [np.asarray(batch[k]) for k in ("inputs", "input_mask", "label", "group", "example_mask")]
    for ids, mask, label, group, real, scores in zip(*fields, np.asarray(out["label_scores"]), strict=True):
      if real:
        rows.append((ids[mask].tolist(), int(label), int(group), scores))
    return out

  monkeypatch.setattr(evaluation.metrics_lib, "task_metrics", recording_metrics)
  with sharding.activate(exp.mesh, exp.rules):
    metrics = evaluation.evaluate(recording_step, {}, exp.frozen, experiment.eval_features(exp), exp)
  return metrics, predictions, rows


def _check_calibrated_predictions(metrics, predictions, eval_rows, free_rows):
  """Both metrics reported; the uncalibrated prediction argmax p, the calibrated argmax p / p_cf."""
  scores = np.stack([row[3] for row in eval_rows]).astype(np.float64)
  labels = np.array([row[1] for row in eval_rows])
  free_NxMxC = np.stack([row[3] for row in free_rows]).astype(np.float64).reshape(-1, len(CONTENT_FREE), 2)
  p_cf = _softmax(free_NxMxC).mean(axis=1)
  uncalibrated, calibrated = predictions
  np.testing.assert_array_equal(uncalibrated, scores.argmax(axis=1))
  np.testing.assert_array_equal(calibrated, (_softmax(scores) / p_cf).argmax(axis=1))
  assert metrics["eval/uncalibrated/accuracy"] == pytest.approx(np.mean(uncalibrated == labels))
  assert metrics["eval/accuracy"] == pytest.approx(np.mean(calibrated == labels))
  return uncalibrated, calibrated


def test_zero_shot_calibration_scores_the_content_free_inputs_and_divides_by_their_mean(t5, monkeypatch):
  metrics, predictions, rows = _evaluate_recording(t5, monkeypatch)
  assert metrics["eval/examples"] == 16 and len(rows) == 16 + len(CONTENT_FREE)
  uncalibrated, calibrated = _check_calibrated_predictions(metrics, predictions, rows[:16], rows[16:])
  assert (uncalibrated != calibrated).any()  # the random model's bias is there to remove
  encode = t5.backbone.codec.encode_input
  assert [row[0] for row in rows[16:]] == [encode("sst2 sentence: N/A"), encode("sst2 sentence:"),
                                          encode("sst2 sentence: [MASK]")]


def test_k_shot_content_free_inputs_get_each_examples_demonstrations(t5, monkeypatch):
  # Room for two demonstrations and the input: T5 cuts an input's end, which would leave the
  # demonstrations alone, the same for every input.
  saved = t5.config.icl.num_shots, t5.config.data.max_input_len
  t5.config.icl.num_shots, t5.config.data.max_input_len = 2, 256
  try:
    metrics, predictions, rows = _evaluate_recording(t5, monkeypatch)
  finally:
    t5.config.icl.num_shots, t5.config.data.max_input_len = saved
  assert len(rows) == 16 * (1 + len(CONTENT_FREE)) and max(len(row[0]) for row in rows) < 256
  eval_rows, free_rows = rows[:16], rows[16:]
  _check_calibrated_predictions(metrics, predictions, eval_rows, free_rows)
  shots = t5.config.icl
  demonstrations = icl.Demonstrations(readers.read_records(t5.tasks[0].train), t5.tasks[0].spec, 2, shots.seed,
                                      shots.separator)
  encode = t5.backbone.codec.encode_input
  expected = [encode(demonstrations.text_before(group) + f"sst2 sentence: {text}")
              for _, _, group, _ in eval_rows for text in CONTENT_FREE]
  assert [row[0] for row in free_rows] == expected
  assert len({row[2] for row in eval_rows}) == 16  # every example its own demonstrations


def _featurized(exp, text: str) -> features_lib.Feature:
  """featurize's feature of an SST-2 record holding `text`."""
  data = exp.config.data
  feats, _ = features_lib.featurize([Record({"sentence": text}, "test")], exp.tasks[0].spec, exp.backbone.codec,
                                    data.max_input_len, data.max_target_len)
  return feats[0]


@pytest.mark.parametrize("case", ["p_tuning-t5", "prompt_tuning-bert-cloze"])
def test_content_free_inputs_are_featurized_as_a_record_holding_them(case):
  """P-tuning's pseudo tokens, and LM-BFF's SST-2 pattern on a masked LM, filled with each string
  encode as a real record's input does (featurize refuses all-blank fields, so "" is left out)."""
  exp = experiment.build({**CASES, **CLOZE_CASES}[case]())
  eval_features = experiment.eval_features(exp)[""]
  free = calibration.content_free_features(exp, eval_features)
  for feature, text in zip(free, CONTENT_FREE, strict=True):
    if text:
      record = _featurized(exp, text)
      assert (feature.inputs, feature.soft_positions, feature.mask_positions, feature.token_types) == (
          record.inputs, record.soft_positions, record.mask_positions, record.token_types)
  if case == "prompt_tuning-bert-cloze":  # the pattern's text and mask alone
    assert exp.backbone.tokenizer.decode(free[1].inputs, skip_special_tokens=False) == "[CLS] it was [MASK]. [SEP]"


def test_calibration_refuses_regression_and_tagging_tasks(t5):
  stsb = LM_BFF_PRESETS["stsb"].task_spec("stsb")
  with pytest.raises(ValueError, match="regression"):
    evaluation.evaluate_task(t5.eval_step(), {}, t5.frozen, [], stsb, t5)
  with pytest.raises(ValueError, match="labels tokens"):
    evaluation.evaluate_task(t5.eval_step(), {}, t5.frozen, [], TAGGING_TASKS["conll2003"], t5)


def test_a_cloze_pattern_on_t5_is_read_as_text_and_refuses_an_empty_content_free_input(t5):
  spec = LM_BFF_PRESETS["sst2"].task_spec("sst2")
  exp = dataclasses.replace(t5, tasks=(dataclasses.replace(t5.tasks[0], spec=spec),))
  one = [features_lib.Feature([1], [], -1, 0)]
  exp.config.calibration.content_free = ("N/A",)
  try:
    (free,) = calibration.content_free_features(exp, one)
    assert free.inputs == _featurized(exp, "N/A").inputs == t5.backbone.codec.encode_input("N/A It was <extra_id_0>.")
    exp.config.calibration.content_free = ("N/A", "")
    with pytest.raises(ValueError, match="content-free input '' does not render"):
      calibration.content_free_features(exp, one)
  finally:
    exp.config.calibration.content_free = CONTENT_FREE
