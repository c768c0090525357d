"""A request's inserted soft tokens as placeholder slots of its own input: where each placement puts
them, and the columns aligned with the input (a cloze mask's position, token types) moved along."""

from __future__ import annotations

import numpy as np
import pytest

from jaxprompt.serving.parts import PromptParts
from jaxprompt.serving.soft_slots import added_slots, with_soft_slots
from jaxprompt.tasks.features import Feature

PAD = 0


def _prompt(length: int, placement: str) -> PromptParts:
  return PromptParts(soft_PxD=np.ones((length, 4), np.float32), placement=placement)


def _cloze_feature() -> Feature:  # [CLS] a [MASK] b [SEP], second segment from "b"
  return Feature([101, 7, 103, 8, 102], [5], 0, 0, token_types=[0, 0, 0, 1, 1], mask_positions=[2])


@pytest.mark.parametrize("placement, inputs, soft, types, mask", [
    ("prefix", [0, 0, 101, 7, 103, 8, 102], [0, 1, -1, -1, -1, -1, -1], [0, 0, 0, 0, 0, 1, 1], [4]),
    ("after_bos", [101, 0, 0, 7, 103, 8, 102], [-1, 0, 1, -1, -1, -1, -1], [0, 0, 0, 0, 0, 1, 1], [4]),
    ("suffix", [101, 7, 103, 8, 102, 0, 0], [-1, -1, -1, -1, -1, 0, 1], [0, 0, 0, 1, 1, 0, 0], [2]),
])
def test_each_placement_puts_the_slots_where_the_step_would_insert_them(placement, inputs, soft, types, mask):
  placed = with_soft_slots(_cloze_feature(), _prompt(2, placement), PAD)
  assert (placed.inputs, placed.soft_positions, placed.token_types, placed.mask_positions) == (inputs, soft, types, mask)
  assert (placed.targets, placed.label, placed.token_labels) == ([5], 0, [])  # unaligned columns stay as they were


def test_token_labels_get_ignored_slots():
  feature = Feature([1, 5, 6], [], -1, 0, token_labels=[-1, 3, 4])
  assert with_soft_slots(feature, _prompt(1, "after_bos"), PAD).token_labels == [-1, -1, 3, 4]


def test_markers_and_prompts_without_soft_tokens_add_nothing():
  feature = Feature([1, PAD, 5], [], -1, 0, soft_positions=[-1, 0, -1])
  for parts in (_prompt(1, "markers"), PromptParts()):
    assert added_slots(parts) == 0 and with_soft_slots(feature, parts, PAD) is feature
  assert added_slots(_prompt(3, "suffix")) == 3
