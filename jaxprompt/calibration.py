"""Contextual calibration (Zhao et al. 2021, "Calibrate Before Use"): the model's class probabilities
on content-free inputs ("N/A", "", "[MASK]") formatted as a real input estimate its bias p_cf, the
mean of their softmaxes over the classes; an example's probabilities p become normalize(p / p_cf),
the paper's W = diag(p_cf)^-1, b = 0.

A content-free string fills every field the task's template (or cloze pattern) reads, and the input
is encoded as featurize encodes a record's (the same Template, cloze rendering, codec and cut).
featurize itself refuses a record whose fields are all blank, which "" is by design, hence the
encoding here; a cloze pattern read as text (T5, decoders) is rendered by tasks/cloze.py, which
refuses them too, so "" is an error there (leave it out of config.calibration.content_free).

"[MASK]" is literal text, as in the paper, whose GPT-2/3 have no mask token: T5's sentinel is where
a cloze input's answer goes, and a masked LM's mask token at a field would be a second mask to fill;
a tokenizer that reads the text "[MASK]" as its mask token (BERT's) reads it so here as in any record.

With k-shot prompts (config.icl) every eval example has its own demonstrations
(icl.Demonstrations.text_before), so its content-free inputs get the same ones and p_cf is per
example: the paper calibrates a prompt with the content-free inputs of that prompt, and an average
over other examples' demonstrations would calibrate a prompt the example was never given. It costs
len(content_free) more inputs per example; zero-shot needs one group of them for all.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxprompt import experiment
from jaxprompt.tasks import cloze, icl, readers
from jaxprompt.tasks.codec import TextCodec
from jaxprompt.tasks.features import Feature
from jaxprompt.tasks.records import DataError, Record
from jaxprompt.tasks.task_spec import TaskSpec
from jaxprompt.tasks.templates import Template


def check_task(spec: TaskSpec) -> None:
  """A ValueError unless calibration applies: classes ranked by the same label texts for every example."""
  if spec.bounds:
    raise ValueError(f"config.calibration.enabled: task {spec.name!r} is a regression (bounds {spec.bounds});"
                     " contextual calibration rescales class probabilities, so it applies to classification only")
  if not spec.num_classes:
    kind = "labels tokens" if spec.token_label_names else "generates its targets"
    raise ValueError(f"config.calibration.enabled: task {spec.name!r} {kind}; contextual calibration applies to"
                     " classification only")
  if spec.candidates:
    raise ValueError(f"config.calibration.enabled: task {spec.name!r} ranks each example's own choices, which a"
                     " content-free input does not have")


def content_free_features(exp: experiment.Experiment, eval_features: Sequence[Feature]) -> list[Feature]:
  """config.calibration.content_free's inputs, formatted as `eval_features` (one task's) are: one
  group of them for zero-shot; with k-shot prompts a group per eval example, in order, each behind
  that example's demonstrations."""
  config, codec = exp.config, exp.backbone.codec
  strings = tuple(config.calibration.content_free)
  if not strings:
    raise ValueError("config.calibration.enabled needs at least one config.calibration.content_free string")
  if config.demonstrations.enabled:
    raise ValueError("config.calibration.enabled: content-free inputs are not given LM-BFF's demonstrations"
                     " (config.demonstrations), so they would not be formatted as the eval inputs are")
  task_id = eval_features[0].task_id
  spec = exp.tasks[task_id].spec
  prefixes = [""]
  if config.icl.num_shots:
    if spec.flatten == "multirc":  # its features' group numbers the questions, not the records
      raise ValueError(f"task {spec.name!r}: calibrating k-shot prompts needs each example's record position,"
                       " which flattened MultiRC features do not keep")
    shots = config.icl
    pool = readers.read_records(exp.tasks[task_id].train)
    demonstrations = icl.Demonstrations(pool, spec, shots.num_shots, shots.seed, shots.separator)
    # featurize gives record i the prefix text_before(i); a feature's group is that i.
    prefixes = [demonstrations.text_before(f.group) for f in eval_features]
  return [_content_free_feature(text, prefix, spec, codec, config.data.max_input_len, config.cloze.multi_token,
                                task_id) for prefix in prefixes for text in strings]


def _content_free_feature(text: str, prefix: str, spec: TaskSpec, codec: TextCodec, max_input_len: int,
                          multi_token: bool, task_id: int) -> Feature:
  """`text` in every field, encoded and cut as featurize does a record (unlabeled)."""
  soft_positions: list[int] = []
  try:
    if spec.pattern:
      record = _record([slot.path for slot in cloze.pattern_of(spec).slots], text)
      if codec.cloze is not None:  # a masked LM: the pattern's segments, cut as PET does, and its mask block
        num_masks = cloze.label_words(spec, codec.cloze, multi_token).num_masks
        example = cloze.encode_example(record, spec, codec.cloze, num_masks, max_input_len)
        return Feature(example.ids, [], -1, 0, task_id=task_id, token_types=example.token_types,
                       mask_positions=example.mask_positions)
      # T5 and decoders read the pattern as text; featurize refuses in-context prompts with patterns.
      inputs = codec.encode_input(cloze.text_input(record, spec, codec))
    else:
      template = Template(spec.template)
      # The prefix reads on into the template's first text; text pieces encode as one whole text
      # does (TextCodec.encode_input), so this is featurize's encoding with or without pseudo tokens.
      first, *rest = template.fill_pieces([text] * len(template.fields)) or [""]
      pieces = [prefix + first, *rest] if isinstance(first, str) else [prefix, first, *rest]
      inputs, soft = codec.encode_input_pieces(pieces)
      soft_positions = soft if template.pseudo_tokens else soft_positions
  except DataError as e:
    raise ValueError(f"task {spec.name!r}: the content-free input {text!r} does not render as an input ({e});"
                     " choose other config.calibration.content_free strings") from None
  if not inputs:
    raise ValueError(f"task {spec.name!r}: the content-free input {text!r} renders to no tokens, which a decoder"
                     " cannot continue; choose other config.calibration.content_free strings")
  kept = codec.kept_input_positions(inputs, max_input_len)
  if soft_positions and {soft_positions[i] for i in kept} != set(soft_positions):
    raise ValueError(f"task {spec.name!r}: cutting the content-free input {text!r} with its demonstrations to"
                     f" max_input_len={max_input_len} would drop pseudo tokens; raise max_input_len")
  take = lambda values: [values[i] for i in kept] if values else values
  return Feature(take(inputs), [], -1, 0, soft_positions=take(soft_positions), task_id=task_id)


def _record(paths: Sequence[str], text: str) -> Record:
  """A record holding `text` at every (dotted) path."""
  fields: dict = {}
  for path in paths:
    *parents, leaf = path.split(".")
    node = fields
    for key in parents:
      node = node.setdefault(key, {})
    node[leaf] = text
  return Record(fields, f"content-free input {text!r}")


def content_free_probabilities(scores_KxC: np.ndarray, num_strings: int) -> np.ndarray:
  """p_cf [G, C]: each group of `num_strings` content-free inputs' softmaxes over the classes, averaged
  (K = G * num_strings, the groups' inputs consecutive, as content_free_features orders them)."""
  probs_KxC = np.exp(_log_softmax(scores_KxC))
  return probs_KxC.reshape(-1, num_strings, probs_KxC.shape[-1]).mean(axis=1)


def calibrate(scores_NxC: np.ndarray, p_cf_GxC: np.ndarray) -> np.ndarray:
  """q [N, C] = normalize(softmax(scores) / p_cf) (W = diag(p_cf)^-1, b = 0): G = 1, one p_cf for all
  examples, or G = N, one each."""
  return np.exp(_log_softmax(_log_softmax(scores_NxC) - np.log(p_cf_GxC)))


def _log_softmax(scores: np.ndarray) -> np.ndarray:
  scores = np.asarray(scores, np.float64)
  return scores - np.logaddexp.reduce(scores, axis=-1, keepdims=True)
