"""`python -m jaxprompt.infer --bank`: a bank described by a JSON file, a jsonl file of requests for
its prompts mixed line by line, one answer per good line, bad lines reported by file:line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jaxprompt import experiment
from jaxprompt.serving.bank_file import BankFileError, load_bank_file, read_bank_file
from jaxprompt.serving.file_inference import BadLineError, infer_file
from jaxprompt.serving.requests import Request, serve
from tests.conftest import SHARED_DATA
from tests.run_configs import apply_overrides
from tests.serving.saved_prompts import eval_records, save_run

REPO = Path(__file__).resolve().parents[2]
_TINY = "configs/t5_prompt.py:size=tiny,data=local,task="
_SHARED = {"model.tokenizer": str(SHARED_DATA / "t5_vocab" / "spiece.model"), "mesh.data": 2, "mesh.fsdp": 4,
           "eval_batch_size": 8}
_RTE = SHARED_DATA / "superglue" / "RTE"


def _write_bank(folder: Path) -> Path:
  """Two tiny-T5 prompt tuning runs, SST-2 (4 tokens) and RTE (2 tokens), saved as runs, and the
  bank file naming them."""
  spec = {
      "backbone": str(REPO / f"{_TINY}sst2"),
      "overrides": {**_SHARED, "data.train.files": [str(SHARED_DATA / "sst2" / "test.tsv")],
                    "data.eval.files": [str(SHARED_DATA / "sst2" / "test.tsv")], "prompt.length": 4},
      "prompts": [
          {"name": "sentiment", "path": "runs/sst2"},
          {"name": "entailment", "config": str(REPO / f"{_TINY}rte"), "path": "runs/rte/prompts/best.npy",
           "overrides": {"prompt.length": 2, "data.train.files": [str(_RTE / "train32.jsonl")],
                         "data.eval.files": [str(_RTE / "dev32.jsonl")]}},
      ],
  }
  bank_file = folder / "bank.json"
  bank_file.write_text(json.dumps(spec, indent=1))
  config, sources = read_bank_file(str(bank_file))
  base = experiment.build(apply_overrides(config.copy_and_resolve_references(), **{"prompt.method": "none"}))
  for source, run in zip(sources, ("sst2", "rte"), strict=True):
    save_run(source.config, base.backbone, base.mesh, folder / "runs" / run, seed=len(run))
  return bank_file


@pytest.fixture(scope="module")
def bank_and_lines(tmp_path_factory):
  folder = tmp_path_factory.mktemp("bank")
  bank_file = _write_bank(folder)
  _, sources = read_bank_file(str(bank_file))
  lines = []
  for sst2, rte in zip(eval_records(sources[0].config, 4), eval_records(sources[1].config, 4), strict=True):
    lines += [{"prompt": "sentiment", **sst2}, {"prompt": "entailment", **rte}]
  return folder, bank_file, load_bank_file(str(bank_file)), lines


def _write_lines(path: Path, rows: list) -> Path:
  path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
  return path


def _expected(bank, lines: list[dict]) -> list[dict]:
  requests = [Request(line["prompt"], {k: v for k, v in line.items() if k != "prompt"}) for line in lines]
  return [{"label": r.label, "scores": r.scores, "text": r.text} for r in serve(bank, requests)]


def test_every_line_gets_what_the_bank_gives_it_with_the_prompts_mixed(bank_and_lines, tmp_path):
  _, _, bank, lines = bank_and_lines
  summary = infer_file(bank, str(_write_lines(tmp_path / "in.jsonl", lines)), str(tmp_path / "out.jsonl"),
                       chunk_size=3)  # chunks that split the lines unevenly
  answers = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
  assert (summary.served, summary.skipped) == (8, 0)
  assert [a["line"] for a in answers] == list(range(1, 9))
  assert [a["prompt"] for a in answers] == ["sentiment", "entailment"] * 4
  expected = _expected(bank, lines)
  for answer, want in zip(answers, expected, strict=True):
    assert answer["label"] == want["label"] and answer["text"] == want["text"]
    assert answer["scores"] == pytest.approx(want["scores"], rel=1e-5, abs=1e-5)
  # Each line is scored over its own task's labels: SST-2's 0 / 1, RTE's two.
  assert set(answers[0]["scores"]) == {"0", "1"}
  assert set(answers[1]["scores"]) == set(bank.prompts[bank.prompt_id("entailment")].spec.label_names) != {"0", "1"}


def test_bad_lines_are_named_by_file_and_line_and_skipped_or_fatal(bank_and_lines, tmp_path):
  _, _, bank, lines = bank_and_lines
  rows = [lines[0], "{not json", {"prompt": "nope", "sentence": "x"}, {"prompt": "entailment", "premise": "only"},
          {"sentence": "no prompt"}, lines[1]]
  source = _write_lines(tmp_path / "in.jsonl", rows)
  summary = infer_file(bank, str(source), str(tmp_path / "out.jsonl"), skip_bad_lines=True)
  assert (summary.served, summary.skipped) == (2, 4)
  assert [p.split(": ", 1)[0] for p in summary.problems] == [f"{source}:{n}" for n in (2, 3, 4, 5)]
  assert "not JSON" in summary.problems[0] and "no prompt 'nope'" in summary.problems[1]
  assert "hypothesis" in summary.problems[2]  # the field RTE's template reads and the line lacks
  answers = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
  assert [a["line"] for a in answers] == [1, 6]
  with pytest.raises(BadLineError, match=f"{source}:2: not JSON"):
    infer_file(bank, str(source), str(tmp_path / "fatal.jsonl"))


def test_the_command_line_serves_a_file(bank_and_lines, tmp_path):
  _, bank_file, bank, lines = bank_and_lines
  source = _write_lines(tmp_path / "in.jsonl", [*lines[:4], "{broken"])
  result = subprocess.run(
      [sys.executable, "-m", "jaxprompt.infer", f"--bank={bank_file}", f"--input={source}",
       f"--output={tmp_path / 'out.jsonl'}", "--skip_bad_lines"],
      cwd=REPO, capture_output=True, text=True, timeout=300, check=True)
  answers = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
  assert [a["label"] for a in answers] == [e["label"] for e in _expected(bank, lines[:4])]
  assert f"skipped {source}:5: not JSON" in result.stderr and "4 lines served" in result.stderr


def test_a_bank_file_names_what_is_wrong_and_where(tmp_path):
  bad_json = tmp_path / "bad.json"
  bad_json.write_text('{"backbone": "x",\n "prompts": [}')
  with pytest.raises(BankFileError, match=r"bad.json:2:\d+: not JSON"):
    read_bank_file(str(bad_json))
  unknown = tmp_path / "unknown.json"
  unknown.write_text(json.dumps({"backbone": str(REPO / f"{_TINY}sst2"), "prompts": [
      {"name": "a", "path": "runs/a", "overrides": {"prompt.lenght": 3}}]}))
  with pytest.raises(BankFileError, match=r"unknown.json: prompts\[0\].config: override 'prompt.lenght': the config"
                                          r" has no key 'lenght'"):
    read_bank_file(str(unknown))
  nameless = tmp_path / "nameless.json"
  nameless.write_text(json.dumps({"backbone": str(REPO / f"{_TINY}sst2"), "prompts": [{"path": "runs/a"}]}))
  with pytest.raises(BankFileError, match=r'prompts\[0\] needs "name" and "path"'):
    read_bank_file(str(nameless))
