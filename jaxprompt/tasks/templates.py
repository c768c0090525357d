"""Text templates with `{field}` and dotted `{a.b}` slots filled from (nested) records.

    Template("rte sentence1: {premise} sentence2: {hypothesis}").render(fields, where="val.jsonl:3")

`{{` and `}}` are literal braces. A slot names a field, or a path through nested objects
(`{target.span1_text}`); there are no format specs or conversions, so a stray brace is an error at
construction rather than a surprise at render time.

`[P0]`, `[P1]`, ... in the literal text are P-tuning's pseudo tokens (Liu et al. 2021): each is one
trainable embedding at that place of the input. `fill_pieces` returns the text split at them; a
field's value is always text, so data cannot inject a pseudo token. A template uses indices 0..N-1,
each exactly once, or none.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from jaxprompt.tasks.records import DataError

# One token of a template: an escaped brace, a slot, a lone brace (an error), or a run of literal text.
_TOKEN = re.compile(r"(?P<escaped>\{\{|\}\})|\{(?P<slot>[^{}]*)\}|(?P<brace>[{}])|(?P<text>[^{}]+)")
_PATH = re.compile(r"[A-Za-z_][\w-]*(\.[A-Za-z_0-9][\w-]*)*")
PSEUDO_TOKEN = re.compile(r"\[P(\d+)\]")

Piece = str | int  # text, or the index of a pseudo token


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
    # Each literal split at its pseudo-token markers: text, index, text, ... (re.split's groups).
    self._literal_pieces = [_split_markers(literal, text) for literal in self._literals]
    self.pseudo_tokens: tuple[int, ...] = tuple(  # their indices, in order of appearance
        piece for pieces in self._literal_pieces for piece in pieces if isinstance(piece, int)
    )
    n = len(self.pseudo_tokens)
    if sorted(self.pseudo_tokens) != list(range(n)):
      repeated = sorted({i for i in self.pseudo_tokens if self.pseudo_tokens.count(i) > 1})
      missing = sorted(set(range(n)) - set(self.pseudo_tokens))
      raise ValueError(
          f"The template {text!r} has {n} pseudo tokens, so they must be [P0] to [P{n - 1}], each exactly"
          f" once; repeated: {[f'[P{i}]' for i in repeated]}, missing: {[f'[P{i}]' for i in missing]}"
      )

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

  def fill_pieces(self, values: list[str]) -> list[Piece]:
    """`fill(values)` split at the pseudo tokens: non-empty text pieces and pseudo-token indices, in order."""
    pieces: list[Piece] = list(self._literal_pieces[0])
    for value, literal in zip(values, self._literal_pieces[1:], strict=True):
      pieces += [value, *literal]
    merged: list[Piece] = []
    for piece in pieces:
      if isinstance(piece, str) and merged and isinstance(merged[-1], str):
        merged[-1] += piece
      elif piece != "":
        merged.append(piece)
    return merged

  def raw_values(self, record: Mapping[str, Any], where: str) -> list[Any]:
    """The value of every slot as stored (lists and numbers too); a missing or null field raises DataError."""
    return [self._resolve(record, path, where) for path in self._paths]

  def _lookup(self, record: Mapping[str, Any], path: tuple[str, ...], where: str) -> str:
    value = self._resolve(record, path, where)
    if isinstance(value, (Mapping, list, tuple)):
      raise DataError(
          f"{where}: field {'.'.join(path)!r} used by the template {self.text!r} is a"
          f" {type(value).__name__}, not text: {value!r:.80}"
      )
    return str(value)

  def _resolve(self, record: Mapping[str, Any], path: tuple[str, ...], where: str) -> Any:
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
    return value


def _split_markers(literal: str, template: str) -> list[Piece]:
  """Literal text split at `[Pi]` markers: text pieces and the markers' indices (canonical spelling only)."""
  pieces: list[Piece] = []
  for i, part in enumerate(PSEUDO_TOKEN.split(literal)):
    if i % 2 == 0:
      pieces.append(part)
    elif part != str(int(part)):
      raise ValueError(f"Pseudo token [P{part}] in the template {template!r}: write it [P{int(part)}]")
    else:
      pieces.append(int(part))
  return pieces


def text_without_pseudo_tokens(pieces: list[Piece]) -> str:
  """The text pieces joined, with no doubled (or leading) space where a pseudo token was taken out."""
  text, after_marker = "", False
  for piece in pieces:
    if isinstance(piece, int):
      after_marker = True
      continue
    text += piece.lstrip() if after_marker and (not text or text[-1].isspace()) else piece
    after_marker = False
  return text
