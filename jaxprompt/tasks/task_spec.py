"""What a task is (template, labels, verbalizer, metric) and where its data comes from.

Both are plain frozen dataclasses so that configs can build them field by field:

    task = task_spec_from_config(config.task)          # or TASKS["rte"]
    train = data_source_from_config(config.data.train)
"""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxprompt.tasks.templates import Template

METRICS = ("accuracy", "f1_macro", "multirc")
FLATTENS = ("multirc",)
SOURCE_KINDS = ("tfds", "jsonl", "tsv", "csv")


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """A text-to-text task: inputs from `template`; targets are `verbalizer[label]` or `target_template`.

  `label_names[i]` is how class i's label appears in the data and `verbalizer[i]` is its target
  text. A task with a `target_template` is a generation task: targets are rendered from fields and
  examples have no class label. `flatten` names a record transform applied before featurizing
  ("multirc": one example per answer option).
  """

  name: str
  template: str
  label_names: tuple[str, ...]
  verbalizer: tuple[str, ...]
  label_field: str = "label"
  target_template: str | None = None
  metric: str = "accuracy"
  flatten: str | None = None

  def __post_init__(self):
    for key in ("label_names", "verbalizer"):
      value = getattr(self, key)
      if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"Task {self.name!r}: {key} must be a sequence of strings, got {value!r}")
      object.__setattr__(self, key, tuple(value))  # lists from configs become tuples
    if not Template(self.template).fields:
      raise ValueError(f"Task {self.name!r}: the template {self.template!r} has no {{field}} slot")
    if self.target_template is not None:
      Template(self.target_template)
    elif not self.verbalizer:
      raise ValueError(f"Task {self.name!r} needs a verbalizer (one target text per class) or a target_template")
    if self.verbalizer and len(self.verbalizer) != len(self.label_names):
      raise ValueError(
          f"Task {self.name!r}: {len(self.label_names)} label_names {self.label_names} but"
          f" {len(self.verbalizer)} verbalizer entries {self.verbalizer}"
      )
    for key in ("label_names", "verbalizer"):
      value = getattr(self, key)
      if len(set(value)) != len(value) or not all(v.strip() for v in value):
        raise ValueError(f"Task {self.name!r}: {key} must be distinct and non-blank, got {value}")
    if self.metric not in METRICS:
      raise ValueError(f"Task {self.name!r}: unknown metric {self.metric!r}; expected one of {METRICS}")
    if self.flatten is not None and self.flatten not in FLATTENS:
      raise ValueError(f"Task {self.name!r}: unknown flatten {self.flatten!r}; expected None or one of {FLATTENS}")

  @property
  def num_classes(self) -> int:
    """Number of classes; 0 for a generation task."""
    return 0 if self.target_template is not None else len(self.label_names)


@dataclasses.dataclass(frozen=True)
class DataSource:
  """Where one split's records come from: a TFDS dataset, or local jsonl / tsv / csv files.

  For tsv/csv, `columns` names the columns of header-less files; when empty, the first row of each
  file is its header. An empty tfds_name, split or data_dir means None (data_dir None: TFDS's default).
  """

  kind: str
  files: tuple[str, ...] = ()
  tfds_name: str | None = None
  split: str | None = None
  data_dir: str | None = None
  columns: tuple[str, ...] = ()

  def __post_init__(self):
    for key in ("files", "columns"):
      value = getattr(self, key)
      # One path given as a string is one file, not a tuple of characters.
      object.__setattr__(self, key, (value,) if isinstance(value, str) else tuple(str(v) for v in value))
    for key in ("tfds_name", "split", "data_dir"):
      if getattr(self, key) == "":  # configs declare unused string fields as ""
        object.__setattr__(self, key, None)
    if self.kind not in SOURCE_KINDS:
      raise ValueError(f"Unknown data source kind {self.kind!r}; expected one of {SOURCE_KINDS}")
    if self.kind == "tfds":
      if not self.tfds_name or not self.split:
        raise ValueError(f"A tfds data source needs tfds_name and split, got {self}")
      if self.files or self.columns:
        raise ValueError(f"A tfds data source takes no files or columns, got {self}")
    else:
      if not self.files:
        raise ValueError(f"A {self.kind} data source needs at least one file, got {self}")
      if self.tfds_name or self.split or self.data_dir:
        raise ValueError(f"A {self.kind} data source takes no tfds_name, split or data_dir, got {self}")
      if self.columns and self.kind == "jsonl":
        raise ValueError(f"columns apply to tsv/csv files only, got {self}")
      if len(set(self.columns)) != len(self.columns):
        raise ValueError(f"Duplicate column names in {self.columns}")


def _config_dict(cls: type, config: Any) -> dict[str, Any]:
  """The fields of `cls` from a ConfigDict or mapping; unknown keys are an error, not ignored."""
  values = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  names = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(values) - names)
  if unknown:
    raise ValueError(f"Unknown {cls.__name__} fields {unknown}; expected some of {sorted(names)}")
  return values


def task_spec_from_config(config: Any) -> TaskSpec:
  """A TaskSpec from a ConfigDict or dict whose keys are TaskSpec's fields."""
  return TaskSpec(**_config_dict(TaskSpec, config))


def data_source_from_config(config: Any) -> DataSource:
  """A DataSource from a ConfigDict or dict whose keys are DataSource's fields."""
  return DataSource(**_config_dict(DataSource, config))
