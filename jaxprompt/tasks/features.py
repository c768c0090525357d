"""Records to token features: rendered inputs, verbalized (or rendered) targets, class labels;
P-tuning's pseudo-token positions; a token-labelling task's per-token tags.

A bad example (missing field, unknown label, blank input) raises DataError naming its file:line,
or with `skip_bad_examples` is counted and left out. Sequences longer than the maximum are cut as
the backbone's TextCodec says (T5: the end, EOS kept; decoders: the start), and counted; a cut that
would drop a pseudo token is a bad example, not a silent change of the prompt.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from jaxprompt.tasks import cloze
from jaxprompt.tasks.codec import TextCodec
from jaxprompt.tasks.readers import flatten_multirc
from jaxprompt.tasks.records import DataError, Record
from jaxprompt.tasks.tagging import words_and_tags
from jaxprompt.tasks.task_spec import TaskSpec
from jaxprompt.tasks.templates import Template

MAX_ERRORS_KEPT = 5
_BOOL_SPELLINGS = {"false": 0, "true": 1}


@dataclasses.dataclass(frozen=True)
class Feature:
  """One tokenized example; `label` is -1 when there is no class label."""

  inputs: list[int]  # as the codec encodes them (T5: ending with EOS)
  targets: list[int]  # the label's or rendered target's ids; empty when there is no label
  label: int
  group: int  # MultiRC: the question; otherwise the record's position in the input
  # Aligned with inputs: i where pseudo token [Pi] sits (its id is the codec's pad_id), else -1.
  # Empty when the template has no pseudo tokens.
  soft_positions: list[int] = dataclasses.field(default_factory=list)
  task_id: int = 0  # which task of a mixture (mix_tasks) the example belongs to
  # Aligned with inputs: the tag index at each word's first sub-token, -1 elsewhere (ignored).
  # Empty for tasks that do not label tokens.
  token_labels: list[int] = dataclasses.field(default_factory=list)
  # Cloze tasks: each input's token type (BERT's segment ids; empty: all 0), where the mask block's
  # masks sit, and each example's own choices' ids (COPA; empty for a verbalizer).
  token_types: list[int] = dataclasses.field(default_factory=list)
  mask_positions: list[int] = dataclasses.field(default_factory=list)
  candidates: list[list[int]] = dataclasses.field(default_factory=list)
  score: float = float("nan")  # a regression's gold score (its label is -1); NaN when unscored
  # A distillation set's teacher scores per class (TaskSpec.teacher_field; PET's final classifier).
  teacher_logits: list[float] = dataclasses.field(default_factory=list)

  def __post_init__(self):
    for key in ("soft_positions", "token_labels", "token_types"):
      if getattr(self, key) and len(getattr(self, key)) != len(self.inputs):
        raise ValueError(f"Feature.{key} has {len(getattr(self, key))} entries for {len(self.inputs)} inputs")


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
  words_without_tokens: int = 0  # token labelling: words the vocabulary encodes to nothing (their tag is lost)
  errors: list[str] = dataclasses.field(default_factory=list)  # the first few skip reasons

  def skip(self, error: DataError, skip_bad_examples: bool) -> None:
    """Counts a bad example, keeping its reason among the first few; raises it when not skipping."""
    if not skip_bad_examples:
      raise error
    self.skipped += 1
    if len(self.errors) < MAX_ERRORS_KEPT:
      self.errors.append(str(error))

  def summary(self) -> str:
    """One line for the log."""
    line = (
        f"{self.kept}/{self.records} examples kept, {self.skipped} skipped, {self.unlabeled} unlabeled;"
        f" truncated {self.truncated_inputs} inputs (longest {self.longest_input} tokens) and"
        f" {self.truncated_targets} targets (longest {self.longest_target})"
    )
    if self.words_without_tokens:
      line += f"; {self.words_without_tokens} words encode to no tokens (their tags are left out)"
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


def with_mirrored_choices(records: list[Record], spec) -> list[Record]:
  """The records, then their mirrors: the two candidates' fields swapped, the label flipped (PET's
  COPA training and unlabeled sets, pet/tasks.py); an unlabeled record's mirror has no label."""
  if not spec.mirror_choices:
    return records
  first, second = (slot.path for slot in cloze.candidate_slots(spec))
  mirrors = []
  for record in records:
    fields, raw = dict(record.fields), record.fields.get(spec.label_field)
    fields[first], fields[second] = record.fields[second], record.fields[first]
    if raw is not None and raw != -1:
      fields[spec.label_field] = 1 - label_index(raw, spec, record.where)
    mirrors.append(Record(fields, f"{record.where} (mirrored)"))
  return list(records) + mirrors


def generation_training_records(records: Sequence[Record], spec: TaskSpec, seed: int) -> list[Record]:
  """A generated candidate's training records (PET's WSC, pet/tasks.py and task_helpers.py): the
  positive examples only, each with its own random 0-3 padding masks (seeded by its position)."""
  positives = [(i, r) for i, r in enumerate(records)
               if r.fields.get(spec.label_field) is not None and label_index(r.fields[spec.label_field], spec, r.where)]
  draw = lambda i: int(np.random.default_rng((seed, i)).integers(0, 4))
  return [Record({**r.fields, cloze.GENERATION_PADDING: draw(i)}, r.where) for i, r in positives]


def featurize(
    records: Sequence[Record],
    spec: TaskSpec,
    codec: TextCodec,
    max_input_len: int,
    max_target_len: int,
    skip_bad_examples: bool = False,
    input_prefix: Callable[[int], str] | None = None,
    multi_token: bool = False,
) -> tuple[list[Feature], FeatureStats]:
  """Token features of `records` (after `spec.flatten`) and what happened to them.

  The label is read from `spec.label_field`; an absent or null field, or -1 (TFDS's label of test
  examples), means no label: label -1 and empty targets. A generation task (`target_template`)
  renders its targets and has label -1. `input_prefix(i)`, if given, is text put before the i-th
  record's rendered input (in-context demonstrations; a cloze pattern's on T5 and decoders). A token-labelling task encodes the words one
  by one and has label -1, empty targets and `token_labels`; a record without tags is unlabeled
  (every token label -1). A cloze task fills its pattern (truncated as PET does, never the mask or
  the pattern's text) with as many masks as its longest label word (`multi_token`; else label words
  must be one token) or, with candidates, as the longest of each example's choices. On T5 and decoders
  (no `codec.cloze`) a cloze pattern is rendered as text and its classes ranked as texts (cloze.py);
  inputs are cut as the codec says, and `multi_token` does not apply.
  """
  if spec.pattern and codec.cloze is not None:
    return _cloze_features(records, spec, codec, max_input_len, skip_bad_examples, input_prefix, multi_token)
  if spec.pattern:
    cloze.check_text_family(spec, codec)
  if max_input_len < 1 or max_target_len < 1:
    raise ValueError(f"max_input_len and max_target_len must be positive, got {max_input_len}, {max_target_len}")
  if spec.token_label_names and input_prefix is not None:
    raise ValueError(f"Task {spec.name!r} labels tokens: in-context demonstrations (input_prefix) are not supported")
  if spec.flatten == "multirc":
    records = flatten_multirc(records)
  template = None if spec.pattern else Template(spec.template)
  target_template = Template(spec.target_template) if spec.target_template is not None else None
  verbalized = [] if spec.candidates else [codec.encode_label(text) for text in cloze.label_texts(spec, codec)]
  # T5's cut keeps the input's start: a long cloze input could lose its sentinel, the mask itself.
  sentinel = codec.encode_words(codec.cloze_sentinels[0]) if spec.pattern and codec.cloze_sentinels else []
  stats = FeatureStats(records=len(records))
  features = []
  for position, record in enumerate(records):
    try:
      if spec.token_label_names:
        example = _tagged_example(record, spec, template, codec)
      elif spec.pattern:  # a prefix: LM-BFF's demonstrations on text families (demonstrations.py)
        prefix = input_prefix(position) if input_prefix else ""
        inputs = codec.encode_input(prefix + cloze.text_input(record, spec, codec))
        # Each example's own choices (COPA) are its "verbalizer": the gold one is its target.
        choices = [codec.encode_label(text) for text in cloze.candidate_texts(record, spec, codec)]
        example = _labelled_example(record, spec, inputs, [], choices or verbalized)._replace(candidates=tuple(choices))
      else:
        prefix = input_prefix(position) if input_prefix else ""
        example = _text_example(record, spec, template, target_template, verbalized, codec, prefix)
      teacher = teacher_logits(record, spec)
      kept = codec.kept_input_positions(example.inputs, max_input_len)
      _check_pseudo_tokens_kept(example.soft_positions, kept, max_input_len, record.where)
      if sentinel:
        _check_sentinel_kept(example.inputs, kept, sentinel[0], codec, max_input_len, record.where)
    except DataError as e:
      stats.skip(e, skip_bad_examples)
      continue
    group = int(record.fields["group"]) if spec.flatten == "multirc" else position
    stats.kept += 1
    stats.unlabeled += not example.labelled
    stats.words_without_tokens += example.words_without_tokens
    stats.longest_input = max(stats.longest_input, len(example.inputs))
    stats.longest_target = max(stats.longest_target, len(example.targets))
    cut_inputs = len(kept) < len(example.inputs)
    take = lambda values: [values[i] for i in kept] if cut_inputs and values else values
    targets, cut_targets = codec.truncate_target(example.targets, max_target_len)
    stats.truncated_inputs += cut_inputs
    stats.truncated_targets += cut_targets
    features.append(Feature(
        take(example.inputs), targets, example.label, group, soft_positions=take(example.soft_positions),
        token_labels=take(example.token_labels), candidates=list(example.candidates), teacher_logits=teacher,
    ))
  return features, stats


def teacher_logits(record: Record, spec: TaskSpec) -> list[float]:
  """The record's teacher scores (one float per class) from `spec.teacher_field`; [] when it has none
  (an eval set's records, say)."""
  value = record.fields.get(spec.teacher_field) if spec.teacher_field else None
  if value is None:
    return []
  ok = isinstance(value, (list, tuple)) and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value)
  if not ok or len(value) != spec.num_classes or not np.all(np.isfinite(value)):
    raise DataError(f"{record.where}: {spec.teacher_field!r} must be {spec.num_classes} finite numbers (one per class"
                    f" of {spec.label_names}), got {value!r:.120}")
  return [float(v) for v in value]


def _cloze_features(
    records: Sequence[Record], spec: TaskSpec, codec: TextCodec, max_input_len: int, skip_bad_examples: bool,
    input_prefix: Callable[[int], str] | None, multi_token: bool,
) -> tuple[list[Feature], FeatureStats]:
  """featurize for a cloze pattern on a masked LM: filled, tokenized segment by segment, its mask block marked."""
  if input_prefix is not None:
    raise ValueError(f"Task {spec.name!r}: in-context demonstrations are not supported with a cloze pattern")
  if spec.flatten == "multirc":
    records = flatten_multirc(records)
  num_masks = cloze_mask_count(spec, codec, multi_token)
  stats, features = FeatureStats(records=len(records)), []
  for position, record in enumerate(records):
    try:
      feature, truncated = cloze_feature(record, spec, codec, num_masks, max_input_len, position)
    except DataError as e:
      stats.skip(e, skip_bad_examples)
      continue
    stats.kept += 1
    stats.unlabeled += feature.label == -1 and not np.isfinite(feature.score)
    stats.truncated_inputs += truncated
    stats.longest_input = max(stats.longest_input, len(feature.inputs))
    features.append(feature)
  return features, stats


def cloze_mask_count(spec: TaskSpec, codec: TextCodec, multi_token: bool) -> int:
  """The mask block's size: the longest label word's tokens (1 with per-example candidates, which size it per example)."""
  return 1 if spec.candidates else cloze.label_words(spec, codec.cloze, multi_token).num_masks


def cloze_feature(record: Record, spec: TaskSpec, codec: TextCodec, num_masks: int, max_input_len: int, position: int,
                  pattern: cloze.ClozePattern | None = None) -> tuple[Feature, bool]:
  """(the feature, whether its input was cut) of one record of a cloze task on a masked LM, with the
  task's pattern or `pattern` (LM-BFF's demonstrations appended); DataError when it is bad."""
  example = cloze.encode_example(record, spec, codec.cloze, num_masks, max_input_len, pattern)
  raw = record.fields.get(spec.label_field)
  unlabeled = raw is None or (raw == "" if spec.bounds else isinstance(raw, numbers.Integral) and raw == -1)
  score = float("nan") if unlabeled or not spec.bounds else _score(raw, spec, record.where)
  label = -1 if unlabeled or spec.bounds else label_index(raw, spec, record.where)
  group = int(record.fields["group"]) if spec.flatten == "multirc" else position
  return Feature(example.ids, [], label, group, token_types=example.token_types, mask_positions=example.mask_positions,
                 candidates=example.candidates, score=score), example.truncated


def _score(raw: Any, spec: TaskSpec, where: str) -> float:
  """A regression's gold score, which must lie within the task's bounds."""
  try:
    score = float(raw)
  except (TypeError, ValueError):
    raise DataError(f"{where}: the score {raw!r} of regression task {spec.name!r} is not a number") from None
  low, high = spec.bounds
  if not low <= score <= high:
    raise DataError(f"{where}: the score {score} of regression task {spec.name!r} is outside its bounds {spec.bounds}")
  return score


class _Example(NamedTuple):
  """One record encoded, before truncation."""

  inputs: list[int]
  soft_positions: list[int]  # empty: no pseudo tokens
  token_labels: list[int]  # empty: not a token-labelling task
  targets: list[int]
  label: int
  labelled: bool  # False: counted as unlabeled
  words_without_tokens: int = 0
  candidates: tuple[list[int], ...] = ()  # a cloze task's per-example choices on a decoder


def _text_example(
    record: Record, spec: TaskSpec, template: Template, target_template: Template | None,
    verbalized: list[list[int]], codec: TextCodec, prefix: str,
) -> _Example:
  """The rendered input (split at pseudo tokens, if any) and the label's or rendered target."""
  values = template.values(record.fields, record.where)
  if not any(value.strip() for value in values):
    raise DataError(f"{record.where}: empty input: the fields {list(template.fields)} are all blank")
  soft_positions: list[int] = []
  if template.pseudo_tokens:
    pieces = [prefix, *template.fill_pieces(values)]
    if isinstance(pieces[1], str):  # the prefix reads on into the template's first text
      pieces[:2] = [pieces[0] + pieces[1]]
    inputs, soft_positions = codec.encode_input_pieces(pieces)
  else:
    inputs = codec.encode_input(prefix + template.fill(values))
  if target_template is not None:
    return _Example(inputs, soft_positions, [], _rendered_target(target_template, record, codec), -1, True)
  return _labelled_example(record, spec, inputs, soft_positions, verbalized)


def _labelled_example(
    record: Record, spec: TaskSpec, inputs: list[int], soft_positions: list[int], verbalized: list[list[int]],
) -> _Example:
  """The encoded input with the record's class label and its verbalized target (none when unlabeled)."""
  raw = record.fields.get(spec.label_field)
  if raw is None or (isinstance(raw, numbers.Integral) and raw == -1):
    return _Example(inputs, soft_positions, [], [], -1, False)
  label = label_index(raw, spec, record.where)
  # A copy: features must not share mutable lists.
  return _Example(inputs, soft_positions, [], list(verbalized[label]), label, True)


def _tagged_example(record: Record, spec: TaskSpec, template: Template, codec: TextCodec) -> _Example:
  """The words encoded one by one; each word's tag on its first sub-token."""
  words, tags = words_and_tags(record, spec, template)
  inputs, word_starts = codec.encode_input_words(words)
  encoded = sum(w >= 0 for w in word_starts)
  if not encoded:
    raise DataError(f"{record.where}: empty input: none of the words {words!r:.80} encodes to a token")
  token_labels = [tags[w] if w >= 0 and tags is not None else -1 for w in word_starts]
  return _Example(inputs, [], token_labels, [], -1, tags is not None, len(words) - encoded)


def _check_pseudo_tokens_kept(soft_positions: list[int], kept: list[int], max_input_len: int, where: str) -> None:
  """A DataError if truncation to `kept` would drop a pseudo token."""
  if not soft_positions or len(kept) == len(soft_positions):
    return
  dropped = sorted(set(soft_positions) - {soft_positions[i] for i in kept} - {-1})
  if dropped:
    raise DataError(
        f"{where}: the input is {len(soft_positions)} tokens; cutting it to max_input_len={max_input_len} would"
        f" drop the pseudo tokens {[f'[P{i}]' for i in dropped]}: raise max_input_len or skip_bad_examples"
    )


def _check_sentinel_kept(
    inputs: list[int], kept: list[int], sentinel_id: int, codec: TextCodec, max_input_len: int, where: str
) -> None:
  """A DataError if truncation to `kept` would drop the sentinel that stands for a cloze pattern's mask."""
  if len(kept) < len(inputs) and sentinel_id in inputs and inputs.index(sentinel_id) not in set(kept):
    raise DataError(
        f"{where}: the input is {len(inputs)} tokens; cutting it to max_input_len={max_input_len} would drop the"
        f" mask's sentinel {codec.cloze_sentinels[0]}: raise max_input_len or skip_bad_examples"
    )


def _rendered_target(template: Template, record: Record, codec: TextCodec) -> list[int]:
  values = template.values(record.fields, record.where)
  if not any(value.strip() for value in values):
    raise DataError(f"{record.where}: empty target: the fields {list(template.fields)} are all blank")
  return codec.encode_target(template.fill(values))


def label_targets(spec: TaskSpec, codec: TextCodec, max_target_len: int) -> tuple[np.ndarray, np.ndarray]:
  """The tokenized label text of every class, padded: (targets_CxT int32, target_mask_CxT bool).

  A class's text is its verbalizer entry; a cloze task's is its label word in the family's form
  (cloze.label_texts).
  """
  if spec.num_classes == 0:
    kind = "a token-labelling" if spec.token_label_names else "a generation"
    raise ValueError(f"Task {spec.name!r} is {kind} task: it has no classes to rank")
  targets_CxT = np.full((spec.num_classes, max_target_len), codec.pad_id, np.int32)
  target_mask_CxT = np.zeros((spec.num_classes, max_target_len), bool)
  for c, text in enumerate(cloze.label_texts(spec, codec)):
    ids = codec.encode_label(text)
    # Cut verbalizers could tie two classes, so rank classification refuses them.
    if len(ids) > max_target_len:
      raise ValueError(
          f"Task {spec.name!r}: the verbalizer {text!r} is {len(ids)} tokens, more than max_target_len={max_target_len}"
      )
    targets_CxT[c, : len(ids)] = ids
    target_mask_CxT[c, : len(ids)] = True
  return targets_CxT, target_mask_CxT
