"""Five SmolLM2 SST-2 prompts trained with different seeds, served from one bank: each prompt's
accuracy on the whole SST-2 dev set, their mean, and the one-pass prompt ensemble's (Lester et al.
2021, sec. 6: every dev example repeated once per prompt in the same mixed batches).

    python -m bench.sst2_prompt_ensemble --gguf=.../SmolLM2-135M-Instruct.Q4_1.gguf --out=/tmp/sst2-ensemble

Each prompt is the README's demo run (configs/smollm_sst2_prompt.py:data=local: a 16-token soft
prompt, 150 steps of batch 8) with `config.seed` = 0..--prompts-1, which changes its data order
(the init, from the label words' embeddings, is the same for all). Each trains as its own
subprocess into --out/seed<i> and resumes there (a finished run is not trained again). The bank is
then the five workdirs (their best checkpoints) on one frozen backbone, and the dev set is all
872 rows of ../shared/data/sst2/dev.tsv. Each member's own accuracy is read from the same
ensemble pass (its copy of each example), and checked against serving that prompt alone on a
slice of the dev set. Results: a markdown table on stdout and --out/results.json.
"""

from __future__ import annotations

import datetime
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
from absl import app, flags

from jaxprompt.serving.bank_file import config_with_overrides
from jaxprompt.serving.bank import load_bank
from jaxprompt.serving.ensemble import ensemble_classify
from jaxprompt.serving.loading import PromptSource
from jaxprompt.serving.requests import Request, serve
from jaxprompt.tasks import readers

_GGUF = flags.DEFINE_string("gguf", None, "SmolLM2-135M-Instruct's GGUF file.", required=True)
_OUT = flags.DEFINE_string("out", "/tmp/sst2-ensemble", "Where the five runs and the results go.")
_PROMPTS = flags.DEFINE_integer("prompts", 5, "How many prompts (seeds 0..N-1).")
_CHECK_ROWS = flags.DEFINE_integer("check_rows", 80, "Dev rows each prompt is also served alone on.")

_CONFIG = "configs/smollm_sst2_prompt.py:data=local"


def _train(seed: int, workdir: Path) -> float:
  """Trains (or resumes) one prompt; its wall seconds (0 when it had finished before)."""
  if (workdir / "finished.json").exists():
    return 0.0
  start = time.perf_counter()
  subprocess.run([sys.executable, "-m", "jaxprompt.train", f"--config={_CONFIG}",
                  f"--config.model.checkpoint={_GGUF.value}", f"--config.seed={seed}", f"--workdir={workdir}"],
                 check=True, stdout=(workdir.parent / f"train-seed{seed}.log").open("w"), stderr=subprocess.STDOUT)
  seconds = time.perf_counter() - start
  (workdir / "finished.json").write_text(json.dumps({"seconds": seconds}))
  return seconds


def main(argv):
  del argv
  out = Path(_OUT.value)
  out.mkdir(parents=True, exist_ok=True)
  names = [f"seed{i}" for i in range(_PROMPTS.value)]
  train_seconds = {name: _train(i, out / name) for i, name in enumerate(names)}
  config = config_with_overrides(_CONFIG, {"model.checkpoint": _GGUF.value}, "backbone")
  bank = load_bank(config, [PromptSource(name, config, str(out / name)) for name in names])
  spec = bank.prompts[0].spec
  records = [r.fields for r in readers.read_records(config.data.eval)]  # all of it: the config caps eval at 200
  gold = [spec.label_names[int(r["label"])] for r in records]
  fields = [{"sentence": r["sentence"]} for r in records]

  start = time.perf_counter()
  answers = ensemble_classify(bank, names, fields, "vote")
  ensemble_seconds = time.perf_counter() - start
  accuracy = lambda labels: float(np.mean([a == b for a, b in zip(labels, gold, strict=True)]))
  members = {name: accuracy([a.members[name] for a in answers]) for name in names}
  vote = accuracy([a.label for a in answers])
  # The mean reduction from the same pass: each answer's scores are the members' mean log-probs.
  mean = accuracy([max(a.scores, key=a.scores.get) for a in answers])

  alone_agrees = {}
  for name in names:  # a member's copies in the mixed pass answer as that prompt served alone does
    alone = serve(bank, [Request(name, f) for f in fields[: _CHECK_ROWS.value]])
    alone_agrees[name] = float(np.mean([r.label == a.members[name] for r, a in zip(alone, answers, strict=False)]))

  result = {
      "date": datetime.date.today().isoformat(), "cpu": _cpu(), "jax": jax.__version__, "dev_rows": len(records),
      "members": members, "member_mean": float(np.mean(list(members.values()))),
      "member_std": float(np.std(list(members.values()))), "ensemble_vote": vote, "ensemble_mean": mean,
      "ensemble_pass_seconds": ensemble_seconds, "train_seconds": train_seconds, "alone_agrees": alone_agrees,
  }
  (out / "results.json").write_text(json.dumps(result, indent=1))
  print("| prompt | dev accuracy |\n|---|---|")
  for name, acc in members.items():
    print(f"| {name} | {acc:.3f} |")
  print(f"| mean (std) of the {len(names)} | {result['member_mean']:.3f} ({result['member_std']:.3f}) |")
  print(f"| one-pass ensemble, majority vote | {vote:.3f} |\n| one-pass ensemble, mean log-prob | {mean:.3f} |")
  print(json.dumps(result))


def _cpu() -> str:
  for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
    if line.startswith("model name"):
      return line.split(":", 1)[1].strip()
  return platform.processor()


if __name__ == "__main__":
  app.run(main)
