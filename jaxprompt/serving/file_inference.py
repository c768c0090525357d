"""Batch inference over a jsonl file with a prompt bank: each line a request, prompts mixed freely.

An input line is a JSON object: "prompt" names a bank prompt, every other key is a field its task
reads (`{"prompt": "sst2-seed0", "sentence": "a gem of a film"}`). Its output line says which input
line it answers and what the bank gives: the label and every label's score, and the generated
text where the backbone generates. A bad line — not JSON, no such prompt, a field its task lacks —
is reported as file:line and either stops the run (the default) or is left out, counted in the
summary. Inputs longer than the bank's max_input_len are cut as in training (its task's rule).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from jaxprompt.serving.bank import PromptBank
from jaxprompt.serving.requests import Request, Response, render, serve

PROMPT_KEY = "prompt"


class BadLineError(ValueError):
  """An input line that cannot be served: the message names the file and line."""


@dataclasses.dataclass
class Summary:
  served: int = 0
  skipped: int = 0
  problems: list[str] = dataclasses.field(default_factory=list)  # "file:line: why", for each skipped line


def request_of_line(bank: PromptBank, line: str, where: str) -> Request:
  """The line's request, rendered once on its own so that a bad one never reaches a batch."""
  try:
    fields = json.loads(line)
  except json.JSONDecodeError as e:
    raise BadLineError(f"{where}: not JSON ({e.msg} at column {e.colno})") from None
  if not isinstance(fields, dict) or not isinstance(fields.get(PROMPT_KEY), str):
    raise BadLineError(f'{where}: needs a JSON object with "{PROMPT_KEY}": the name of one of the bank\'s prompts')
  name = fields.pop(PROMPT_KEY)
  names = [p.name for p in bank.prompts]
  if name not in names:
    raise BadLineError(f"{where}: no prompt {name!r} in the bank; it holds {names}")
  request = Request(name, fields)
  try:
    (feature,) = render(bank, [request])
  except ValueError as e:  # DataError: a missing field, an input too long to render
    raise BadLineError(f"{where}: {e}") from None
  return dataclasses.replace(request, rendered=(bank.prompts[bank.prompt_id(name)].spec, feature))


def response_row(line_number: int, request: Request, response: Response) -> dict[str, Any]:
  row: dict[str, Any] = {"line": line_number, PROMPT_KEY: request.prompt}
  if response.label is not None:
    row.update(label=response.label, scores=response.scores)
  if response.text is not None:
    row["text"] = response.text
  return row


def infer_file(bank: PromptBank, input_path: str, output_path: str, skip_bad_lines: bool = False,
               chunk_size: int = 1024, progress: Callable[[int], None] | None = None) -> Summary:
  """Serves every line of `input_path` into `output_path`, in order, `chunk_size` lines per call
  (one call sorts its requests by length into the bank's buckets, across prompts)."""
  summary = Summary()
  with Path(output_path).open("w", encoding="utf-8") as out:
    for chunk in _chunks(bank, input_path, chunk_size, skip_bad_lines, summary):
      responses = serve(bank, [request for _, request in chunk])
      for (number, request), response in zip(chunk, responses, strict=True):
        out.write(json.dumps(response_row(number, request, response)) + "\n")
      summary.served += len(chunk)
      if progress is not None:
        progress(len(chunk))
  return summary


def _chunks(bank: PromptBank, input_path: str, chunk_size: int, skip_bad_lines: bool,
            summary: Summary) -> Iterator[list[tuple[int, Request]]]:
  chunk: list[tuple[int, Request]] = []
  with Path(input_path).open(encoding="utf-8") as lines:
    for number, line in enumerate(lines, start=1):
      if not line.strip():
        continue
      try:
        chunk.append((number, request_of_line(bank, line, f"{input_path}:{number}")))
      except BadLineError as e:
        if not skip_bad_lines:
          raise
        summary.skipped += 1
        summary.problems.append(str(e))
      if len(chunk) == chunk_size:
        yield chunk
        chunk = []
  if chunk:
    yield chunk
