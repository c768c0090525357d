"""Records to token features: rendered inputs, verbalized (or rendered) targets, class labels.

A bad example (missing field, unknown label, blank input) raises DataError naming its file:line,
or with `skip_bad_examples` is counted and left out. Sequences longer than the maximum are cut as
the backbone's TextCodec says (T5: the end, EOS kept; decoders: the start), and counted.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from jaxprompt.tasks.readers import flatten_multirc
from jaxprompt.tasks.records import DataError, Record
from jaxprompt.tasks.task_spec import TaskSpec
from jaxprompt.tasks.templates import Template
from jaxprompt.tasks.codec import TextCodec

MAX_ERRORS_KEPT = 5
_BOOL_SPELLINGS = {"false": 0, "true": 1}


@dataclasses.dataclass(frozen=True)
class Feature:
  """One tokenized example; `label` is -1 when there is no class label."""

  inputs: list[int]  # as the codec encodes them (T5: ending with EOS)
  targets: list[int]  # the label's or rendered target's ids; empty when there is no label
  label: int
  group: int  # MultiRC: the question; otherwise the record's position in the input


@dataclasses.dataclass
class FeatureStats:
  """What featurize did: counts of kept, skipped, truncated and unlabeled examples."""

  records: int = 0
  kept: int = 0
  skipped: int = 0
  truncated_inputs: int = 0
  truncated_targets: int = 0
  unlabeled: int = 0
  longest_input: int = 0  # tokens before truncation, EOS included
  longest_target: int = 0
  errors: list[str] = dataclasses.field(default_factory=list)  # the first few skip reasons

  def summary(self) -> str:
    """One line for the log."""
    line = (
        f"{self.kept}/{self.records} examples kept, {self.skipped} skipped, {self.unlabeled} unlabeled;"
        f" truncated {self.truncated_inputs} inputs (longest {self.longest_input} tokens) and"
        f" {self.truncated_targets} targets (longest {self.longest_target})"
    )
    return line + (f"; first skipped: {self.errors[0]}" if self.errors else "")


def label_index(raw: Any, spec: TaskSpec, where: str) -> int:
  """The class index of a raw label.

  A string is looked up in `spec.label_names`; when the label names are the class indices
  ("0", "1", ...), "True"/"False" (any case) also count as 1/0. A bool is int(raw) and an int
  is the index itself (TFDS ClassLabel values), both checked against the number of classes.
  Anything else raises DataError naming the value, `where`, and the known labels.
  """
  names = spec.label_names
  index = None
  if isinstance(raw, str):
    if raw in names:
      return names.index(raw)
    if names == tuple(str(i) for i in range(len(names))):
      index = _BOOL_SPELLINGS.get(raw.strip().lower())
  elif isinstance(raw, (bool, np.bool_)):
    index = int(raw)
  elif isinstance(raw, numbers.Integral):
    index = int(raw)
  if index is not None and 0 <= index < len(names):
    return index
  raise DataError(
      f"{where}: unknown label {raw!r} ({type(raw).__name__}) for task {spec.name!r};"
      f" known labels are {list(names)} (or their indices 0..{len(names) - 1})"
  )


def featurize(
    records: Sequence[Record],
    spec: TaskSpec,
    codec: TextCodec,
    max_input_len: int,
    max_target_len: int,
    skip_bad_examples: bool = False,
    input_prefix: Callable[[int], str] | None = None,
) -> tuple[list[Feature], FeatureStats]:
  """Token features of `records` (after `spec.flatten`) and what happened to them.

  The label is read from `spec.label_field`; an absent or null field, or -1 (TFDS's label of test
  examples), means no label: label -1 and empty targets. A generation task (`target_template`)
  renders its targets and has label -1. `input_prefix(i)`, if given, is text put before the i-th
  record's rendered input (in-context demonstrations).
  """
  if max_input_len < 1 or max_target_len < 1:
    raise ValueError(f"max_input_len and max_target_len must be positive, got {max_input_len}, {max_target_len}")
  if spec.flatten == "multirc":
    records = flatten_multirc(records)
  template = Template(spec.template)
  target_template = Template(spec.target_template) if spec.target_template is not None else None
  verbalized = [codec.encode_label(text) for text in spec.verbalizer]
  stats = FeatureStats(records=len(records))
  features = []
  for position, record in enumerate(records):
    try:
      values = template.values(record.fields, record.where)
      if not any(value.strip() for value in values):
        raise DataError(f"{record.where}: empty input: the fields {list(template.fields)} are all blank")
      text = template.fill(values)
      inputs = codec.encode_input(input_prefix(position) + text if input_prefix else text)
      if target_template is not None:
        label, targets = -1, _rendered_target(target_template, record, codec)
      else:
        raw = record.fields.get(spec.label_field)
        if raw is None or (isinstance(raw, numbers.Integral) and raw == -1):
          label, targets = -1, []
        else:
          label = label_index(raw, spec, record.where)
          targets = list(verbalized[label])  # a copy: features must not share mutable lists
    except DataError as e:
      if not skip_bad_examples:
        raise
      stats.skipped += 1
      if len(stats.errors) < MAX_ERRORS_KEPT:
        stats.errors.append(str(e))
      continue
    group = int(record.fields["group"]) if spec.flatten == "multirc" else position
    stats.kept += 1
    stats.unlabeled += target_template is None and label == -1
    stats.longest_input = max(stats.longest_input, len(inputs))
    stats.longest_target = max(stats.longest_target, len(targets))
    inputs, cut_inputs = codec.truncate_input(inputs, max_input_len)
    targets, cut_targets = codec.truncate_target(targets, max_target_len)
    stats.truncated_inputs += cut_inputs
    stats.truncated_targets += cut_targets
    features.append(Feature(inputs, targets, label, group))
  return features, stats


def _rendered_target(template: Template, record: Record, codec: TextCodec) -> list[int]:
  values = template.values(record.fields, record.where)
  if not any(value.strip() for value in values):
    raise DataError(f"{record.where}: empty target: the fields {list(template.fields)} are all blank")
  return codec.encode_target(template.fill(values))


def label_targets(spec: TaskSpec, codec: TextCodec, max_target_len: int) -> tuple[np.ndarray, np.ndarray]:
  """The tokenized verbalizer of every class, padded: (targets_CxT int32, target_mask_CxT bool)."""
  if spec.num_classes == 0:
    raise ValueError(f"Task {spec.name!r} is a generation task: it has no classes to rank")
  targets_CxT = np.full((spec.num_classes, max_target_len), codec.pad_id, np.int32)
  target_mask_CxT = np.zeros((spec.num_classes, max_target_len), bool)
  for c, text in enumerate(spec.verbalizer):
    ids = codec.encode_label(text)
    # Cut verbalizers could tie two classes, so rank classification refuses them.
    if len(ids) > max_target_len:
      raise ValueError(
          f"Task {spec.name!r}: the verbalizer {text!r} is {len(ids)} tokens, more than max_target_len={max_target_len}"
      )
    targets_CxT[c, : len(ids)] = ids
    target_mask_CxT[c, : len(ids)] = True
  return targets_CxT, target_mask_CxT
