"""SmolLM2-135M SST-2 prompt tuning (the README's demo, 150 steps) on the frozen backbone in float32,
int8, nf4 and with the GGUF file's own Q4_1 blocks ("gguf"): dev accuracy on all 872 rows, step
time and memory of each.

    python -m bench.smollm_quantised --gguf=.../SmolLM2-135M-Instruct.Q4_1.gguf --out=/tmp/smollm-quantised

Training: each variant is `python -m jaxprompt.train --config=configs/smollm_sst2_prompt.py:data=local
--config.model.checkpoint=GGUF --config.model.quantization=Q` in its own subprocess, into --out/Q
(it resumes there; a finished run is not trained again, nor a measured variant measured again),
its wall time and peak resident memory (wait4's ru_maxrss) recorded. "none" is the demo as it is:
the file dequantised to float32.
Accuracy: the best checkpoint on the whole dev set (config.data.max_eval_examples=0). Step time:
in one process, every variant's jitted train step on the same batches, the variants taking turns
for --rounds rounds (median seconds per step, and each one's ratio to float32's), with the PyTorch
equivalent taking its turn too: PEFT PromptTuning on transformers' Llama from the same GGUF
(bench/smollm_prompt_step.py's step; transformers dequantises a GGUF to float32, so it is the
reference for every variant), reported as PEFT's time over each variant's. Frozen weights:
the bytes of the loaded tree; loading peak: the peak resident memory of a process that only loads
the backbone. Results: a markdown table on stdout and --out/results.json. --step_times_only
measures the step times alone (no training, accuracy or memory), for a quick ratio.
"""

from __future__ import annotations

import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
from absl import app, flags

from bench.smollm_prompt_step import peft_step
from bench.t5_forward_backward import machine
from configs import smollm_sst2_prompt
from jaxprompt import experiment, sharding
from jaxprompt.backbones import load_backbone
from jaxprompt.evaluation import evaluate_prompt
from jaxprompt.tasks import pipeline

_GGUF = flags.DEFINE_string("gguf", None, "SmolLM2-135M-Instruct's GGUF file.", required=True)
_OUT = flags.DEFINE_string("out", "/tmp/smollm-quantised", "Where the runs and the results go.")
_VARIANTS = flags.DEFINE_list("variants", ["none", "int8", "nf4", "gguf"], "config.model.quantization values.")
_ROUNDS = flags.DEFINE_integer("rounds", 10, "Timed steps of each variant (taking turns).")
_STEPS = flags.DEFINE_integer("num_steps", 0, "Training steps (0: the demo's 150); fewer for a quick try.")
_STEP_TIMES_ONLY = flags.DEFINE_bool("step_times_only", False, "Only the step times (and PEFT's), no runs.")
_LOAD_ONLY = flags.DEFINE_string("load_only", "", "Internal: load the backbone with this quantization and exit.")

_CONFIG = "configs/smollm_sst2_prompt.py:data=local"


def _config(quantization: str):
  config = smollm_sst2_prompt.get_config("data=local")
  config.model.checkpoint, config.model.quantization = _GGUF.value, quantization
  config.num_steps = _STEPS.value or config.num_steps
  return config


def _peak_rss_gib(command: list[str], log: Path) -> float:
  """Runs `command` (its output to `log`); its peak resident memory."""
  with log.open("w") as out:
    process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(process.pid, 0)
  if os.waitstatus_to_exitcode(status) != 0:
    raise RuntimeError(f"{' '.join(command)} failed: see {log}")
  return usage.ru_maxrss / 2**20


def _load_peak_rss_gib(quantization: str, workdir: Path) -> float:
  """Peak resident memory of a process that only loads the backbone (imports and XLA included)."""
  workdir.mkdir(parents=True, exist_ok=True)
  return _peak_rss_gib([sys.executable, "-m", "bench.smollm_quantised", f"--gguf={_GGUF.value}",
                        f"--load_only={quantization}"], workdir / "load.log")


def _train(quantization: str, workdir: Path) -> dict:
  """Trains (or finds trained) one variant; its wall time and peak memory."""
  done = workdir / "finished.json"
  if done.exists():
    return json.loads(done.read_text())
  workdir.mkdir(parents=True, exist_ok=True)
  command = [sys.executable, "-m", "jaxprompt.train", f"--config={_CONFIG}", f"--config.model.checkpoint={_GGUF.value}",
             f"--config.model.quantization={quantization}", f"--workdir={workdir}"]
  if _STEPS.value:
    command += [f"--config.num_steps={_STEPS.value}", f"--config.eval_every={_STEPS.value}"]
  start = time.perf_counter()
  peak = _peak_rss_gib(command, workdir / "train.log")
  cost = {"train_seconds": time.perf_counter() - start, "train_peak_rss_gib": peak}
  done.write_text(json.dumps(cost))
  return cost


def _step_times(variants: list[str]) -> dict[str, float]:
  """Median seconds per train step of each variant and of PEFT (key "peft"), on the same batches,
  taking turns."""
  mesh = sharding.make_mesh({"data": 1}, devices=jax.devices()[:1])
  runs = {}
  for q in variants:
    config = _config(q)
    config.mesh.data = 1
    exp = experiment.build(config, mesh=mesh)
    runs[q] = {"exp": exp, "step": exp.train_step(), "state": exp.init_state(exp.init_params(jax.random.key(0)))}
  first = runs[variants[0]]["exp"]
  config = first.config
  it = pipeline.train_iterator(experiment.train_features(first), config.batch_size, config.seed, config.data.max_input_len,
                               config.data.max_target_len, tuple(config.data.bucket_lengths), pad_inputs_left=True)
  batches = [next(it) for _ in range(_ROUNDS.value + 1)]
  width = max(b["inputs"].shape[1] for b in batches)  # one bucket: each variant compiles once
  for b in batches:
    pad = width - b["inputs"].shape[1]
    b["inputs"] = np.pad(b["inputs"], ((0, 0), (pad, 0)))
    b["input_mask"] = np.pad(b["input_mask"], ((0, 0), (pad, 0)))
  _, peft, _ = peft_step(Path(_GGUF.value), config, batches)  # takes the same batches in the same order
  times = {q: [] for q in [*variants, "peft"]}
  for i, batch in enumerate(batches):
    for q, run in runs.items():
      start = time.perf_counter()
      run["state"], metrics = run["step"](run["state"], run["exp"].frozen, batch, jax.random.key(0))
      jax.block_until_ready(metrics)
      if i:  # the first round compiles
        times[q].append(time.perf_counter() - start)
    start = time.perf_counter()
    peft()
    if i:
      times["peft"].append(time.perf_counter() - start)
  return {q: statistics.median(t) for q, t in times.items()}


def _frozen_gib(quantization: str) -> float:
  """The loaded backbone's bytes; the backbone alone, so that a --load_only process's peak is the
  loading's (a whole experiment also reads and tokenizes the task's data)."""
  config = _config(quantization)
  mesh = sharding.make_mesh({"data": 1}, devices=jax.devices()[:1])
  backbone = load_backbone(config.model, mesh, tuple(config.rules))
  return sum(x.nbytes for x in jax.tree.leaves(backbone.frozen)) / 2**30


def main(argv):
  del argv
  if _LOAD_ONLY.value:
    _frozen_gib(_LOAD_ONLY.value)
    return
  out = Path(_OUT.value)
  variants = _VARIANTS.value
  if _STEP_TIMES_ONLY.value:
    seconds = _step_times(variants)
    print(f"{datetime.date.today().isoformat()}, {machine()}, jax {jax.__version__}\n")
    print("| frozen weights | step time | vs float32 | PEFT (float32) ÷ ours |\n|---|---|---|---|")
    for q in variants:
      print(f"| {q} | {seconds[q]:.3f} s | {seconds[q] / seconds[variants[0]]:.2f}× | {seconds['peft'] / seconds[q]:.2f}× |")
    print(f"| PEFT + transformers, float32 | {seconds['peft']:.3f} s | | |")
    return
  rows = {}
  for q in variants:
    row_file = out / q / "row.json"  # a variant measured before is not measured again
    if row_file.exists():
      rows[q] = json.loads(row_file.read_text())
      continue
    rows[q] = _train(q, out / q)
    config = _config(q)
    config.data.max_eval_examples = 0  # every dev row
    rows[q]["dev_accuracy"] = evaluate_prompt(config, str(out / q))["eval/accuracy"]
    rows[q]["frozen_weights_gib"] = _frozen_gib(q)
    rows[q]["load_peak_rss_gib"] = _load_peak_rss_gib(q, out / q)
    row_file.write_text(json.dumps(rows[q]) + "\n")
  seconds = _step_times(variants)
  for q in variants:
    rows[q]["step_seconds"] = seconds[q]
    rows[q]["peft_over_ours"] = seconds["peft"] / seconds[q]
  results = {"date": datetime.date.today().isoformat(), "machine": machine(), "jax": jax.__version__, "rows": rows,
             "peft_float32_step_seconds": seconds["peft"]}
  (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
  base = rows[variants[0]]["step_seconds"]
  print(f"{results['date']}, {results['machine']}, jax {results['jax']}\n")
  print("| frozen weights | dev accuracy (872) | step time | vs float32 | PEFT (float32) ÷ ours | frozen weights in memory |"
        " loading peak RSS | training peak RSS | training wall time |")
  print("|---|---|---|---|---|---|---|---|---|")
  for q, row in rows.items():
    print(f"| {q} | {row['dev_accuracy']:.3f} | {row['step_seconds']:.3f} s | {row['step_seconds'] / base:.2f}× |"
          f" {row['peft_over_ours']:.2f}× |"
          f" {row['frozen_weights_gib'] * 1024:.0f} MiB | {row['load_peak_rss_gib']:.2f} GiB |"
          f" {row['train_peak_rss_gib']:.2f} GiB | {row['train_seconds'] / 60:.1f} min |")


if __name__ == "__main__":
  app.run(main)
