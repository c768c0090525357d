"""CoNLL-style token files: one token per line, its columns separated by spaces or tabs, the token
first and its tag last; a blank line ends a sentence; `-DOCSTART-` lines (CoNLL-2003's document
marks) are skipped and also end a sentence.

    EU B-ORG          (or, as CoNLL-2003 writes it: EU NNP B-NP B-ORG)
    rejects O

One record per sentence: {"tokens": [...], "tags": [...]}, where "<file>:<line of its first token>".
A sentence whose lines all have a single column has no tags (unlabeled data): no "tags" field.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from jaxprompt.tasks.records import DataError, Record

DOCSTART = "-DOCSTART-"
_COLUMN_SEPARATOR = re.compile(r"[ \t]+")


def read_conll(path: str) -> Iterator[Record]:
  """One record per sentence of a CoNLL file."""
  rows: list[list[str]] = []
  start = 0
  with open(path, encoding="utf-8") as f:
    for line_no, line in enumerate(f, start=1):
      # Only spaces and tabs separate columns: str.split() would also split at a no-break space in a token.
      text = line.strip(" \t\r\n")
      columns = _COLUMN_SEPARATOR.split(text) if text else []
      if columns and columns[0] != DOCSTART:
        if not rows:
          start = line_no
        rows.append(columns)
      elif rows:
        yield _sentence(rows, path, start)
        rows = []
  if rows:
    yield _sentence(rows, path, start)


def _sentence(rows: list[list[str]], path: str, start: int) -> Record:
  """The record of a sentence whose first token is on line `start`."""
  where = f"{path}:{start}"
  untagged = {len(columns) == 1 for columns in rows}
  if untagged == {True}:
    return Record({"tokens": [columns[0] for columns in rows]}, where)
  if True in untagged:  # some lines have a tag and some do not
    line = start + next(i for i, columns in enumerate(rows) if len(columns) == 1)
    raise DataError(
        f"{path}:{line}: the token {rows[line - start][0]!r} has no tag column, unlike others of its sentence"
    )
  return Record({"tokens": [columns[0] for columns in rows], "tags": [columns[-1] for columns in rows]}, where)
