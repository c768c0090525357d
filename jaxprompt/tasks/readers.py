"""Read a DataSource into Records: local jsonl / tsv / csv / conll files, or a prepared TFDS dataset.

Every record remembers where it came from ("<file>:<line>", 1-based, or "<tfds_name>/<split>[<i>]")
so that a bad example can be named exactly, long after reading. MultiRC's nested passages become
one record per answer option with `flatten_multirc`.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from jaxprompt.tasks.conll import read_conll
from jaxprompt.tasks.records import DataError, Record
from jaxprompt.tasks.task_spec import DataSource

_DELIMITERS = {"tsv": "\t", "csv": ","}
# TFDS's paragraphs carry the original HTML ("<b>Sent 1: </b>...<br>"); T5's preprocessor drops it.
_LINE_BREAK = re.compile(r"<br>")
_BOLD = re.compile(r"</?b>")


def read_records(source: DataSource) -> list[Record]:
  """Every record of `source`, files concatenated in order."""
  if source.kind == "tfds":
    return read_tfds(source.tfds_name, source.split, source.data_dir)
  for name in source.files:
    if not Path(name).is_file():
      raise FileNotFoundError(f"No such data file: {name!r} (in {source})")
  records = []
  for name in source.files:
    if source.kind == "jsonl":
      records.extend(read_jsonl(name))
    elif source.kind == "conll":
      records.extend(read_conll(name))
    else:
      records.extend(read_delimited(name, _DELIMITERS[source.kind], source.columns))
  return records


def read_jsonl(path: str) -> Iterator[Record]:
  """One record per non-blank line, each a JSON object."""
  with open(path, encoding="utf-8") as f:
    for line_no, line in enumerate(f, start=1):
      if not line.strip():
        continue
      where = f"{path}:{line_no}"
      try:
        fields = json.loads(line)
      except json.JSONDecodeError as e:
        raise DataError(f"{where}: malformed JSON ({e.msg} at column {e.colno}): {line.strip()[:80]!r}") from e
      if not isinstance(fields, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(fields).__name__}")
      yield Record(fields, where)


def read_delimited(path: str, delimiter: str, columns: tuple[str, ...] = ()) -> Iterator[Record]:
  """One record per row; with no `columns`, the first row is the header. Values stay strings.

  Fields may be quoted as in CSV (a field starting with '"', with "" for a literal quote): the
  AG News tsv is written that way, and GLUE's tsv files parse the same either way.
  """
  with open(path, encoding="utf-8", newline="") as f:
    reader = csv.reader(f, delimiter=delimiter)
    header = tuple(columns)
    line_no = 1
    try:
      for row in reader:
        # A quoted field may span lines: the row starts on the line after the previous row's end.
        start, line_no = line_no, reader.line_num + 1
        if not row:
          continue
        where = f"{path}:{start}"
        if not header:
          header = tuple(row)
          if len(set(header)) != len(header):
            raise DataError(f"{where}: duplicate column names in the header {list(header)}")
          continue
        if len(row) != len(header):
          raise DataError(
              f"{where}: expected {len(header)} columns {list(header)}, got {len(row)}: {row!r:.120}"
          )
        yield Record(dict(zip(header, row)), where)
    except csv.Error as e:
      raise DataError(f"{path}:{line_no}: {e}") from e


def read_tfds(name: str, split: str, data_dir: str | None = None) -> list[Record]:
  """Every element of a prepared TFDS dataset, read through its array_record data source (no TensorFlow)."""
  try:
    source = tfds.data_source(name, split=split, data_dir=data_dir)
  except tfds.core.DatasetNotFoundError as e:
    # TFDS's own message lists every dataset it knows; what matters is where it looked.
    raise FileNotFoundError(
        f"TFDS dataset {name!r} is not prepared under data_dir={data_dir or 'TFDS default'} and cannot be"
        " built here (without TensorFlow TFDS only reads datasets already prepared as array_record,"
        f" e.g. by `tfds build --file_format=array_record`): {str(e).splitlines()[0]}"
    ) from e
  return [Record(to_python(source[i]), f"{name}/{split}[{i}]") for i in range(len(source))]


def to_python(value: Any) -> Any:
  """A TFDS element as plain Python: bytes to str, numpy scalars and arrays to numbers and lists."""
  if isinstance(value, dict):
    return {key: to_python(v) for key, v in value.items()}
  if isinstance(value, bytes):
    return value.decode("utf-8")
  if isinstance(value, np.ndarray):
    return to_python(value.item()) if value.ndim == 0 else [to_python(v) for v in value]
  if isinstance(value, np.generic):
    return to_python(value.item())
  if isinstance(value, (list, tuple)):
    return [to_python(v) for v in value]
  return value


def flatten_multirc(records: Iterable[Record]) -> list[Record]:
  """One record per (passage, question, answer): fields paragraph, question, answer, label, idx, group.

  Reads the official / FewGLUE jsonl (passage.text, passage.questions[].answers[]) and TFDS's
  super_glue/multirc, which is already flat with idx.{paragraph,question,answer}. `group` numbers the
  questions 0, 1, ... in order of first appearance; records that have one pass through unchanged, so
  flattening twice is harmless. `label` is absent for unlabeled answers.
  """
  flat: list[Record] = []
  groups: dict[tuple[Any, Any], int] = {}
  for record in records:
    fields = record.fields
    if "passage" in fields:
      flat.extend(_flatten_passage(record, groups))
    elif "group" in fields:  # flattened here before
      flat.append(record)
    elif "paragraph" in fields:
      idx = fields.get("idx")
      if not isinstance(idx, dict) or "paragraph" not in idx or "question" not in idx:
        raise DataError(f"{record.where}: a flat MultiRC record needs idx.paragraph and idx.question, got idx={idx!r}")
      group = groups.setdefault((idx["paragraph"], idx["question"]), len(groups))
      paragraph = _strip_html(_text(fields, "paragraph", record.where))
      flat.append(Record({**fields, "paragraph": paragraph, "group": group}, record.where))
    else:
      raise DataError(
          f"{record.where}: not a MultiRC record: expected a 'passage' (jsonl) or 'paragraph' (TFDS)"
          f" field, got fields {sorted(fields)}"
      )
  return flat


def _flatten_passage(record: Record, groups: dict[tuple[Any, Any], int]) -> list[Record]:
  passage = record.fields["passage"]
  if not isinstance(passage, dict) or not isinstance(passage.get("questions"), list):
    raise DataError(f"{record.where}: passage must be an object with a 'questions' list")
  paragraph = _strip_html(_text(passage, "text", record.where, "passage.text"))
  flat = []
  for qi, question in enumerate(passage["questions"]):
    where_q = f"{record.where} (question {qi})"
    if not isinstance(question, dict) or not isinstance(question.get("answers"), list):
      raise DataError(f"{where_q}: a question must be an object with an 'answers' list")
    # Keyed by position, not the file's ids: concatenated files may reuse them.
    group = groups.setdefault(("passage", record.where, qi), len(groups))
    for ai, answer in enumerate(question["answers"]):
      where = f"{record.where} (question {qi}, answer {ai})"
      if not isinstance(answer, dict):
        raise DataError(f"{where}: an answer must be an object, got {answer!r:.80}")
      fields = {
          "paragraph": paragraph,
          "question": _text(question, "question", where),
          "answer": _text(answer, "text", where, "answer text"),
          "idx": {"paragraph": record.fields.get("idx"), "question": question.get("idx"), "answer": answer.get("idx")},
          "group": group,
      }
      if "label" in answer:
        fields["label"] = answer["label"]
      flat.append(Record(fields, where))
  return flat


def _text(obj: dict[str, Any], key: str, where: str, what: str | None = None) -> str:
  if not isinstance(obj.get(key), str):
    raise DataError(f"{where}: MultiRC {what or key} must be a string, got {obj.get(key)!r:.80}")
  return obj[key]


def _strip_html(text: str) -> str:
  return _BOLD.sub("", _LINE_BREAK.sub(" ", text))
