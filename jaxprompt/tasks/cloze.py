"""A cloze task's examples on a masked LM: the pattern filled and tokenized (with PET's truncation),
its mask block, and the label words or per-example candidates the objective scores.

The mask block holds k masks: 1 for single-token label words; with `multi_token` (PET with
multiple masks) the longest label word's token count; with per-example candidates (COPA), the
longest candidate's, per example.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from jaxprompt.tasks.cloze_presets import mark_wsc_pronoun
from jaxprompt.tasks.lm_bff_templates import parse_lm_bff
from jaxprompt.tasks.patterns import ClozePattern, ClozeTokens, Slot, parse_pattern, parse_slot
from jaxprompt.tasks.records import DataError, Record

PREPARES = {"wsc_pronoun": mark_wsc_pronoun}  # record transforms a pattern may need first


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


def encode_example(record: Record, spec, tokens: ClozeTokens, num_masks: int, max_len: int) -> ClozeExample:
  """The record's pattern filled and cut to `max_len`; with candidates, as many masks as the longest."""
  if spec.prepare:
    record = PREPARES[spec.prepare](record)
  choices: list[list[int]] = []
  if spec.candidates:
    choices = [tokens.word_ids(slot.text(record.fields, record.where)) for slot in candidate_slots(spec)]
    if not all(choices):
      raise DataError(f"{record.where}: a candidate of task {spec.name!r} is empty: {spec.candidates}")
    num_masks = max(len(c) for c in choices)
  encoded = pattern_of(spec).encode(record, tokens, num_masks, max_len)
  return ClozeExample(list(encoded.ids), list(encoded.token_types), list(encoded.mask_positions), choices,
                      encoded.truncated)
