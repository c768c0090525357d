"""Text templates with `{field}` and dotted `{a.b}` slots filled from (nested) records.

    Template("rte sentence1: {premise} sentence2: {hypothesis}").render(fields, where="val.jsonl:3")

`{{` and `}}` are literal braces. A slot names a field, or a path through nested objects
(`{target.span1_text}`); there are no format specs or conversions, so a stray brace is an error at
construction rather than a surprise at render time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from jaxprompt.tasks.records import DataError

# One token of a template: an escaped brace, a slot, a lone brace (an error), or a run of literal text.
_TOKEN = re.compile(r"(?P<escaped>\{\{|\}\})|\{(?P<slot>[^{}]*)\}|(?P<brace>[{}])|(?P<text>[^{}]+)")
_PATH = re.compile(r"[A-Za-z_][\w-]*(\.[A-Za-z_0-9][\w-]*)*")


class Template:
  """A parsed template: alternating literal text and field paths."""

  def __init__(self, text: str):
    if not isinstance(text, str):
      raise TypeError(f"A template must be a string, got {type(text).__name__}: {text!r}")
    self.text = text
    # Literal pieces and slots alternate, starting and ending with (possibly empty) literal text.
    self._literals: list[str] = [""]
    self._paths: list[tuple[str, ...]] = []
    for m in _TOKEN.finditer(text):
      if m["escaped"]:
        self._literals[-1] += m["escaped"][0]
      elif m["text"] is not None:
        self._literals[-1] += m["text"]
      elif m["brace"]:
        raise ValueError(
            f"Unbalanced {m['brace']!r} at position {m.start()} of the template {text!r};"
            " write {{ or }} for a literal brace"
        )
      else:
        slot = m["slot"].strip()
        if not _PATH.fullmatch(slot):
          raise ValueError(
              f"Bad slot {{{m['slot']}}} at position {m.start()} of the template {text!r}: a slot is a"
              " field name or a dotted path such as {target.span1_text}"
          )
        self._paths.append(tuple(slot.split(".")))
        self._literals.append("")

  def __repr__(self) -> str:
    return f"Template({self.text!r})"

  def __eq__(self, other: object) -> bool:
    return isinstance(other, Template) and other.text == self.text

  def __hash__(self) -> int:
    return hash(self.text)

  @property
  def fields(self) -> tuple[str, ...]:
    """The dotted paths of the slots, in order."""
    return tuple(".".join(path) for path in self._paths)

  def values(self, record: Mapping[str, Any], where: str) -> list[str]:
    """The text of every slot, in order, without surrounding whitespace; a missing (or null) field
    raises DataError.

    Trimmed because datasets carry stray spaces (every GLUE SST-2 sentence ends with one), which
    the template's own spacing would double; byte-level BPE vocabularies tokenize "x .  Next"
    differently from "x . Next" (T5's SentencePiece normalises either way).
    """
    return [self._lookup(record, path, where).strip() for path in self._paths]

  def render(self, record: Mapping[str, Any], where: str) -> str:
    """The template with every slot filled from `record`."""
    return self.fill(self.values(record, where))

  def fill(self, values: list[str]) -> str:
    """The template with its slots replaced by `values`, in order."""
    pieces = [self._literals[0]]
    for value, literal in zip(values, self._literals[1:], strict=True):
      pieces += [value, literal]
    return "".join(pieces)

  def _lookup(self, record: Mapping[str, Any], path: tuple[str, ...], where: str) -> str:
    value: Any = record
    for depth, key in enumerate(path):
      if isinstance(value, Mapping) and value.get(key, 0) is None:
        raise DataError(f"{where}: field {'.'.join(path)!r} used by the template {self.text!r} is null")
      if not isinstance(value, Mapping) or key not in value:
        found = ".".join(path[:depth]) or "the record"
        has = f"fields {sorted(map(str, value))}" if isinstance(value, Mapping) else type(value).__name__
        raise DataError(
            f"{where}: missing field {'.'.join(path)!r} used by the template {self.text!r}"
            f" ({found} has {has})"
        )
      value = value[key]
    if isinstance(value, (Mapping, list, tuple)):
      raise DataError(
          f"{where}: field {'.'.join(path)!r} used by the template {self.text!r} is a"
          f" {type(value).__name__}, not text: {value!r:.80}"
      )
    return str(value)
