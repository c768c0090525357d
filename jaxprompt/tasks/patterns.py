"""Cloze patterns for masked LMs (PET's patterns; LM-BFF's templates, see lm_bff_templates.py).

    pattern = parse_pattern("{~passage} . Question:{_} {~question} ? Answer:{_} [MASK] .")
    encoded = pattern.encode(record, ClozeTokens.from_hf(tokenizer), num_masks=1, max_len=256)

Syntax: `{field}` (dotted paths as in templates.py) is a field's text, `{~field}` a shortenable one
(truncation may cut it), `{field|lower_first|rstrip_punct}` applies TRANSFORMS left to right.
`[MASK]` is the mask block (k mask tokens, k given at encode time), exactly once; ` || ` separates
sequence A from sequence B; `{_}` is a space that belongs to the text; `{{` / `}}` are braces.

Segments, as PET builds them (pet/pvp.py, encode): a pattern is a list of segments, each tokenized
on its own, the ids concatenated. Whitespace in the pattern separates segments; text, slots and
`{_}` written without whitespace between them are one segment. Each segment is encoded as
`word_prefix + text`: PET encodes every segment with add_prefix_space=True for byte-level BPE
(RoBERTa), and transformers 3.0.2 prepends that space unconditionally, keeping the segment's own
spaces. Some of PET's segments have such edge spaces ('. Question: '): written `{_}`, each becomes
a lone space token ("Ġ") in byte-level BPE, as in PET; WordPiece and SentencePiece drop it. Text
glued right after [MASK] gets no prefix: PET's WSC segment "<mask><mask>." encodes its "." bare.
So `{~a} . Question:{_} {~b}` is PET's [a, '. Question: ', b] and reads like its RoBERTa text.
A shortenable segment holds only shortenable slots and `{_}`, so no pattern text gets truncated.
Slot values are used as stored (not stripped), as PET and LM-BFF use them.
"""

from __future__ import annotations

import dataclasses
import re
import string
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from jaxprompt.tasks.codec import word_prefix
from jaxprompt.tasks.records import DataError, Record
from jaxprompt.tasks.templates import Template
from jaxprompt.weights.hf_tokenizer import HFTokenizer

_CONNECTIVES = {"cause": "because", "effect": ", so"}


def _because_or_so(text: str) -> str:
  if text not in _CONNECTIVES:
    raise ValueError(f"expected a COPA question {sorted(_CONNECTIVES)}, got {text!r}")
  return _CONNECTIVES[text]


TRANSFORMS: dict[str, Callable[[str], str]] = {
    "rstrip_punct": lambda s: s.rstrip(string.punctuation),  # PET's remove_final_punc
    "lower_first": lambda s: s[:1].lower() + s[1:],  # PET's lowercase_first; LM-BFF's sentl
    "upper_first": lambda s: s[:1].upper() + s[1:],  # LM-BFF's sentu
    "drop_last_char": lambda s: s[:-1],  # LM-BFF's sent-
    # PET's AG News / Yahoo / Yelp readers: the csv files write line breaks as "\" or "\n".
    "backslash_to_space": lambda s: s.replace("\\", " "),
    "escaped_newline_to_space": lambda s: s.replace("\\n", " "),
    "because_or_so": _because_or_so,  # PET's COPA: the question "cause" / "effect" as a connective
}

_ITEM = re.compile(
    r"(?P<escaped>\{\{|\}\})|\{(?P<slot>[^{}]*)\}|(?P<brace>[{}])|(?P<mask>\[MASK\])"
    r"|(?P<split>\|\|)|(?P<text>(?:(?!\[MASK\]|\|\|)[^{}])+)"
)
_SLOT = re.compile(r"(?P<short>~?)(?P<path>[^|~]+)(?P<transforms>(\|[^|]*)*)")


@dataclasses.dataclass(frozen=True)
class Slot:
  """A field's text with transforms applied; shortenable slots may lose tokens to truncation."""

  path: str
  transforms: tuple[str, ...] = ()
  shortenable: bool = False
  _template: Template = dataclasses.field(init=False, repr=False, compare=False)

  def __post_init__(self):
    unknown = [t for t in self.transforms if t not in TRANSFORMS]
    if unknown:
      raise ValueError(f"Unknown slot transform(s) {unknown} in {self}; known: {sorted(TRANSFORMS)}")
    # Template validates the dotted path and gives the lookup and its DataError messages.
    try:
      object.__setattr__(self, "_template", Template("{" + self.path + "}"))
    except ValueError:
      raise ValueError(f"{self.path!r} in {self} is not a field name or a dotted path (target.span1_text)") from None

  def __str__(self) -> str:
    return "{" + "~" * self.shortenable + "|".join((self.path, *self.transforms)) + "}"

  def text(self, fields: Mapping[str, Any], where: str) -> str:
    """The field's value as stored (a number or bool as str), transformed."""
    value = self._template.raw_values(fields, where)[0]
    if isinstance(value, (Mapping, list, tuple)):
      kind = type(value).__name__
      raise DataError(f"{where}: field {self.path!r} used by {self} is a {kind}, not text: {value!r:.80}")
    text = str(value)
    for name in self.transforms:
      try:
        text = TRANSFORMS[name](text)
      except ValueError as e:
        raise DataError(f"{where}: field {self.path!r} used by {self}: {e}") from None
    return text


def parse_slot(expression: str) -> Slot:
  """`~path|transform|...` (the inside of a pattern's braces) as a Slot."""
  m = _SLOT.fullmatch(expression.strip())
  if not m:
    raise ValueError(f"Bad slot {{{expression}}}: expected {{field}}, {{~field}} or {{field|transform|...}}")
  try:
    return Slot(m["path"].strip(), tuple(t.strip() for t in m["transforms"].split("|")[1:]), bool(m["short"]))
  except ValueError as e:
    raise ValueError(f"Bad slot {{{expression}}}: {e}") from None


@dataclasses.dataclass(frozen=True)
class Text:
  """Text and slot values joined into one string and tokenized at once."""

  pieces: tuple[str | Slot, ...]
  spaced: bool = True  # encoded as word_prefix + text (PET); else exactly as written (LM-BFF)
  shortenable: bool = False
  limit: int | None = None  # keep at most this many tokens (LM-BFF's first_sent_limit / other_sent_limit)


@dataclasses.dataclass(frozen=True)
class Mask:
  """The mask block: k mask tokens, k given at encode time."""


@dataclasses.dataclass(frozen=True)
class Special:
  """LM-BFF's *cls* (the tokenizer's start tokens) and *sep* / *sep+* (its end tokens)."""

  end: bool
  next_type: bool = False  # *sep+*: the tokens after it get the next token type


@dataclasses.dataclass(frozen=True)
class VocabToken:
  """A one-character LM-BFF literal, which LM-BFF looks up in the vocabulary instead of encoding."""

  token: str


Segment = Text | Mask | Special | VocabToken


@dataclasses.dataclass(frozen=True)
class ClozeTokens:
  """How a masked LM's tokenizer lays out a cloze input: `start A end`, or `start A middle B end`.

  BERT / ALBERT: [CLS] A [SEP] B [SEP], B and its [SEP] with token type 1; RoBERTa: <s> A </s></s> B </s>,
  type 0 everywhere (transformers' build_inputs_with_special_tokens / create_token_type_ids_from_sequences).
  """

  encode: Callable[[str], list[int]]  # text -> ids, no special tokens added
  word_prefix: str  # " " for byte-level BPE (RoBERTa), "" for WordPiece / SentencePiece
  mask_id: int
  start_ids: tuple[int, ...]
  middle_ids: tuple[int, ...]
  end_ids: tuple[int, ...]
  second_type_id: int
  vocab_id: Callable[[str], int] | None = None  # a token's id, or the unknown token's (LM-BFF's one-char literals)

  def word_ids(self, word: str) -> list[int]:
    """A label word's or candidate's ids as a pattern segment (PET's get_verbalization_ids)."""
    return self.encode(self.word_prefix + word)

  @classmethod
  def from_hf(cls, tokenizer: HFTokenizer) -> ClozeTokens:
    """Read off the tokenizer's own pair template (its post-processor)."""
    if tokenizer.mask_id is None:
      raise ValueError(f"{tokenizer} has no mask token (special tokens {tokenizer.special})")
    a, b = tokenizer.encode("hello"), tokenizer.encode("world")
    single = tokenizer.encode("hello", add_special_tokens=True)
    pair = tokenizer.tokenizer.encode("hello", "world", add_special_tokens=True)
    start_len = next((i for i in range(len(single)) if single[i : i + len(a)] == a), None)
    if start_len is None:
      raise ValueError(f"{tokenizer}: cannot find {a} in its single-sequence layout {single}")
    start, end = single[:start_len], single[start_len + len(a) :]
    middle = pair.ids[len(start) + len(a) : len(pair.ids) - len(b) - len(end)]
    b_at = len(start) + len(a) + len(middle)
    layout = start + a + middle + b + end
    second = pair.type_ids[b_at] if b_at < len(pair.ids) else 0
    types = [0] * b_at + [second] * (len(b) + len(end))
    if pair.ids != layout or pair.type_ids != types:
      raise ValueError(f"{tokenizer}: pair layout {pair.ids} (types {pair.type_ids}) is not start A middle B end")
    unk = tokenizer.token_to_id(tokenizer.special.unk)

    def vocab_id(token: str) -> int:
      found = tokenizer.token_to_id(token)
      if found is None and unk is None:
        raise ValueError(f"{tokenizer}: {token!r} is not in the vocabulary, and there is no unknown token")
      return unk if found is None else found

    return cls(tokenizer.encode, word_prefix(tokenizer), tokenizer.mask_id, tuple(start), tuple(middle),
               tuple(end), second, vocab_id)


@dataclasses.dataclass(frozen=True)
class EncodedCloze:
  """A cloze input's ids (unpadded), token types, its k mask positions, and whether anything was cut."""

  ids: tuple[int, ...]
  token_types: tuple[int, ...]
  mask_positions: tuple[int, ...]
  truncated: bool


@dataclasses.dataclass(frozen=True)
class ClozePattern:
  """Sequence A (and B) as segments; `with_specials`: the segments place the special tokens (LM-BFF)."""

  text: str
  sequences: tuple[tuple[Segment, ...], ...]
  with_specials: bool = False

  def __post_init__(self):
    masks = sum(isinstance(s, Mask) for seq in self.sequences for s in seq)
    if masks != 1:
      raise ValueError(f"The pattern {self.text!r} has {masks} [MASK] blocks; it needs exactly one")
    if not 1 <= len(self.sequences) <= (1 if self.with_specials else 2):
      raise ValueError(f"The pattern {self.text!r} has {len(self.sequences)} sequences")

  @property
  def slots(self) -> tuple[Slot, ...]:
    pieces = [p for seq in self.sequences for s in seq if isinstance(s, Text) for p in s.pieces]
    return tuple(p for p in pieces if isinstance(p, Slot))

  def encode(self, record: Record, tokens: ClozeTokens, num_masks: int, max_len: int) -> EncodedCloze:
    """Fill, tokenize segment by segment, and truncate shortenable segments as PET does to fit `max_len`."""
    if num_masks < 1:
      raise ValueError(f"num_masks must be at least 1, got {num_masks}")
    parts = [[_encode(s, record, tokens, num_masks) for s in seq] for seq in self.sequences]
    if len(parts) == 2 and all(p.empty for p in parts[1]):
      parts = parts[:1]  # PET drops empty segments, and an empty sequence B becomes no sequence B
    specials = 0 if self.with_specials else len(tokens.start_ids) + len(tokens.end_ids)
    specials += len(tokens.middle_ids) if len(parts) == 2 else 0
    fixed = specials + sum(len(p.ids) for seq in parts for p in seq if not p.shortenable)
    if fixed > max_len:
      raise DataError(
          f"{record.where}: the pattern {self.text!r} needs {fixed} tokens for its mask, fixed text and special"
          f" tokens alone (shortenable parts not counted), more than max_len={max_len}"
      )
    excess = specials + sum(len(p.ids) for seq in parts for p in seq) - max_len
    if excess > 0:
      _truncate(parts[0], parts[1] if len(parts) == 2 else [], excess)
    ids, types, first_mask = self._assemble(parts, tokens)
    truncated = excess > 0 or any(p.capped for seq in parts for p in seq)
    return EncodedCloze(tuple(ids), tuple(types), tuple(range(first_mask, first_mask + num_masks)), truncated)

  def _assemble(self, parts: list[list[_Part]], tokens: ClozeTokens) -> tuple[list[int], list[int], int]:
    ids: list[int] = [] if self.with_specials else list(tokens.start_ids)
    types, type_id, first_mask = [0] * len(ids), 0, -1
    for n, (seq, segments) in enumerate(zip(parts, self.sequences)):
      if n == 1:
        ids += tokens.middle_ids
        types += [0] * len(tokens.middle_ids)
        type_id = tokens.second_type_id
      for part, segment in zip(seq, segments):
        first_mask = len(ids) if isinstance(segment, Mask) else first_mask
        ids += part.ids
        types += [type_id] * len(part.ids)
        if isinstance(segment, Special) and segment.next_type:
          type_id += tokens.second_type_id  # LM-BFF's segment id + 1 (types stay 0 where the model has none)
    if not self.with_specials:
      ids += tokens.end_ids
      types += [type_id] * len(tokens.end_ids)
    return ids, types, first_mask


class _Part(NamedTuple):
  """One segment's ids, and whether truncation may cut them, a limit cut them, or its text was empty."""

  ids: list[int]
  shortenable: bool = False
  capped: bool = False
  empty: bool = False


def _encode(segment: Segment, record: Record, tokens: ClozeTokens, num_masks: int) -> _Part:
  if isinstance(segment, Mask):
    return _Part([tokens.mask_id] * num_masks)
  if isinstance(segment, Special):
    return _Part(list(tokens.end_ids if segment.end else tokens.start_ids))
  if isinstance(segment, VocabToken):
    if tokens.vocab_id is None:
      raise ValueError(f"LM-BFF's one-character literal {segment.token!r} needs ClozeTokens.vocab_id")
    return _Part([tokens.vocab_id(segment.token)])
  text = "".join(p if isinstance(p, str) else p.text(record.fields, record.where) for p in segment.pieces)
  # Whitespace alone encodes to nothing (transformers' tokenize skips it).
  prefix = tokens.word_prefix if segment.spaced else ""
  ids = tokens.encode(prefix + text) if text.strip() else []
  capped = segment.limit is not None and len(ids) > segment.limit
  return _Part(ids[: segment.limit] if capped else ids, segment.shortenable, capped, not text)


def _truncate(parts_a: list[_Part], parts_b: list[_Part], excess: int) -> None:
  """PET's truncate: one token at a time from the sequence with strictly more shortenable tokens (ties: B),
  taken off the end of its last non-empty shortenable segment."""
  short_a = sum(len(p.ids) for p in parts_a if p.shortenable)
  short_b = sum(len(p.ids) for p in parts_b if p.shortenable)
  for _ in range(excess):
    cut = parts_a if short_a > short_b else parts_b
    next(p.ids for p in reversed(cut) if p.shortenable and p.ids).pop()
    short_a, short_b = (short_a - 1, short_b) if cut is parts_a else (short_a, short_b - 1)


def parse_pattern(text: str) -> ClozePattern:
  """A pattern in this module's syntax (see the module docstring)."""
  sequences: list[list[list[Any]]] = [[[]]]  # per sequence, groups of glued items
  for m in _ITEM.finditer(text):
    groups = sequences[-1]
    if m["escaped"]:
      groups[-1].append(m["escaped"][0])
    elif m["brace"]:
      raise ValueError(f"Unbalanced {m['brace']!r} at position {m.start()} of the pattern {text!r}; write {{{{ or }}}}")
    elif m["split"]:
      if len(sequences) == 2:
        raise ValueError(f"The pattern {text!r} has more than one ' || ' (at most two sequences)")
      sequences.append([[]])
    elif m["mask"]:
      groups[-1].append(Mask())
    elif m["slot"] is not None:
      groups[-1].append(" " if m["slot"] == "_" else _slot(m["slot"], text))
    elif m["text"].strip():
      core = m["text"].strip()  # whitespace at either end separates segments
      if m["text"][0].isspace():
        groups.append([])
      groups[-1].append(core)
      if m["text"][-1].isspace():
        groups.append([])
    else:
      groups.append([])
  segments = tuple(tuple(_group_segments(g, text) for g in groups if g) for groups in sequences)
  flat = tuple(tuple(s for group in seq for s in group) for seq in segments)
  if any(not seq for seq in flat):
    raise ValueError(f"The pattern {text!r} has an empty sequence around ' || '")
  return ClozePattern(text, flat)


def _slot(expression: str, pattern: str) -> Slot:
  try:
    return parse_slot(expression)
  except ValueError as e:
    raise ValueError(f"{e} in the pattern {pattern!r}") from None


def _group_segments(group: list[Any], pattern: str) -> tuple[Segment, ...]:
  """Items written without whitespace between them: one segment, or text, mask, text glued to it."""
  segments: list[Segment] = []
  run: list[Any] = []
  for item in [*group, None]:
    if isinstance(item, Mask) or item is None:
      if run:  # text glued right after a mask gets no leading space
        segments.append(_text(run, not (segments and isinstance(segments[-1], Mask)), pattern))
      segments += [item] if item is not None else []
      run = []
    else:
      run.append(item)
  return tuple(segments)


def _text(items: list[Any], spaced: bool, pattern: str) -> Text:
  slots = [item for item in items if isinstance(item, Slot)]
  shortenable = any(s.shortenable for s in slots)
  texts = [repr(item) for item in items if isinstance(item, str) and item.strip()]
  mixed = [str(s) for s in slots if not s.shortenable] + texts
  if shortenable and mixed:
    short = " ".join(str(s) for s in slots if s.shortenable)
    raise ValueError(
        f"In the pattern {pattern!r}, {short} is glued to {', '.join(mixed)}: a shortenable"
        " segment holds only shortenable slots and {_}, or truncation would cut the rest too; put a space between"
    )
  return Text(tuple(items), spaced, shortenable)
