"""`python -m jaxprompt.train` and `python -m jaxprompt.evaluate` as real processes: an end-to-end
run on the SST-2 files, a run killed with SIGKILL and resumed, a SIGTERM preemption, and a run of two
processes of four devices each (multi-host on loopback)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.conftest import SHARED_DATA

REPO = Path(__file__).resolve().parents[1]


def _train_command(workdir: Path, num_steps: int) -> list[str]:
  return [
      sys.executable, "-m", "jaxprompt.train",
      "--config=configs/t5_prompt.py:size=tiny,task=sst2,data=local", f"--workdir={workdir}",
      f"--config.model.tokenizer={SHARED_DATA / 't5_vocab' / 'spiece.model'}",
      f"--config.data.train.files=('{SHARED_DATA / 'sst2' / 'train.tsv'}',)",
      f"--config.data.eval.files=('{SHARED_DATA / 'sst2' / 'dev.tsv'}',)",
      "--config.data.max_eval_examples=32", f"--config.num_steps={num_steps}", "--config.eval_every=3",
      "--config.checkpoint_every=1", "--config.log_every=1",
      # Length-grouped batches in two buckets: resuming and multi-host runs must see the same shapes.
      "--config.data.bucket_lengths=(32,64)", "--config.data.length_window=4",
  ]


def _run(command: list[str]) -> subprocess.CompletedProcess:
  result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def _finished_steps(workdir: Path) -> list[int]:
  directory = workdir / "checkpoints"
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if directory.is_dir() else []


def _start_and_wait_for(workdir: Path, step: int) -> subprocess.Popen:
  """A long run, returned once its checkpoint `step` is finished."""
  process = subprocess.Popen(_train_command(workdir, 1000), cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 300
  while not any(s >= step for s in _finished_steps(workdir)):
    assert process.poll() is None, process.stderr.read()[-3000:]
    assert time.time() < deadline, "the run never reached its checkpoint"
    time.sleep(0.02)
  return process


def _losses(workdir: Path) -> dict[int, float]:
  """train/loss by step; a re-run step overwrites the killed run's line for it."""
  lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  return {line["step"]: line["train/loss"] for line in lines if "train/loss" in line}


def _state(workdir: Path, step: int):
  return ocp.StandardCheckpointer().restore((workdir / "checkpoints" / str(step) / "state").absolute())


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("straight")
  _run(_train_command(workdir, 6))
  return workdir


def test_a_run_writes_checkpoints_metrics_and_prompts(straight_run):
  assert _finished_steps(straight_run)[-3:] == [4, 5, 6]  # the last 3 (+ the best, step 3 or 6)
  assert sorted(_losses(straight_run)) == [1, 2, 3, 4, 5, 6]
  evals = [json.loads(line) for line in (straight_run / "metrics.jsonl").read_text().splitlines() if "eval/accuracy" in line]
  assert [e["step"] for e in evals] == [3, 6] and all(e["eval/examples"] == 32 for e in evals)
  assert list((straight_run / "tensorboard").glob("events.out.tfevents.*"))
  for name in ("step_1", "step_6", "best"):
    assert np.load(straight_run / "prompts" / f"{name}.npy").shape == (8, 16)


def test_evaluate_restores_the_best_prompt(straight_run):
  evals = [json.loads(line) for line in (straight_run / "metrics.jsonl").read_text().splitlines() if "eval/accuracy" in line]
  best = max(evals, key=lambda e: e["eval/accuracy"])  # ties keep the earlier step, as the run does
  base = _train_command(straight_run, 6)[3:]
  args = [a for a in base if not a.startswith("--workdir")]
  for prompt in (straight_run, straight_run / "prompts" / "best.npy"):
    out = _run([sys.executable, "-m", "jaxprompt.evaluate", *args, f"--prompt={prompt}"]).stdout
    metrics = json.loads(out[out.index("{"):])
    assert metrics["eval/accuracy"] == best["eval/accuracy"]
    assert metrics["eval/loss"] == pytest.approx(best["eval/loss"], rel=1e-6)


def test_a_killed_run_resumes_bitwise(straight_run, tmp_path):
  killed = _start_and_wait_for(tmp_path, 3)
  killed.send_signal(signal.SIGKILL)
  killed.wait()
  killed_at = max(_finished_steps(tmp_path))
  assert killed_at < 6, "the run finished before it could be killed"
  stderr = _run(_train_command(tmp_path, 6)).stderr

  # It really resumed (a restart from scratch would give the same numbers too): from the last
  # finished checkpoint, without recomputing the steps before it.
  assert f"at step {killed_at}" in stderr.split("resumed from", 1)[1].splitlines()[0]
  steps_logged = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
                  if "train/loss" in line]
  assert steps_logged.count(1) == 1 and steps_logged.count(6) == 1

  assert _losses(tmp_path) == _losses(straight_run)
  np.testing.assert_array_equal(np.load(tmp_path / "prompts" / "step_6.npy"), np.load(straight_run / "prompts" / "step_6.npy"))
  resumed, straight = _state(tmp_path, 6), _state(straight_run, 6)
  flat = lambda tree: {k: np.asarray(v) for k, v in ocp.tree.to_flat_dict(tree, sep="/").items()}
  resumed, straight = flat(resumed), flat(straight)
  assert resumed.keys() == straight.keys()
  for key in straight:
    np.testing.assert_array_equal(resumed[key], straight[key], err_msg=key)


def test_sigterm_saves_and_exits_cleanly(tmp_path):
  process = _start_and_wait_for(tmp_path, 2)
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=120)
  assert process.returncode == 0, stderr[-3000:]
  assert "preemption requested: saved step" in stderr
  saved = int(stderr.split("preemption requested: saved step ")[1].split(",")[0])
  assert saved >= 2 and _finished_steps(tmp_path)[-1] == saved


def test_superglue_multirc_end_to_end(tmp_path):
  folder = SHARED_DATA / "superglue" / "MultiRC"
  config_args = [
      "--config=configs/t5_prompt.py:size=tiny,task=multirc,data=local",
      f"--config.model.tokenizer={SHARED_DATA / 't5_vocab' / 'spiece.model'}",
      f"--config.data.train.files=('{folder / 'train32.jsonl'}',)",
      f"--config.data.eval.files=('{folder / 'dev32.jsonl'}',)",
      "--config.data.max_eval_examples=48", "--config.eval_every=2", "--config.checkpoint_every=2",
  ]
  _run([sys.executable, "-m", "jaxprompt.train", *config_args, f"--workdir={tmp_path}", "--config.num_steps=4"])
  evals = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines() if "eval/f1a" in line]
  assert [e["step"] for e in evals] == [2, 4] and all("eval/em" in e for e in evals)
  assert _finished_steps(tmp_path) == [2, 4] and (tmp_path / "prompts" / "best.npy").is_file()

  out = _run([sys.executable, "-m", "jaxprompt.evaluate", *config_args, f"--prompt={tmp_path / 'checkpoints' / '4'}"]).stdout
  metrics = json.loads(out[out.index("{"):])
  assert metrics["eval/f1a"] == evals[-1]["eval/f1a"] and metrics["eval/em"] == evals[-1]["eval/em"]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_of_four_devices_train_and_resume_as_one_of_eight(straight_run, tmp_path):
  """Multi-host on loopback: 2 processes x 4 CPU devices, the coordinator on 127.0.0.1, each
  process feeding its half of every global batch; 3 steps, checkpointed, then resumed to 6. The
  losses and the prompt are the single 8-device process's (up to the order of cross-process sums)."""
  env = dict(os.environ, XLA_FLAGS=os.environ["XLA_FLAGS"].replace("device_count=8", "device_count=4"))

  def run_both(num_steps: int) -> None:
    port = _free_port()
    processes = [
        subprocess.Popen(
            _train_command(tmp_path, num_steps)
            + [f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        for i in range(2)
    ]
    for process in processes:
      _, stderr = process.communicate(timeout=600)
      assert process.returncode == 0, stderr[-3000:]

  run_both(3)
  assert max(_finished_steps(tmp_path)) == 3
  run_both(6)
  losses, reference = _losses(tmp_path), _losses(straight_run)
  assert sorted(losses) == sorted(reference) == list(range(1, 7))
  np.testing.assert_allclose([losses[s] for s in range(1, 7)], [reference[s] for s in range(1, 7)], rtol=1e-5)
  np.testing.assert_allclose(np.load(tmp_path / "prompts" / "step_6.npy"),
                             np.load(straight_run / "prompts" / "step_6.npy"), atol=1e-5)
