"""The PET pipeline's report: per pattern and generation the members' accuracy before training
(their ensemble weight) and on the test set, mean (std) over repetitions; then the merged
ensemble and the distilled classifier on the test set. Written as report.md and report.json."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
from etils import epath

from jaxprompt.tasks.task_spec import TaskSpec


def _mean_std(values: Sequence[float | None]) -> str:
  values = [v for v in values if v is not None]
  if not values:
    return "–"
  return f"{np.mean(values):.3f}" + (f" ({np.std(values):.3f})" if len(values) > 1 else "")


def write(workdir: epath.Path, specs: Sequence[TaskSpec], members: dict, final: dict[str, Any]) -> dict[str, Any]:
  """Writes workdir/report.md and report.json; returns the report's numbers."""
  metric = specs[0].metric
  rows = []
  for generation in sorted({m.generation for m in members}):
    for p, spec in enumerate(specs):
      results = [r for m, r in members.items() if m.generation == generation and m.pattern == p]
      rows.append({
          "generation": generation, "pattern": spec.pattern, "repetitions": len(results),
          "train_examples": [r["train_examples"] for r in results],
          "before": [r["train_accuracy_before"] for r in results],
          "test": [r["test"][metric] if metric in r["test"] else r["test"]["accuracy"] for r in results],
      })
  numbers = {"metric": metric, "members": rows, **final}
  lines = [f"| generation | pattern | examples | train accuracy before training | test {metric} |", "|---|---|---|---|---|"]
  for row in rows:
    lines.append(f"| {row['generation']} | `{row['pattern']}` | {_mean_std(row['train_examples'])} |"
                 f" {_mean_std(row['before'])} | {_mean_std(row['test'])} |")
  for name in ("ensemble", "distilled"):
    value = final[name].get(metric, final[name].get("accuracy"))
    lines.append(f"| {name} | | | | {value:.3f} |")
  (workdir / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
  (workdir / "report.json").write_text(json.dumps(numbers, indent=1, sort_keys=True) + "\n", encoding="utf-8")
  return numbers
