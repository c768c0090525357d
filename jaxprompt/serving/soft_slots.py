"""A request's soft tokens as slots of its own sequence, so that each row of a mixed batch is as long
as its own prompt makes it, not as the bank's longest soft prompt does.

A prompt placed by insertion (prefix, after_bos, suffix) gets its P soft tokens as P placeholder
tokens at that place in the rendered input (the codec's pad id, as P-tuning's [Pi] markers are),
and `soft_positions` says which soft token replaces each one (models/prompt.py's replace_at_BxL):
the sequence the insertion would build for this example alone, with the same positions and masks.
Inserted into the step instead, every row would carry the bank's longest prompt in slots, the
shorter prompts' slots masked, on top of its bucket. A prompt whose template has markers already
has its slots; a prompt without soft tokens adds none.
"""

from __future__ import annotations

import dataclasses

from jaxprompt.serving.parts import PromptParts
from jaxprompt.tasks.features import Feature

INSERTED = ("prefix", "after_bos", "suffix")  # placements by insertion; "markers" replaces template tokens


def added_slots(parts: PromptParts) -> int:
  """How many tokens the prompt adds to each of its requests' inputs."""
  return parts.soft_length if parts.placement in INSERTED else 0


def with_soft_slots(feature: Feature, parts: PromptParts, pad_id: int) -> Feature:
  """The feature with its prompt's inserted soft tokens as placeholder slots in its inputs."""
  slots = added_slots(parts)
  if not slots:
    return feature
  length = len(feature.inputs)
  # Where models/prompt.py inserts them: first, after the first token (a BOS or [CLS]), or last.
  at = {"prefix": 0, "after_bos": min(1, length), "suffix": length}[parts.placement]

  def widened(column: list, filler) -> list:  # a column aligned with inputs; empty stays empty
    return column[:at] + [filler] * slots + column[at:] if column else column

  return dataclasses.replace(
      feature,
      inputs=widened(feature.inputs, pad_id),
      soft_positions=[-1] * at + list(range(slots)) + [-1] * (length - at),
      token_labels=widened(feature.token_labels, -1),
      token_types=widened(feature.token_types, 0),  # a soft token takes type 0 either way (models/bert.py)
      mask_positions=[p + slots if p >= at else p for p in feature.mask_positions],
  )
