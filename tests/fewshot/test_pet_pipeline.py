"""The PET / iPET pipeline end to end on a random MLM with MiniLM's vocabulary and real AG News
rows: every stage's files, the merge of the members' saved scores, iPET's sets, the distilled
classifier; and a pipeline killed mid-way finishes, when re-run, with the same classifier bitwise."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from configs import pet
from jaxprompt import training
from jaxprompt.checkpoint import load_export
from jaxprompt.fewshot import merge, pet_pipeline
from jaxprompt.fewshot.pet_pipeline import Pipeline
from tests.assets import smollm2_gguf
from tests.conftest import SHARED_DATA
from tests.method_runs import tiny_mlm
from tests.run_configs import apply_overrides

LABELS = ("World", "Sports", "Business", "Sci/Tech")


class Killed(Exception):
  """The process dying mid-run, after its last checkpoint."""


def _split(folder: Path) -> Path:
  """2 labelled rows per label, 16 unlabeled (their labels dropped) and 8 test rows of AG News."""
  rows = (SHARED_DATA / "agnews" / "test.tsv").read_text(encoding="utf-8").splitlines()[:200]
  by_label = {label: [r for r in rows if r.endswith("\t" + label)] for label in LABELS}
  labeled = [r for label in LABELS for r in by_label[label][:2]]
  unlabeled = [r.rsplit("\t", 1)[0] for label in LABELS for r in by_label[label][2:6]]
  test = [r for label in LABELS for r in by_label[label][6:8]]
  folder.mkdir(parents=True, exist_ok=True)
  for name, lines in (("labeled", labeled), ("unlabeled", unlabeled), ("test", test)):
    (folder / f"{name}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
  return folder


def _config(split: Path, **overrides):
  config = pet.get_config(f"task=agnews_text,split={split},patterns=0+3,repetitions=1,generations=2,train=bias")
  tiny_mlm(config)
  return apply_overrides(config, **{
      "batch_size": 8, "eval_batch_size": 8, "num_steps": 3, "checkpoint_every": 1, "log_every": 1,
      "data.max_input_len": 64, "data.bucket_lengths": (32, 64), "mesh.data": 2, "mesh.fsdp": 4,
      "optimizer.learning_rate": 1e-2, "pet.classifier.num_steps": 3, "pet.classifier.batch_size": 8,
      "pet.classifier.learning_rate": 1e-3, **overrides})


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  root = tmp_path_factory.mktemp("pet")
  config = _config(_split(root / "split"))
  numbers = Pipeline(config, root / "run").run()
  return config, root / "run", numbers


def test_every_stage_leaves_its_files(finished):
  _, workdir, numbers = finished
  for g in (0, 1):
    for name in ("p0-r0", "p1-r0"):
      member = workdir / f"g{g}" / name
      for file in ("member.json", "unlabeled_scores.npy", "test_scores.npy", "train.jsonl"):
        assert (member / file).is_file(), member / file
      assert np.load(member / "unlabeled_scores.npy").shape == (16, 4)
      # Its biases trained: once its scores are saved its checkpoints (weights, Adam moments) go.
      assert not (member / "checkpoints").exists() and not (member / "backbone_best").exists()
  assert (workdir / "final" / "distill.jsonl").is_file()
  assert (workdir / "final" / "classifier" / "checkpoints").is_dir()
  report = (workdir / "report.md").read_text()
  assert "ensemble" in report and "distilled" in report and "( [MASK] )" in report
  assert 0.0 <= numbers["distilled"]["accuracy"] <= 1.0 and numbers["distilled"]["examples"] == 8


def test_the_teacher_is_the_weighted_mean_of_the_last_generations_saved_scores(finished):
  _, workdir, numbers = finished
  members = [workdir / "g1" / name for name in ("p0-r0", "p1-r0")]
  weights = [json.loads((m / "member.json").read_text())["weight"] for m in members]
  assert weights == list(numbers["weights"].values())
  expected = merge.merge_scores([np.load(m / "unlabeled_scores.npy") for m in members], weights, "wmean")
  rows = [json.loads(line) for line in (workdir / "final" / "distill.jsonl").read_text().splitlines()]
  np.testing.assert_allclose([r["teacher_logits"] for r in rows], expected, rtol=1e-6)
  assert all("label" not in r for r in rows) and len(rows) == 16


def test_ipet_sets_hold_the_labelled_set_and_five_times_as_many_in_all(finished):
  _, workdir, _ = finished
  labeled = (workdir.parent / "split" / "labeled.tsv").read_text().splitlines()
  for name in ("p0-r0", "p1-r0"):
    rows = [json.loads(line) for line in (workdir / "g1" / name / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 8 * 5
    assert [r["text"] + "\t" + r["label"] for r in rows[:8]] == labeled
    new = rows[8:]
    assert {r["label"] for r in new} <= set(LABELS)
    assert [sum(r["label"] == label for r in new) for label in LABELS] == [8, 8, 8, 8]  # the labelled set's balance


def test_each_member_has_its_own_seed_and_its_weight_is_its_accuracy_before_training(finished):
  _, workdir, _ = finished
  results = [json.loads(p.read_text()) for p in sorted(workdir.glob("g*/p*/member.json"))]
  assert len({r["seed"] for r in results}) == len(results)
  for r in results:
    assert r["weight"] == r["train_accuracy_before"] and 0.0 <= r["weight"] <= 1.0
  assert [r["train_examples"] for r in results] == [8, 8, 40, 40]


def test_a_killed_pipeline_resumes_and_ends_with_the_same_classifier_bitwise(finished, tmp_path, monkeypatch):
  config, workdir, _ = finished
  calls, kills = [], [3]  # the first pipeline dies in its third run
  train = training.train_and_evaluate

  def killed_in_the_third_run(run_config, run_workdir, beside=None):
    calls.append(run_workdir)
    if len(calls) in kills:  # g1/p0-r0: train one step (checkpointed), then die
      kills.clear()
      short = run_config.copy_and_resolve_references()
      short.num_steps = 1
      train(short, run_workdir, beside)
      raise Killed("killed mid-run")
    return train(run_config, run_workdir, beside)

  monkeypatch.setattr(pet_pipeline, "train_and_evaluate", killed_in_the_third_run)
  resumed = tmp_path / "run"
  with pytest.raises(Killed):
    Pipeline(config, resumed).run()
  assert (resumed / "g1" / "p0-r0" / "checkpoints" / "1").is_dir()
  assert not (resumed / "g1" / "p0-r0" / "member.json").exists()
  calls.clear()
  Pipeline(config, resumed).run()
  # Finished members are never trained again; the killed one resumed from its checkpoint.
  assert [Path(c).relative_to(resumed).as_posix() for c in calls] == ["g1/p0-r0", "g1/p1-r0", "final/classifier"]
  for name in ("g1/p0-r0/train.jsonl", "final/distill.jsonl", "g1/p1-r0/unlabeled_scores.npy"):
    assert (resumed / name).read_bytes() == (workdir / name).read_bytes(), name
  # The classifier: its head and its fine-tuned backbone, as exported.
  ours, theirs = (load_export(d / "final" / "classifier" / "prompts" / "best.npz") for d in (resumed, workdir))
  assert ours.keys() == theirs.keys()
  for name in ours:
    np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)
  backbone = "final/classifier/backbone_best/model.safetensors"
  assert (resumed / backbone).read_bytes() == (workdir / backbone).read_bytes()
  assert (resumed / "report.md").read_text() == (workdir / "report.md").read_text()


def test_zero_labelled_examples_means_zero_shot_members(tmp_path):
  config = _config(_split(tmp_path / "split"), **{"pet.num_labeled": 0, "pet.generations": 1})
  numbers = Pipeline(config, tmp_path / "run").run()
  results = [json.loads(p.read_text()) for p in sorted((tmp_path / "run").glob("g0/p*/member.json"))]
  assert [r["train_examples"] for r in results] == [0, 0]
  assert all(r["train_accuracy_before"] is None and r["weight"] == 0.0 for r in results)
  assert not any((tmp_path / "run").glob("g0/p*/checkpoints"))  # nothing trained
  assert numbers["distilled"]["examples"] == 8


def _tiny_decoder(config):
  """A random 2-layer Llama with SmolLM2's real tokenizer in place of the MLM."""
  config.model.family, config.model.checkpoint, config.model.size = "llama", "", "tiny"
  config.model.tokenizer = str(smollm2_gguf())


def test_own_patterns_on_a_decoder_score_each_label_by_its_words_log_probability(tmp_path):
  """A decoder continues the pattern with the label word, so its patterns end at the mask
  (config.pet.patterns, over the preset's labels and words); its scores are log-probabilities."""
  patterns = ("{~text|backslash_to_space} ( [MASK] )", "News: {~text|backslash_to_space} Topic: [MASK]")
  config = _config(_split(tmp_path / "split"), **{"pet.num_labeled": 0, "pet.generations": 1, "pet.patterns": patterns,
                                                  "pet.classifier.method": "classifier", "pet.classifier.trainable": "none"})
  _tiny_decoder(config)
  numbers = Pipeline(config, tmp_path / "run").run()
  members = [json.loads(p.read_text()) for p in sorted((tmp_path / "run").glob("g0/p*/member.json"))]
  assert [m["pattern"] for m in members] == list(patterns)
  scores = [np.load(tmp_path / "run" / "g0" / f"p{i}-r0" / "test_scores.npy") for i in range(2)]
  assert all(s.shape == (8, 4) and np.all(np.isfinite(s)) and np.all(s < 0) for s in scores)
  assert not np.allclose(scores[0], scores[1])  # each pattern is its own input
  assert numbers["distilled"]["examples"] == 8


def test_a_decoder_pattern_with_text_after_the_mask_names_the_pattern(tmp_path):
  config = _config(_split(tmp_path / "split"), **{"pet.num_labeled": 0, "pet.generations": 1,
                                                  "pet.patterns": ("[MASK] : {~text|backslash_to_space}",)})
  _tiny_decoder(config)
  with pytest.raises(ValueError, match=r"\[MASK\] : "):
    Pipeline(config, tmp_path / "run").run()
