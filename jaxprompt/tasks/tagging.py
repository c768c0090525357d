"""A token-labelling record's words and tag indices (P-tuning v2's sequence labelling, e.g. NER)."""

from __future__ import annotations

import numbers

from jaxprompt.tasks.records import DataError, Record
from jaxprompt.tasks.task_spec import TaskSpec
from jaxprompt.tasks.templates import Template


def words_and_tags(record: Record, spec: TaskSpec, template: Template) -> tuple[list[str], list[int] | None]:
  """The words (the template's one slot) and their tag indices (`spec.label_field`; None: no tags)."""
  (words,) = template.raw_values(record.fields, record.where)
  field = template.fields[0]
  if not isinstance(words, (list, tuple)) or not all(isinstance(w, str) for w in words):
    raise DataError(f"{record.where}: field {field!r} must be a list of words, got {words!r:.80}")
  if not words:
    raise DataError(f"{record.where}: empty input: field {field!r} has no words")
  raw_tags = record.fields.get(spec.label_field)
  if raw_tags is None:
    return list(words), None
  if not isinstance(raw_tags, (list, tuple)) or len(raw_tags) != len(words):
    got = f"{len(raw_tags)} tags" if isinstance(raw_tags, (list, tuple)) else repr(raw_tags)[:80]
    raise DataError(
        f"{record.where}: field {spec.label_field!r} must hold one tag per word: {len(words)} words, got {got}"
    )
  return list(words), [tag_index(tag, spec, record.where, w, words[w]) for w, tag in enumerate(raw_tags)]


def tag_index(raw: object, spec: TaskSpec, where: str, word_index: int, word: str) -> int:
  """The index of a tag: its name in `spec.token_label_names`, or an int index (e.g. HF datasets' ner_tags)."""
  names = spec.token_label_names
  if isinstance(raw, str) and raw in names:
    return names.index(raw)
  if isinstance(raw, numbers.Integral) and not isinstance(raw, bool) and 0 <= raw < len(names):
    return int(raw)
  raise DataError(
      f"{where}: unknown tag {raw!r} of word {word_index} ({word!r}) for task {spec.name!r};"
      f" known tags are {list(names)} (or their indices 0..{len(names) - 1})"
  )
