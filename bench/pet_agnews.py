"""PET and iPET against a supervised classifier on AG News with SmolLM2-135M, each with the whole
backbone fine-tuned and on the frozen backbone: accuracy, wall time and peak memory of each.

    python -m bench.pet_agnews --gguf=.../SmolLM2-135M-Instruct.Q4_1.gguf --out=/tmp/pet-agnews

For each number of labelled examples (--labeled) the 7,600-row AG News file is split once with
`python -m jaxprompt.split --protocol=pet` (seed 42): that many balanced labelled rows, then
--num_unlabeled unlabeled rows (their labels dropped) and --num_test test rows. Then, per variant:

    supervised  the pipeline's own final classifier trained on the labelled rows alone (hard labels)
    PET         python -m jaxprompt.pet, one generation: a member per pattern, merged, distilled
    iPET        the same with generations=2; its generation 0 is PET's, copied (seeds and all)

Variants: `full` fine-tunes every weight of the members and of the classifier (PET's recipe);
`frozen` trains a soft prompt per member and P-tuning v2's deep prompt + head as the classifier.
The members train at 2e-5 (full) or 1e-2 (a prompt); a classifier's new head at 2e-5 barely moves
in this budget (PET trains its classifier 5000 steps), so the classifiers train at --head_lr.
SmolLM2 is a decoder, so the patterns end at the mask: PET's AG News pattern 3 and a second one of
the same kind (--patterns), with PET's label words. Each stage is a subprocess; its wall time and
peak resident memory (wait4's ru_maxrss) are recorded in --out/results.jsonl, and a finished stage
is not run again (every stage resumes by itself too). A pipeline's time is the sum of its members'
and its classifier's own wall times, read from the files each writes first and last, so a stage
resumed after a kill counts each piece once (iPET's includes its generation 0, PET's members).
The table goes to --out/results.md.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from absl import app, flags

_GGUF = flags.DEFINE_string("gguf", None, "SmolLM2-135M-Instruct's GGUF file.", required=True)
_OUT = flags.DEFINE_string("out", "/tmp/pet-agnews", "Where the splits, runs and results go.")
_DATA = flags.DEFINE_string("data", "../shared/data/agnews/test.tsv", "AG News rows: text<TAB>label, no header.")
_LABELED = flags.DEFINE_list("labeled", ["10", "50"], "Labelled examples per experiment.")
_VARIANTS = flags.DEFINE_list("variants", ["full", "frozen"], "full | frozen.")
_NUM_UNLABELED = flags.DEFINE_integer("num_unlabeled", 400, "Unlabeled rows (PET's distillation set).")
_NUM_TEST = flags.DEFINE_integer("num_test", 400, "Test rows.")
_STEPS = flags.DEFINE_integer("member_steps", 40, "Training steps of each member.")
_SUPERVISED_STEPS = flags.DEFINE_integer("supervised_steps", 60, "Steps of the supervised classifier.")
_CLASSIFIER_STEPS = flags.DEFINE_integer("classifier_steps", 100, "Steps of PET's distilled classifier.")
_HEAD_LR = flags.DEFINE_list("head_lr", ["1e-4", "1e-2"], "The classifiers' learning rate: full, frozen.")
_PATTERNS = flags.DEFINE_list("patterns", ["{~text|backslash_to_space} ( [MASK] )",
                                           "{~text|backslash_to_space} Category: [MASK]"],
                              "Decoder patterns (text up to the mask), PET's label words.")
_STAGE = flags.DEFINE_string("stage", "", "Internal: run one supervised stage (its workdir).")

_LEARNING_RATE = {"full": 2e-5, "frozen": 1e-2}  # AdamW, linear decay; a prompt's rate on the frozen backbone
_PIPELINE_ARGS = {"full": "train=all,classifier=all", "frozen": "train=prompt,classifier=prompt"}
_VARIANT_INDEX = {"full": 0, "frozen": 1}  # into --head_lr


def _overrides(variant: str) -> dict[str, object]:
  lr, head_lr = _LEARNING_RATE[variant], float(_HEAD_LR.value[_VARIANT_INDEX[variant]])
  return {
      "model.family": "llama", "model.checkpoint": _GGUF.value, "model.dropout_rate": 0.0,
      "data.max_input_len": 128, "data.bucket_lengths": (64, 128), "data.max_target_len": 2, "max_decode_len": 1,
      "batch_size": 8, "eval_batch_size": 32, "num_steps": _STEPS.value, "checkpoint_every": _STEPS.value,
      "optimizer.learning_rate": lr, "pet.patterns": tuple(_PATTERNS.value), "pet.repetitions": 1,
      "pet.classifier.num_steps": _CLASSIFIER_STEPS.value, "pet.classifier.batch_size": 8,
      "pet.classifier.learning_rate": head_lr,
  }


def _config_arg(split: Path, variant: str, generations: int) -> str:
  return f"configs/pet.py:task=agnews_text,split={split},generations={generations},{_PIPELINE_ARGS[variant]}"


def _measured(command: list[str], log: Path) -> dict[str, float]:
  """Runs `command`, its output to `log`; its wall time and peak resident memory."""
  start = time.perf_counter()
  with log.open("w") as out:
    process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(process.pid, 0)
  if os.waitstatus_to_exitcode(status) != 0:
    raise RuntimeError(f"{' '.join(command)} failed: see {log}")
  return {"seconds": time.perf_counter() - start, "peak_rss_gib": usage.ru_maxrss / 2**20}


def _split(n: int, out: Path) -> Path:
  folder = out / f"split-{n}"
  if not (folder / "split.json").exists():
    subprocess.run([sys.executable, "-m", "jaxprompt.split", "--protocol=pet", f"--input={_DATA.value}",
                    "--columns=text,label", f"--num_labeled={n}", f"--num_unlabeled={_NUM_UNLABELED.value}",
                    f"--num_test={_NUM_TEST.value}", "--seed=42", f"--out={folder}"], check=True)
  return folder


def _pet_command(split: Path, variant: str, generations: int, workdir: Path) -> list[str]:
  flags_ = [f"--config.{key}={value!r}" if isinstance(value, tuple) else f"--config.{key}={value}"
            for key, value in _overrides(variant).items()]
  return [sys.executable, "-m", "jaxprompt.pet", f"--config={_config_arg(split, variant, generations)}", *flags_,
          f"--workdir={workdir}"]


def _supervised(workdir: Path) -> None:
  """The pipeline's final classifier, trained on the labelled rows with their labels."""
  from configs import pet
  from jaxprompt import evaluation
  from jaxprompt.fewshot.pet_pipeline import Pipeline
  from jaxprompt.training import train_and_evaluate

  spec = json.loads((workdir / "stage.json").read_text())
  config = pet.get_config(spec["config"].split(":", 1)[1])
  for key, value in spec["overrides"].items():
    *path, name = key.split(".")
    node = config
    for part in path:
      node = node[part]
    node[name] = tuple(value) if isinstance(value, list) else value
  run = Pipeline(config, workdir).classifier_config(config.pet.labeled)
  run.task.teacher_field = ""  # hard labels: the labelled rows' own
  run.num_steps = run.eval_every = run.checkpoint_every = spec["steps"]
  train_and_evaluate(run, str(workdir / "run"))
  metrics = evaluation.evaluate_prompt(run, str(workdir / "run"))
  (workdir / "result.json").write_text(json.dumps({"accuracy": metrics["eval/accuracy"]}) + "\n")


def _stage(name: str, n: int, variant: str, out: Path, done: dict) -> None:
  key = f"{n}/{variant}/{name}"
  if key in done:
    return
  split, workdir = _split(n, out), out / str(n) / variant / name
  workdir.mkdir(parents=True, exist_ok=True)
  if name == "supervised":
    (workdir / "stage.json").write_text(json.dumps({"config": _config_arg(split, variant, 1),
                                                    "overrides": _overrides(variant),
                                                    "steps": _SUPERVISED_STEPS.value}))
    command = [sys.executable, "-m", "bench.pet_agnews", f"--gguf={_GGUF.value}", f"--stage={workdir}"]
  else:
    if name == "ipet" and not (workdir / "g0").exists():  # generation 0 is PET's, seeds and all
      shutil.copytree(out / str(n) / variant / "pet" / "g0", workdir / "g0")
    command = _pet_command(split, variant, 2 if name == "ipet" else 1, workdir)
  cost = _measured(command, workdir / "log.txt")
  if name == "supervised":
    accuracy = json.loads((workdir / "result.json").read_text())["accuracy"]
    result = {"accuracy": accuracy}
  else:
    report = json.loads((workdir / "report.json").read_text())
    result = {"accuracy": report["distilled"]["accuracy"], "ensemble": report["ensemble"]["accuracy"],
              "members": report["members"], "pipeline_seconds": _pipeline_seconds(workdir)}
  done[key] = {"labeled": n, "variant": variant, "stage": name, **cost, **result}
  with (out / "results.jsonl").open("a") as f:
    f.write(json.dumps(done[key]) + "\n")


def _pipeline_seconds(workdir: Path) -> float:
  """Each member's time (its train.jsonl is written first, its member.json last) and the
  classifier's (distill.jsonl first, report.json last), summed."""
  mtime = lambda path: path.stat().st_mtime
  members = sum(mtime(m / "member.json") - mtime(m / "train.jsonl") for m in workdir.glob("g*/p*"))
  return members + mtime(workdir / "report.json") - mtime(workdir / "final" / "distill.jsonl")


def _table(done: dict) -> str:
  lines = ["| labelled | variant | method | test accuracy | ensemble | wall time | peak memory |",
           "|---|---|---|---|---|---|---|"]
  for row in done.values():
    seconds = row.get("pipeline_seconds", row["seconds"])
    ensemble = f"{row['ensemble']:.3f}" if "ensemble" in row else "–"
    lines.append(f"| {row['labeled']} | {row['variant']} | {row['stage']} | {row['accuracy']:.3f} | {ensemble} |"
                 f" {seconds / 60:.1f} min | {row['peak_rss_gib']:.1f} GiB |")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  if _STAGE.value:
    _supervised(Path(_STAGE.value))
    return
  out = Path(_OUT.value)
  out.mkdir(parents=True, exist_ok=True)
  results = out / "results.jsonl"
  done = {}
  for line in results.read_text().splitlines() if results.exists() else []:
    row = json.loads(line)
    done[f"{row['labeled']}/{row['variant']}/{row['stage']}"] = row
  for n in map(int, _LABELED.value):
    for variant in _VARIANTS.value:
      for name in ("supervised", "pet", "ipet"):
        _stage(name, n, variant, out, done)
        (out / "results.md").write_text(_table(done))
  print(_table(done))


if __name__ == "__main__":
  app.run(main)
