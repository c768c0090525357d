"""What a task is (template, labels, verbalizer, metric) and where its data comes from.

Both are plain frozen dataclasses so that configs can build them field by field:

    task = task_spec_from_config(config.task)          # or TASKS["rte"]
    train = data_source_from_config(config.data.train)
"""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxprompt.tasks.templates import Template

METRICS = ("accuracy", "f1_macro", "multirc", "span_f1", "pearson")
FLATTENS = ("multirc",)
SOURCE_KINDS = ("tfds", "jsonl", "tsv", "csv", "conll")
_DELIMITED = ("tsv", "csv")


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """A text-to-text task: inputs from `template`; targets are `verbalizer[label]` or `target_template`.

  `label_names[i]` is how class i's label appears in the data and `verbalizer[i]` is its target
  text. A task with a `target_template` is a generation task: targets are rendered from fields and
  examples have no class label. `flatten` names a record transform applied before featurizing
  ("multirc": one example per answer option). The template may hold pseudo tokens `[P0]`..`[P{N-1}]`
  (P-tuning; see templates.py).

  A token-labelling task (e.g. NER) has `token_label_names` (e.g. BIO tags) instead of classes: its
  template is one slot naming the list of words (e.g. "{tokens}"), `label_field` names the list of
  their tags (e.g. "tags"), and its metric is "span_f1".

  A cloze task (PET, LM-BFF; masked LMs) has a `pattern` instead of a template: tasks/patterns.py's
  syntax ("{~sentence} It was [MASK] ."), or LM-BFF's ("*cls**sent_0*_It_was*mask*.*sep+*", with
  `pattern_fields` naming sent_0, sent_1, ... and `sentence_limits` its first_sent_limit /
  other_sent_limit). Each class's verbalizer entry may then be several label words (a tuple:
  their logits are averaged). With `candidates` (slot expressions, e.g. "choice1|lower_first"),
  each example's choices fill the mask block instead (COPA): the label is the choice's index.
  `prepare` names a record transform applied first ("wsc_pronoun"). With `bounds` (low, high) the
  task is a regression (LM-BFF's STS-B): the label field is a score, and the two classes' label
  words are its poles, interpolated.

  With `generate` (PET's WSC) the one candidate (the referent) is generated into the mask block
  instead of scored: training keeps the positive examples (label True) and teaches the candidate's
  tokens, padding masks included; evaluation fills the masks greedily and a prediction is True when
  the words generated and the candidate's contain one another (T5's WSC comparison).

  With `mirror_choices` (PET's COPA), the training and unlabeled records are doubled with mirrored
  copies: their two candidates' fields swapped and the label flipped.

  A distillation set (PET's final classifier) has a `teacher_field`: the record field holding the
  teacher's scores, one per class; a method with a head then trains on them (KL at temperature T,
  times T²) instead of on labels.
  """

  name: str
  template: str
  label_names: tuple[str, ...]
  verbalizer: tuple[str, ...]
  label_field: str = "label"
  target_template: str | None = None
  metric: str = "accuracy"
  flatten: str | None = None
  token_label_names: tuple[str, ...] = ()
  pattern: str = ""
  pattern_fields: tuple[str, ...] = ()
  sentence_limits: tuple[int, ...] = ()
  candidates: tuple[str, ...] = ()
  prepare: str = ""
  bounds: tuple[float, ...] = ()
  teacher_field: str = ""
  mirror_choices: bool = False
  generate: bool = False

  def __post_init__(self):
    for key in ("label_names", "token_label_names", "pattern_fields", "candidates"):
      value = getattr(self, key)
      if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"Task {self.name!r}: {key} must be a sequence of strings, got {value!r}")
      object.__setattr__(self, key, tuple(value))  # lists from configs become tuples
    object.__setattr__(self, "verbalizer", self._checked_verbalizer())
    object.__setattr__(self, "sentence_limits", tuple(int(n) for n in self.sentence_limits))
    if self.pattern:
      if self.teacher_field:
        raise ValueError(f"Task {self.name!r}: teacher_field distils into a classifier's head; a cloze pattern has none")
      self._check_cloze()
      return
    if self.teacher_field and (self.token_label_names or self.target_template is not None):
      raise ValueError(f"Task {self.name!r}: teacher_field holds scores per class; a task without classes has none")
    template = Template(self.template)
    if not template.fields:
      raise ValueError(f"Task {self.name!r}: the template {self.template!r} has no {{field}} slot")
    if self.token_label_names:
      self._check_tagging(template)
      return
    if self.metric == "span_f1":
      raise ValueError(f"Task {self.name!r}: the metric 'span_f1' needs token_label_names (a token-labelling task)")
    if self.target_template is not None:
      if Template(self.target_template).pseudo_tokens:
        raise ValueError(
            f"Task {self.name!r}: pseudo tokens belong in the input template, not in {self.target_template!r}"
        )
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
    if self.metric not in METRICS or self.metric == "pearson":
      raise ValueError(f"Task {self.name!r}: unknown metric {self.metric!r}; expected one of {METRICS[:3]}"
                       " ('pearson' is a cloze regression's)")
    if self.flatten is not None and self.flatten not in FLATTENS:
      raise ValueError(f"Task {self.name!r}: unknown flatten {self.flatten!r}; expected None or one of {FLATTENS}")

  def _checked_verbalizer(self) -> tuple[str | tuple[str, ...], ...]:
    """Text per class; a cloze task's class may list several label words (a tuple of strings)."""
    words_ok = lambda v: isinstance(v, str) or (bool(self.pattern) and isinstance(v, (tuple, list)) and bool(v)
                                                and all(isinstance(w, str) for w in v))
    if isinstance(self.verbalizer, str) or not all(words_ok(v) for v in self.verbalizer):
      several = " (or, for a cloze pattern, tuples of label words)" if self.pattern else ""
      raise TypeError(f"Task {self.name!r}: verbalizer must be a sequence of strings{several}, got {self.verbalizer!r}")
    return tuple(v if isinstance(v, str) else tuple(v) for v in self.verbalizer)

  def _check_cloze(self) -> None:
    """A cloze task: a pattern with one mask block, and label words per class or per-example candidates."""
    from jaxprompt.tasks import cloze  # noqa: PLC0415 - cloze reads TaskSpec's fields

    cloze.pattern_of(self)  # parse errors name the pattern
    if self.template or self.target_template is not None or self.token_label_names:
      raise ValueError(f"Task {self.name!r} has a cloze pattern: it takes no template, target_template or token labels")
    top_level = all("." not in c.split("|")[0] for c in self.candidates)
    if self.mirror_choices and (len(self.candidates) != 2 or not top_level):
      raise ValueError(f"Task {self.name!r}: mirror_choices swaps two candidates' fields; it has {self.candidates}")
    if self.generate and (len(self.candidates) != 1 or len(self.label_names) != 2 or self.bounds):
      raise ValueError(f"Task {self.name!r}: generate fills the mask block with one candidate and labels its match"
                       f" False / True; it has candidates {self.candidates} and labels {self.label_names}")
    if self.candidates:
      if self.verbalizer:
        raise ValueError(f"Task {self.name!r}: candidates fill the mask block; a verbalizer does not apply as well")
      if len(self.label_names) != len(self.candidates) and not self.generate:
        raise ValueError(f"Task {self.name!r}: {len(self.candidates)} candidates but label_names {self.label_names}")
    elif len(self.verbalizer) != len(self.label_names) or not self.verbalizer:
      raise ValueError(
          f"Task {self.name!r}: {len(self.label_names)} label_names {self.label_names} but"
          f" {len(self.verbalizer)} verbalizer entries {self.verbalizer}"
      )
    if len(set(self.label_names)) != len(self.label_names):
      raise ValueError(f"Task {self.name!r}: label_names must be distinct, got {self.label_names}")
    if self.metric not in METRICS or self.metric == "span_f1":
      raise ValueError(f"Task {self.name!r}: metric {self.metric!r} does not apply to a cloze task")
    if (self.metric == "pearson") != bool(self.bounds):
      raise ValueError(f"Task {self.name!r}: a regression (bounds) reports the metric 'pearson', a classification"
                       f" does not; got metric {self.metric!r} with bounds {self.bounds}")
    if self.flatten is not None and self.flatten not in FLATTENS:
      raise ValueError(f"Task {self.name!r}: unknown flatten {self.flatten!r}; expected None or one of {FLATTENS}")
    object.__setattr__(self, "bounds", tuple(float(b) for b in self.bounds))
    if self.bounds and (len(self.bounds) != 2 or not self.bounds[0] < self.bounds[1] or len(self.verbalizer) != 2
                        or self.candidates):
      raise ValueError(f"Task {self.name!r}: a regression has bounds (low, high) with low < high and two label words"
                       f" (its poles), got bounds {self.bounds} and verbalizer {self.verbalizer}")
    if self.prepare and self.prepare not in cloze.PREPARES:
      raise ValueError(f"Task {self.name!r}: unknown prepare {self.prepare!r}; expected one of {sorted(cloze.PREPARES)}")

  @property
  def label_words(self) -> tuple[tuple[str, ...], ...]:
    """Each class's label words (one each, unless a cloze task lists several)."""
    return tuple((v,) if isinstance(v, str) else v for v in self.verbalizer)

  def _check_tagging(self, template: Template) -> None:
    """A token-labelling task: one slot for the words, BIO tag names, no classes or targets."""
    if len(template.fields) != 1 or template.fill([""]).strip():
      raise ValueError(
          f"Task {self.name!r} labels tokens: its template must be one slot naming the list of words, such as"
          f" '{{tokens}}', got {self.template!r}"
      )
    if self.label_names or self.verbalizer or self.target_template is not None or self.flatten is not None:
      raise ValueError(
          f"Task {self.name!r} labels tokens: it takes no label_names, verbalizer, target_template or flatten"
      )
    if self.metric != "span_f1":
      raise ValueError(f"Task {self.name!r} labels tokens: its metric must be 'span_f1', got {self.metric!r}")
    names = self.token_label_names
    if len(set(names)) != len(names) or not all(n == "O" or n[:2] in ("B-", "I-") and n[2:] for n in names):
      raise ValueError(
          f"Task {self.name!r}: token_label_names must be distinct BIO tags ('O', 'B-<type>', 'I-<type>'), got {names}"
      )

  @property
  def num_classes(self) -> int:
    """Number of classes; 0 for a generation or token-labelling task."""
    return 0 if self.target_template is not None or self.token_label_names else len(self.label_names)

  @property
  def num_pseudo_tokens(self) -> int:
    """How many P-tuning pseudo tokens ([P0], [P1], ...) the template has; 0 when none."""
    return 0 if self.pattern else len(Template(self.template).pseudo_tokens)


@dataclasses.dataclass(frozen=True)
class DataSource:
  """Where one split's records come from: a TFDS dataset, or local jsonl / tsv / csv / conll files.

  For tsv/csv, `columns` names the columns of header-less files; when empty, the first row of each
  file is its header. A conll file holds one sentence per record (see conll.py). An empty tfds_name,
  split or data_dir means None (data_dir None: TFDS's default).
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
      if self.columns and self.kind not in _DELIMITED:
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
