"""The LM-BFF pipeline end to end on a random MLM with MiniLM's vocabulary and real SST-2 K-shot
splits: every variant on every split, the label-word and template candidates ranked on dev, the
report's mean (std), and a re-run that trains nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from configs import lm_bff
from jaxprompt.fewshot import lm_bff_pipeline, splits, template_search
from jaxprompt.fewshot.lm_bff_pipeline import Pipeline
from jaxprompt.tasks.cloze_presets import LM_BFF_PRESETS
from tests.conftest import SHARED_DATA
from tests.method_runs import tiny_mlm
from tests.run_configs import apply_overrides

SEEDS = (13, 21)
TEMPLATES = ("*cls**sent_0*_It_was*mask*.*sep+*", "*cls**sent_0*_A*mask*_one.*sep+*", "*cls**mask*:*+sent_0**sep+*")


def _fake_template_search(model, params, tokenizer, task, records, *args):
  """T5's search, as a random T5 cannot give well-formed templates: three fixed ones, scored."""
  found = tuple(template_search.FoundTemplate(t, -float(i), (), template_search.template_task(task, t, f"t{i}"))
                for i, t in enumerate(TEMPLATES))
  return template_search.TemplateSearch(task, (template_search.FormSearch("sentence_then_mask", found, {}),))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  root = tmp_path_factory.mktemp("lmbff")
  splits.write_kshot(str(SHARED_DATA / "sst2" / "dev.tsv"), str(root / "k-shot"), "label", k=4, seeds=SEEDS,
                     task="SST-2")
  config = lm_bff.get_config(f"task=sst2,kshot={root / 'k-shot' / 'SST-2'},test={SHARED_DATA / 'sst2' / 'test.tsv'},"
                             "k=4,seeds=13+21,variants=zero_shot+prompt_ft_demo+auto_labels+auto_template")
  tiny_mlm(config)
  config = apply_overrides(config, **{
      "batch_size": 8, "eval_batch_size": 16, "num_steps": 2, "eval_every": 2, "checkpoint_every": 2,
      "log_every": 1, "mesh.data": 2, "mesh.fsdp": 4, "data.max_input_len": 64, "data.bucket_lengths": (64,),
      "lm_bff.demo_max_input_len": 128, "lm_bff.label_k": 2, "lm_bff.label_candidates": 2,
      "lm_bff.template_candidates": 2, "demonstrations.eval_sets": 2, "optimizer.learning_rate": 1e-3,
      "model.trainable": "bias$"})
  config.lm_bff.test.files = (str(_small_test(root)),)
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(template_search, "search_templates", _fake_template_search)
    patch.setattr(lm_bff_pipeline, "load_backbone", lambda *a: _FakeT5())
    numbers = Pipeline(config, root / "run").run()
  return config, root / "run", numbers


class _FakeT5:
  model = params = frozen = tokenizer = None


def _small_test(root):
  lines = (SHARED_DATA / "sst2" / "test.tsv").read_text().splitlines()[:17]  # header + 16 rows: one eval batch
  path = root / "test.tsv"
  path.write_text("\n".join(lines) + "\n")
  return path


def test_every_variant_runs_on_every_split_and_reports_mean_and_std(finished):
  _, workdir, numbers = finished
  for variant in ("zero_shot", "prompt_ft_demo", "auto_labels", "auto_template"):
    tests = [json.loads((workdir / variant / f"seed{s}" / "result.json").read_text())["test"] for s in SEEDS]
    assert numbers[variant]["mean"] == pytest.approx(np.mean(tests))
    assert numbers[variant]["std"] == pytest.approx(np.std(tests))
    assert all(0.0 <= t <= 1.0 for t in tests)
  report = (workdir / "report.md").read_text()
  assert "prompt_ft_demo" in report and "13:" in report and "21:" in report
  assert not (workdir / "prompt_ft_demo" / "seed13" / "checkpoints").exists()
  assert not (workdir / "prompt_ft_demo" / "seed13" / "backbone_best").exists()


def test_the_zero_shot_result_does_not_depend_on_the_split(finished):
  _, workdir, _ = finished
  tests = {json.loads((workdir / "zero_shot" / f"seed{s}" / "result.json").read_text())["test"] for s in SEEDS}
  assert len(tests) == 1  # no training: the split only changes its dev set


def test_candidates_are_fine_tuned_and_the_best_on_dev_is_kept(finished):
  _, workdir, _ = finished
  for variant, count in (("auto_labels", 2), ("auto_template", 2)):
    for seed in SEEDS:
      folder = workdir / variant / f"seed{seed}"
      result = json.loads((folder / "result.json").read_text())
      candidates = [json.loads((folder / f"candidate{i}" / "result.json").read_text()) for i in range(count)]
      best = max(candidates, key=lambda r: r["dev"])
      assert (result["dev"], result["test"], result["candidate"]) == (best["dev"], best["test"], best["candidate"])
      # The biases trained: a finished candidate keeps its result, not its multi-GB checkpoints.
      assert not any((folder / f"candidate{i}" / "checkpoints").exists() for i in range(count))
  search = json.loads((workdir / "auto_labels" / "seed13" / "search.json").read_text())
  words = [tuple(m["words"]) for m in search["mappings"]]
  assert len(words) == 2 and all(len(w) == 2 for w in words)
  templates = [c["candidate"] for c in json.loads((workdir / "auto_template" / "seed13" / "result.json").read_text())
               ["candidates"]]
  assert templates == list(TEMPLATES[:2])  # the two best-scored templates, in score order


def test_a_rerun_trains_nothing_and_reports_the_same(finished, monkeypatch):
  config, workdir, numbers = finished
  monkeypatch.setattr(lm_bff_pipeline, "train_and_evaluate", lambda *a: pytest.fail("a finished run trained again"))
  assert Pipeline(config, workdir).run() == numbers


def test_demonstration_runs_read_twice_the_length(finished):
  config, _, _ = finished
  run = Pipeline(config, finished[1]).run_config(13, "prompt_ft_demo")
  assert run.demonstrations.enabled and run.data.max_input_len == 128 and run.data.bucket_lengths == (64, 128)
  assert not Pipeline(config, finished[1]).run_config(13, "prompt_ft").demonstrations.enabled
  assert LM_BFF_PRESETS["sst2"].pattern.text == TEMPLATES[0]
