"""LM-BFF's template syntax (Gao et al. 2021, src/dataset.py tokenize_multipart_input) as a ClozePattern.

    parse_lm_bff("*cls**sent-_0*?*mask*,*+sentl_1**sep+*", ("premise", "hypothesis"))

The template is split at `*`. Pieces: `cls`, `mask`, `sep`, `sep+` (a sep after which BERT's token
type goes up by one); `sent_i` is the text of field `sentence_fields[i]`, `sent-_i` without its last
character, `sentl_i` / `sentu_i` with its first letter lower- / upper-cased, `sentl-_i` both;
a leading `+` (`+sent_i`, `+sentl_i`, `+sentu_i`) puts a space before it. Anything else is text,
`_` standing for a space. As in LM-BFF, nothing gets an automatic leading space, every piece is
encoded on its own, a one-character text piece is looked up in the vocabulary rather than encoded,
and sentence i is capped at first_sent_limit (i = 0) or other_sent_limit tokens. Unlike LM-BFF,
which cuts the tail (and so sometimes the mask), an input still too long loses tokens from its
sentences as PET truncates (patterns.py); the template text, mask and special tokens stay.
`label_i` / `labelx_i` (demonstrations) are not supported here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from jaxprompt.tasks.patterns import ClozePattern, Mask, Segment, Slot, Special, Text, VocabToken

_SPECIALS = {"cls": Special(end=False), "sep": Special(end=True), "sep+": Special(end=True, next_type=True)}
# Sentence pieces, with the transforms LM-BFF applies, in its order (lower-case first, then cut).
_SENTENCE = re.compile(r"(?P<space>\+?)sent(?P<kind>|-|l|l-|u)_(?P<index>\d+)")
_KINDS = {"": (), "-": ("drop_last_char",), "l": ("lower_first",), "l-": ("lower_first", "drop_last_char"),
          "u": ("upper_first",)}
_LOOKS_LIKE_SENTENCE = re.compile(r"\+?sent")


def parse_lm_bff(
    template: str,
    sentence_fields: Sequence[str],
    first_sent_limit: int | None = None,
    other_sent_limit: int | None = None,
) -> ClozePattern:
  """`template` in LM-BFF's syntax, sent_i reading the field `sentence_fields[i]`."""
  if isinstance(sentence_fields, str):
    raise TypeError(f"sentence_fields must be a sequence of field names, got the string {sentence_fields!r}")
  segments: list[Segment] = []
  for piece in template.split("*"):
    if piece in _SPECIALS:
      segments.append(_SPECIALS[piece])
    elif piece == "mask":
      segments.append(Mask())
    elif piece.startswith(("label_", "labelx_")):
      raise ValueError(f"The LM-BFF template {template!r} has {piece!r}: demonstrations are not supported here")
    elif m := _SENTENCE.fullmatch(piece):
      segments.append(_sentence(m, template, sentence_fields, first_sent_limit, other_sent_limit))
    elif _LOOKS_LIKE_SENTENCE.match(piece):
      raise ValueError(
          f"Unknown sentence piece *{piece}* in the LM-BFF template {template!r}: expected sent_i, sent-_i, sentl_i,"
          " sentl-_i, sentu_i, +sent_i, +sentl_i or +sentu_i"
      )
    elif piece:
      text = piece.replace("_", " ")
      segments.append(VocabToken(text) if len(text) == 1 else Text((text,), spaced=False))
  return ClozePattern(template, (tuple(segments),), with_specials=True)


def _sentence(
    m: re.Match, template: str, fields: Sequence[str], first_limit: int | None, other_limit: int | None
) -> Text:
  index = int(m["index"])
  if index >= len(fields):
    raise ValueError(
        f"The LM-BFF template {template!r} uses sentence {index}, but only {len(fields)} sentence fields"
        f" {tuple(fields)} were given"
    )
  slot = Slot(fields[index], _KINDS[m["kind"]], shortenable=True)
  pieces = (" ", slot) if m["space"] else (slot,)
  return Text(pieces, spaced=False, shortenable=True, limit=first_limit if index == 0 else other_limit)
