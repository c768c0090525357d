"""The classes a bank's step scores: the union of its prompts' label sets, one column each.

Requests for different tasks share a batch, so the step ranks every example against the union,
and each request reads its own prompt's columns. Where the union lives follows from the objective:

  * label texts passed to the step (T5, decoders: rank classification of each class's text): the
    union of the prompts' tokenised label texts, each distinct text once, so prompts for one task
    share its columns and the decoder scores B x (distinct texts) candidates;
  * a verbalizer bound into the step (masked LMs: label words at the mask): the union of the
    prompts' verbalizer entries, each distinct entry once, bound as one task's verbalizer;
  * heads (P-tuning v2, classifiers): every head's classes, prompt after prompt (the bank's logits).

Label texts are padded to at least `rows` rows (spare rows are all-masked and read by no prompt),
so that a prompt added at runtime whose texts still fit runs the same compiled step; a verbalizer
bound into the step is part of the program, so a new label word there means a new step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np

from jaxprompt import experiment
from jaxprompt.backbones import Backbone
from jaxprompt.serving.bank_prompt import BankPrompt, grown
from jaxprompt.tasks.task_spec import TaskSpec


@dataclasses.dataclass(frozen=True)
class LabelSpace:
  """The step's labels and, per prompt, which of the step's score columns are its classes."""

  columns: tuple[tuple[int, ...], ...]  # per prompt, its classes' columns in class order (empty: no classes)
  labels: Any  # what the objective's eval step binds (objective.labels)
  targets_CxT: np.ndarray | None  # the label texts passed to the step; None: it takes none
  target_mask_CxT: np.ndarray | None
  bound: tuple[Any, ...] = ()  # the verbalizer entries bound into the step (masked LMs)

  def same_program(self, other: LabelSpace) -> bool:
    """Whether a step compiled for `other`'s labels serves these (same bound words, same shapes)."""
    shape = lambda x: None if x is None else x.shape
    return self.bound == other.bound and shape(self.targets_CxT) == shape(other.targets_CxT)


def label_space(specs: Sequence[TaskSpec], method: BankPrompt, backbone: Backbone,
                config: ml_collections.ConfigDict, head_classes: Sequence[int] = (), spare_rows: int = 0,
                floor: LabelSpace | None = None) -> LabelSpace:
  """The union of `specs`' label sets for `method` (bank order) on `backbone`; `head_classes`:
  each prompt's head's classes (a bank of heads). Label texts keep `floor`'s rows (the serving bank's
  labels) where they fit them, else get `spare_rows` more than they need."""
  for spec in specs:
    unsupported = [key for key in ("candidates", "bounds", "token_label_names", "generate", "teacher_field")
                   if getattr(spec, key)]
    if unsupported:
      raise ValueError(f"task {spec.name!r} has {unsupported}: a bank serves classification (a verbalizer or a head)"
                       " and generation tasks")
  objective = backbone.objective(method)
  config = _scoring_config(config)
  tasks = tuple(_task(spec) for spec in specs)
  if method.objective:  # heads: prompt after prompt
    starts = np.cumsum((0, *head_classes))
    columns = tuple(tuple(range(a, b)) for a, b in zip(starts[:-1], starts[1:]))
    return LabelSpace(columns, objective.labels(tasks, backbone, config), None, None)
  classified = [spec for spec in specs if spec.num_classes]
  if not classified:
    return LabelSpace(tuple(() for _ in specs), objective.labels(tasks, backbone, config), None, None)
  max_len = config.data.max_target_len
  if objective.label_targets(classified[0], backbone.codec, max_len)[0] is not None:
    texts, columns = _distinct(
        [[_row(targets, mask) for targets, mask in zip(*objective.label_targets(spec, backbone.codec, max_len))]
         if spec.num_classes else [] for spec in specs])
    held = 0 if floor is None or floor.targets_CxT is None else len(floor.targets_CxT)
    texts += [()] * (grown(len(texts), held, spare_rows) - len(texts))  # spare rows: no tokens, read by no prompt
    targets = np.stack([np.asarray(ids + (backbone.codec.pad_id,) * (max_len - len(ids)), np.int32) for ids in texts])
    mask = np.stack([np.arange(max_len) < len(ids) for ids in texts])
    return LabelSpace(columns, objective.labels(tasks, backbone, config), targets, mask)
  entries, columns = _distinct([list(spec.verbalizer) for spec in specs])
  union = dataclasses.replace(classified[0], name="bank", label_names=tuple(str(i) for i in range(len(entries))),
                              verbalizer=tuple(entries))
  return LabelSpace(columns, objective.labels((_task(union),), backbone, config), None, None, tuple(entries))


def _row(targets_T: np.ndarray, mask_T: np.ndarray) -> tuple[int, ...]:
  return tuple(int(i) for i in targets_T[mask_T])


def _distinct(per_prompt: Sequence[Sequence[Any]]) -> tuple[list[Any], tuple[tuple[int, ...], ...]]:
  """(the distinct items in first-seen order, each prompt's items as indices into them)."""
  index: dict[Any, int] = {}
  columns = tuple(tuple(index.setdefault(item, len(index)) for item in items) for items in per_prompt)
  return list(index), columns


def _task(spec: TaskSpec) -> experiment.TaskData:
  """A task without data: the objectives' labels() read its spec only."""
  return experiment.TaskData(spec.name, spec, None, None)


def _scoring_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The config the objectives' labels() read, with what only training reads switched off: PET's
  label-word loss and auxiliary MLM (they bind a loss over one task's words), and label words of
  several tokens (their masks would change every prompt's scoring to PET's multi-mask decoding)."""
  config = config.copy_and_resolve_references()
  config.loss_over = "vocabulary"
  config.cloze.mlm_alpha = 0.0
  config.cloze.multi_token = False
  return config
