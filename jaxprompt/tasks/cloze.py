"""A cloze task's examples on a masked LM: the pattern filled and tokenized (with PET's truncation),
its mask block, and the label words or per-example candidates the objective scores.

The mask block holds k masks: 1 for single-token label words; with `multi_token` (PET with
multiple masks) the longest label word's token count; with per-example candidates (COPA), the
longest candidate's, per example.

On text families the same pattern-verbalizer pair is rendered as text and ranked as texts:
T5 reads the pattern with its first sentinel where the mask was and a class's target is the
span-corruption form "<extra_id_0> great <extra_id_1>"; a decoder reads the pattern up to the mask
and a class's target continues it (" great", so that byte-level BPE spells it as one token).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from jaxprompt.tasks.cloze_presets import mark_wsc_pronoun
from jaxprompt.tasks.lm_bff_templates import parse_lm_bff
from jaxprompt.tasks.codec import TextCodec
from jaxprompt.tasks.patterns import (ClozePattern, ClozeTokens, Mask, Segment, Slot, Special, Text, VocabToken,
                                      parse_pattern, parse_slot)
from jaxprompt.tasks.records import DataError, Record

PREPARES = {"wsc_pronoun": mark_wsc_pronoun}  # record transforms a pattern may need first
# A generated candidate's padding masks (TaskSpec.generate): PET adds 0-3 at random to a training
# example, 1 to the others; the training records carry their draw under this field.
GENERATION_PADDING = "__generation_padding"


@functools.lru_cache(maxsize=64)
def pattern_of(spec) -> ClozePattern:
  """The task's parsed pattern: LM-BFF's syntax when it starts with '*', else patterns.py's."""
  if spec.pattern.startswith("*"):
    limits = tuple(spec.sentence_limits) + (0, 0)
    first, other = (n or None for n in limits[:2])
    return parse_lm_bff(spec.pattern, spec.pattern_fields, first, other)
  if spec.pattern_fields or spec.sentence_limits:
    raise ValueError(f"Task {spec.name!r}: pattern_fields and sentence_limits apply to LM-BFF templates ('*cls*...')")
  return parse_pattern(spec.pattern)


@functools.lru_cache(maxsize=64)
def candidate_slots(spec) -> tuple[Slot, ...]:
  return tuple(parse_slot(text) for text in spec.candidates)


@dataclasses.dataclass(frozen=True)
class LabelWords:
  """A verbalizer's token ids: ids_CxWxK (class, label word, token), padded; mask_CxWxK the real ones."""

  ids_CxWxK: np.ndarray
  mask_CxWxK: np.ndarray

  @property
  def num_masks(self) -> int:
    return self.ids_CxWxK.shape[2]


def label_words(spec, tokens: ClozeTokens, multi_token: bool) -> LabelWords:
  """Each class's label words as tokens; every word must be one token unless `multi_token`, and then
  each class has exactly one word (PET's multiple masks score one sequence per class)."""
  ids = [[tokens.word_ids(word) for word in words] for words in spec.label_words]
  for words, word_ids in zip(spec.label_words, ids, strict=True):
    for word, wids in zip(words, word_ids, strict=True):
      if not wids:
        raise ValueError(f"Task {spec.name!r}: the label word {word!r} encodes to no tokens")
      if len(wids) > 1 and not multi_token:
        raise ValueError(
            f"Task {spec.name!r}: the label word {word!r} is {len(wids)} tokens {wids}; a label word must be one"
            " token (or set config.cloze.multi_token=True to score label words of several tokens with as many masks)"
        )
    if multi_token and len(words) > 1:
      raise ValueError(
          f"Task {spec.name!r}: with multi_token label words each class has one word, but {words} are several")
  classes, words, masks = len(ids), max(len(w) for w in ids), max(len(t) for w in ids for t in w)
  out, mask = np.zeros((classes, words, masks), np.int32), np.zeros((classes, words, masks), bool)
  for c, word_ids in enumerate(ids):
    for w, wids in enumerate(word_ids):
      out[c, w, : len(wids)], mask[c, w, : len(wids)] = wids, True
  return LabelWords(out, mask)


@dataclasses.dataclass(frozen=True)
class ClozeExample:
  """One record as a cloze input, before padding."""

  ids: list[int]
  token_types: list[int]
  mask_positions: list[int]
  candidates: list[list[int]]  # per-example choices' ids (COPA); empty for a verbalizer
  truncated: bool


def encode_example(record: Record, spec, tokens: ClozeTokens, num_masks: int, max_len: int,
                   pattern: ClozePattern | None = None) -> ClozeExample:
  """The record's pattern (the task's, or `pattern`: with demonstrations) filled and cut to `max_len`;
  with candidates, as many masks as the longest."""
  if spec.prepare:
    record = PREPARES[spec.prepare](record)
  choices: list[list[int]] = []
  if spec.candidates:
    choices = [tokens.word_ids(slot.text(record.fields, record.where)) for slot in candidate_slots(spec)]
    if not all(choices):
      raise DataError(f"{record.where}: a candidate of task {spec.name!r} is empty: {spec.candidates}")
    num_masks = max(len(c) for c in choices) + (int(record.fields.get(GENERATION_PADDING, 1)) if spec.generate else 0)
  encoded = (pattern or pattern_of(spec)).encode(record, tokens, num_masks, max_len)
  return ClozeExample(list(encoded.ids), list(encoded.token_types), list(encoded.mask_positions), choices,
                      encoded.truncated)


def check_text_family(spec, codec: TextCodec) -> None:
  """A ValueError unless `codec`'s family can read the cloze task `spec` as text (T5, decoders)."""
  if codec.cloze is not None:
    raise ValueError(f"Task {spec.name!r}: a masked LM scores label words at its mask (cloze.label_words), not texts")
  if spec.generate:
    raise ValueError(f"Task {spec.name!r} generates its candidate into a masked LM's mask block (PET's WSC); T5 and"
                     " decoders would generate it as text, which is not done here")
  if not codec.cloze_sentinels and not codec.keep_input_end:
    # A continuation must keep the text right before the answer when it is cut.
    raise ValueError(
        f"Task {spec.name!r} has a cloze pattern, which needs a masked LM's tokenizer (family bert, albert), T5's"
        " sentinels (TextCodec.cloze_sentinels) or a decoder's codec (one whose truncation keeps the input's end)"
    )
  if not codec.cloze_sentinels and (slot := _slot_after_mask(pattern_of(spec))) is not None:
    raise ValueError(
        f"Task {spec.name!r}: the pattern {spec.pattern!r} has {slot} after its mask, but a decoder cannot read"
        " text after its answer: only fixed text (which is dropped) may follow the mask"
    )


def candidate_texts(record: Record, spec, codec: TextCodec) -> list[str]:
  """Each example's choices (COPA) in the family's answer form, as a label word would be."""
  if spec.prepare:
    record = PREPARES[spec.prepare](record)
  return [_answer(slot.text(record.fields, record.where), codec) for slot in candidate_slots(spec)]


def _answer(word: str, codec: TextCodec) -> str:
  """A word as T5's span-corruption target or as a decoder's continuation."""
  if codec.cloze_sentinels:
    return f"{codec.cloze_sentinels[0]} {word} {codec.cloze_sentinels[1]}"
  return codec.word_prefix + word


def label_texts(spec, codec: TextCodec) -> tuple[str, ...]:
  """Each class's target text: the verbalizer; for a cloze task, its word as the family's answer."""
  if not spec.pattern:
    return spec.verbalizer
  check_text_family(spec, codec)
  texts = []
  for name, words in zip(spec.label_names, spec.label_words, strict=True):
    if len(words) > 1:
      raise ValueError(
          f"Task {spec.name!r}: class {name!r} has several label words {words}; rank classification on T5 and"
          " decoders scores one text per class, so give it one word"
      )
    texts.append(_answer(words[0], codec))
  return tuple(texts)


def text_input(record: Record, spec, codec: TextCodec) -> str:
  """The record's pattern as input text: T5's first sentinel at the mask; a decoder's text up to it."""
  before, after = text_before_and_after_mask(record, spec)
  if codec.cloze_sentinels:
    return f"{before} {codec.cloze_sentinels[0]}{after}".lstrip()
  return before


def text_before_and_after_mask(record: Record, spec) -> tuple[str, str]:
  """The filled pattern as a reader writes it, split at the mask: (text before, text after).

  PET's segments are joined with single spaces (their edge `{_}` spaces dropped; text glued to the
  mask stays glued), sequence B after A with a space; LM-BFF's pieces are joined as written, without
  *cls* and *sep*. The mask has a space before it (LM-BFF's label words carry one); `after` starts
  with the space a reader puts after the mask, if any. LM-BFF's sentence limits, which count a
  masked LM's tokens, do not apply: the family's codec cuts the text.
  """
  if spec.prepare:
    record = PREPARES[spec.prepare](record)
  pattern = pattern_of(spec)
  if not any(slot.text(record.fields, record.where).strip() for slot in pattern.slots):
    fields = [slot.path for slot in pattern.slots]
    raise DataError(f"{record.where}: empty input: the fields {fields} of task {spec.name!r} are all blank")
  sides: tuple[list[tuple[str, bool]], ...] = ([], [])  # (text, glued to the text before it), before and after
  side = 0
  for segment in (s for sequence in pattern.sequences for s in sequence):
    if isinstance(segment, Mask):
      side = 1
    elif (piece := _piece(segment, record)) is not None:
      sides[side].append(piece)
  return _joined(sides[0]).strip(), _joined(sides[1]).rstrip()


def _piece(segment: Segment, record: Record) -> tuple[str, bool] | None:
  """A segment's text and whether it is glued to the text before it; None for the mask and specials."""
  if isinstance(segment, (Mask, Special)):
    return None
  if isinstance(segment, VocabToken):
    return segment.token, True
  text = "".join(p if isinstance(p, str) else p.text(record.fields, record.where) for p in segment.pieces)
  return text, not segment.spaced


def _joined(pieces: list[tuple[str, bool]]) -> str:
  """Pieces joined with one space before each (none before glued text); blank pieces dropped, as PET does."""
  out = ""
  for text, glued in pieces:
    if not text.strip():
      continue
    out = out + text if glued and not text[0].isspace() else out.rstrip() + " " + text.lstrip()
  return out


def _slot_after_mask(pattern: ClozePattern) -> Slot | None:
  """The first slot that follows the mask block, if any."""
  segments = [s for sequence in pattern.sequences for s in sequence]
  after = segments[next(i for i, s in enumerate(segments) if isinstance(s, Mask)) + 1 :]
  slots = [p for s in after if isinstance(s, Text) for p in s.pieces if isinstance(p, Slot)]
  return slots[0] if slots else None
