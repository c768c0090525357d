"""Few-shot data splits of one labelled file: LM-BFF's K-shot train / dev sets, PET's labeled / unlabeled / test.

Rows are written exactly as they stand in the source (its bytes, its header row), so that a split
can be checked against the original and read by the same DataSource. Unlabeled rows are the one
exception: they lose their label field (jsonl) or column (tsv / csv), which is what tells
jaxprompt's featurizer a record has no label. Every split folder gets a split.json naming the
source (path, sha256), the seed and settings, and each file's size and per-label counts.

Both protocols shuffle as numpy's legacy global RNG does after `np.random.seed(seed)`, as LM-BFF's
tools/generate_k_shot_data.py does before `np.random.shuffle(lines)`: a RandomState of the seed
draws the same permutation without touching numpy's global state.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jaxprompt.tasks.readers import read_delimited, read_jsonl
from jaxprompt.tasks.records import DataError, Record

LMBFF_SEEDS = (13, 21, 42, 87, 100)
KINDS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl"}
_DELIMITERS = {"tsv": "\t", "csv": ","}


@dataclasses.dataclass(frozen=True)
class Row:
  """One record and its text exactly as in the file: one line, or several for a quoted line break."""

  record: Record
  text: str


@dataclasses.dataclass(frozen=True)
class Table:
  """A data file's rows in file order, with what it takes to write them back in the same format."""

  path: str
  kind: str  # tsv, csv or jsonl
  columns: tuple[str, ...]  # a tsv/csv file's column names (from its header or given); () for jsonl
  header: str  # the header row as in the file; "" when there is none
  line_end: str  # the file's line ending, for a last row that has none
  rows: tuple[Row, ...]


def read_table(path: str, columns: Sequence[str] = ()) -> Table:
  """A .tsv / .csv (first row the header unless `columns` names them) or .jsonl file, read by tasks/readers.py."""
  kind = KINDS.get(Path(path).suffix)
  if kind is None:
    raise ValueError(f"{path}: a split reads .tsv, .csv or .jsonl files, not {Path(path).suffix or 'no suffix'!r}")
  if kind == "jsonl" and columns:
    raise ValueError(f"{path}: columns name a header-less tsv/csv file's columns; a jsonl row names its own fields")
  records = list(read_jsonl(path) if kind == "jsonl" else read_delimited(path, _DELIMITERS[kind], tuple(columns)))
  if not records:
    raise DataError(f"{path}: no rows")
  # Split at the same line breaks (\n, \r, \r\n) as the readers count lines by, so `where` indexes `lines`.
  with open(path, encoding="utf-8", newline="") as f:
    lines = f.readlines()
  starts = [int(r.where.rsplit(":", 1)[1]) for r in records]
  ends = starts[1:] + [len(lines) + 1]
  rows = tuple(Row(r, _record_text(lines[s - 1:e - 1])) for r, s, e in zip(records, starts, ends))
  has_header = kind != "jsonl" and not columns
  return Table(
      path=path, kind=kind, columns=tuple(records[0].fields) if kind != "jsonl" else (),
      header=_record_text(lines[:starts[0] - 1]) if has_header else "",
      line_end=_line_end(lines[0]) or "\n", rows=rows,
  )


def _record_text(lines: list[str]) -> str:
  """A record's lines up to the next record's: its first line, any continuation, not the blank lines after."""
  last = max((i for i, line in enumerate(lines) if line.strip()), default=0)
  return "".join(lines[:last + 1])


def _line_end(text: str) -> str:
  return next((end for end in ("\r\n", "\n", "\r") if text.endswith(end)), "")


def row_labels(table: Table, label_column: str, threshold: float | None = None) -> list[str]:
  """Each row's label, as text; with a `threshold` a regression score's bin: "<t" or ">=t" (LM-BFF's STS-B: 2.5)."""
  labels = []
  for row in table.rows:
    value = row.record.fields.get(label_column)
    if value is None or value == "" or isinstance(value, (dict, list)):
      raise DataError(f"{row.record.where}: no {label_column!r} label (fields {sorted(row.record.fields)})")
    if threshold is None:
      labels.append(str(value))
      continue
    try:
      score = float(value)
    except ValueError:
      raise DataError(f"{row.record.where}: the score {value!r} in {label_column!r} is not a number") from None
    labels.append(f"<{threshold:g}" if score < threshold else f">={threshold:g}")
  return labels


def legacy_shuffle_order(n: int, seed: int) -> np.ndarray:
  """The order `np.random.seed(seed); np.random.shuffle(items)` puts n items in (numpy's legacy Mersenne Twister)."""
  return np.random.RandomState(seed).permutation(n)


def kshot_split(labels: Sequence[str], k: int, seed: int, dev_multiplier: int = 1,
                source: str = "the data") -> dict[str, list[int]]:
  """LM-BFF's K-shot train and dev sets for one seed: row indices, grouped by label.

  The rows are shuffled, grouped by label in the order labels first appear in the shuffled rows;
  train is each label's first k rows, dev its next k * dev_multiplier (LM-BFF's k-shot-10x mode: 10).
  """
  if k < 1 or dev_multiplier < 1:
    raise ValueError(f"K-shot needs k >= 1 and dev_multiplier >= 1, got k={k}, dev_multiplier={dev_multiplier}")
  groups: dict[str, list[int]] = {}
  for i in legacy_shuffle_order(len(labels), seed):
    groups.setdefault(labels[i], []).append(int(i))
  need = k * (1 + dev_multiplier)
  _check_enough(groups, dict.fromkeys(groups, need), source, f"K={k} train + {k * dev_multiplier} dev")
  return {"train": [i for rows in groups.values() for i in rows[:k]],
          "dev": [i for rows in groups.values() for i in rows[k:need]]}


def pet_split(labels: Sequence[str], seed: int, num_labeled: int, num_unlabeled: int, num_test: int | None = None,
              balanced: bool = True, source: str = "the data") -> dict[str, list[int]]:
  """PET's labeled / unlabeled / test row indices, in shuffled order; 0 labeled means none (not all: pet#66).

  Balanced, `num_labeled` is split evenly across labels as PET v1.1 does (eq_div: the first
  num_labeled % L labels, in order of first appearance in the file, get one more), each label's
  first rows in shuffled order; unbalanced, the first num_labeled rows. Unlabeled is the next
  `num_unlabeled` of the rest; test the next `num_test` after those (None: all the rest).
  """
  if min(num_labeled, num_unlabeled, 0 if num_test is None else num_test) < 0:
    raise ValueError(f"split sizes must be >= 0, got {num_labeled} labeled, {num_unlabeled} unlabeled, {num_test} test")
  order = [int(i) for i in legacy_shuffle_order(len(labels), seed)]
  if balanced:
    names = list(dict.fromkeys(labels))
    quota = {name: num_labeled // len(names) + (j < num_labeled % len(names)) for j, name in enumerate(names)}
    groups: dict[str, list[int]] = {name: [] for name in names}
    for i in order:
      groups[labels[i]].append(i)
    _check_enough(groups, quota, source, f"{num_labeled} labeled split evenly")
    chosen = {i for name in names for i in groups[name][:quota[name]]}
    labeled, rest = [i for i in order if i in chosen], [i for i in order if i not in chosen]
  else:
    labeled, rest = order[:num_labeled], order[num_labeled:]
  wanted = num_unlabeled + (num_test or 0)
  if len(labeled) < num_labeled or len(rest) < wanted:
    raise ValueError(f"{source} has {len(labels)} rows; {num_labeled} labeled + {num_unlabeled} unlabeled"
                     f" + {num_test or 0} test need {num_labeled + wanted}")
  test_end = len(rest) if num_test is None else num_unlabeled + num_test
  return {"labeled": labeled, "unlabeled": rest[:num_unlabeled], "test": rest[num_unlabeled:test_end]}


def _check_enough(groups: dict[str, list[int]], need: dict[str, int], source: str, what: str) -> None:
  short = [f"{name!r} has {len(groups[name])}, needs {n}" for name, n in need.items() if len(groups[name]) < n]
  if short:
    raise ValueError(f"{source}: too few rows per label for {what}: label " + "; label ".join(short))


def write_kshot(path: str, out_dir: str, label_column: str, k: int = 16, seeds: Sequence[int] = LMBFF_SEEDS,
                dev_multiplier: int = 1, threshold: float | None = None, columns: Sequence[str] = (),
                task: str | None = None) -> list[Path]:
  """LM-BFF's K-shot splits of `path` in out_dir/<task>/<k>-<seed>/ (train, dev, split.json); the folders."""
  table = read_table(path, columns)
  labels = row_labels(table, label_column, threshold)
  task_dir = Path(out_dir) / (task or Path(path).resolve().parent.name)
  folders = []
  for seed in seeds:
    parts = kshot_split(labels, k, seed, dev_multiplier, source=path)
    folder = task_dir / f"{k}-{seed}"
    settings = {"protocol": "kshot", "seed": seed, "k": k, "dev_multiplier": dev_multiplier}
    _write_split(folder, table, parts, labels, label_column, threshold, settings)
    folders.append(folder)
  return folders


def write_pet(path: str, out_dir: str, label_column: str, seed: int, num_labeled: int, num_unlabeled: int,
              num_test: int | None = None, balanced: bool = True, threshold: float | None = None,
              columns: Sequence[str] = ()) -> Path:
  """PET's labeled / unlabeled (labels removed) / test split of `path` in out_dir, with split.json; the folder."""
  table = read_table(path, columns)
  labels = row_labels(table, label_column, threshold)
  parts = pet_split(labels, seed, num_labeled, num_unlabeled, num_test, balanced, source=path)
  settings = {"protocol": "pet", "seed": seed, "num_labeled": num_labeled, "num_unlabeled": num_unlabeled,
              "num_test": num_test, "balanced": balanced}
  _write_split(Path(out_dir), table, parts, labels, label_column, threshold, settings, unlabeled="unlabeled")
  return Path(out_dir)


def _write_split(folder: Path, table: Table, parts: dict[str, list[int]], labels: Sequence[str], label_column: str,
                 threshold: float | None, settings: dict, unlabeled: str = "") -> None:
  """Each part as <name>.<suffix> (part `unlabeled` without its labels) and split.json describing them all."""
  suffix = Path(table.path).suffix
  targets = [folder / f"{name}{suffix}" for name in parts]
  if Path(table.path).resolve() in {t.resolve() for t in targets}:
    raise ValueError(f"{table.path}: the split would overwrite its own source; write it to another folder")
  folder.mkdir(parents=True, exist_ok=True)
  files = {}
  for (name, indices), target in zip(parts.items(), targets):
    rows = [table.rows[i] for i in indices]
    strip = name == unlabeled
    with open(target, "w", encoding="utf-8", newline="") as f:
      if strip:
        f.write(_unlabeled_header(table, label_column))
        f.writelines(_unlabeled_text(table, row, label_column) for row in rows)
      else:
        f.write(table.header)
        f.writelines(row.text if _line_end(row.text) else row.text + table.line_end for row in rows)
    counts = dict.fromkeys(labels, 0)  # every label, in file order, even those a part has none of
    for i in indices:
      counts[labels[i]] += 1
    files[name] = {"file": target.name, "rows": len(rows), "labels": counts, "labeled": not strip}
    if table.columns:
      files[name]["columns"] = [c for c in table.columns if not (strip and c == label_column)]
  with open(table.path, "rb") as f:
    sha256 = hashlib.sha256(f.read()).hexdigest()
  description = {"source": table.path, "sha256": sha256, "source_rows": len(table.rows), **settings,
                 "label_column": label_column, "regression_threshold": threshold, "files": files}
  (folder / "split.json").write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")


def _unlabeled_header(table: Table, label_column: str) -> str:
  if not table.header:
    return ""
  return _delimited_text([c for c in table.columns if c != label_column], table.kind, _line_end(table.header))


def _unlabeled_text(table: Table, row: Row, label_column: str) -> str:
  """The row without its label: the source's other fields, quoted as csv quotes them (as the AG News tsv is)."""
  fields = {key: value for key, value in row.record.fields.items() if key != label_column}
  end = _line_end(row.text) or table.line_end
  if table.kind == "jsonl":
    return json.dumps(fields, ensure_ascii=False) + end
  return _delimited_text(list(fields.values()), table.kind, end)


def _delimited_text(values: list[str], kind: str, end: str) -> str:
  text = io.StringIO()
  csv.writer(text, delimiter=_DELIMITERS[kind], lineterminator=end or "\n").writerow(values)
  return text.getvalue()
