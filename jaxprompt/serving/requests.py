"""Serving requests from a bank: each rendered with its prompt's task (and its soft tokens' slots),
batched by input length across prompts, one jitted step per batch, and read back per request.

A request names a prompt and gives a record's fields, as the prompt's task template (or cloze
pattern) reads them, and how its text is generated: greedily (the default) or sampled with its
own temperature, top-p and seed. Its response holds, where the bank's step computes them, the rank
classification over its task's classes (the best label and every label's score) and the generation.
Sampling settings travel as batch columns (models/sampling.py), so greedy and sampled requests
share a batch and one compiled step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from jaxprompt import sharding as sharding_lib
from jaxprompt.models import sampling as sampling_lib
from jaxprompt.serving.bank import PromptBank
from jaxprompt.serving.soft_slots import with_soft_slots
from jaxprompt.tasks import features as features_lib
from jaxprompt.tasks import pipeline
from jaxprompt.tasks.records import Record
from jaxprompt.tasks.task_spec import TaskSpec

SCORE_KEYS = ("label_scores", "class_logits")  # rank classification's scores / a verbalizer's or head's logits
SEED_MODULUS = 2**31  # seeds are taken modulo this: the step's seed column is int32


@dataclasses.dataclass(frozen=True)
class SamplingParams:
  """How a request's text is generated: temperature 0 is greedy (top_p and seed then do nothing)."""

  temperature: float = 0.0
  top_p: float = 1.0
  seed: int = 0

  def __post_init__(self):
    if not 0.0 <= self.temperature < float("inf"):
      raise ValueError(f"temperature={self.temperature!r} must be finite and >= 0")
    if not 0.0 < self.top_p <= 1.0:
      raise ValueError(f"top_p={self.top_p!r} must be in (0, 1]")


GREEDY = SamplingParams()
GREEDY_FILLERS = (0.0, 1.0, 0)  # a padding row's temperature, top_p and seed


@dataclasses.dataclass(frozen=True)
class Request:
  prompt: str  # a bank prompt's name
  fields: Mapping[str, Any]  # the record its task renders
  sampling: SamplingParams = GREEDY
  # Its feature where it was rendered already (a server checks each request alone first), with the
  # task it was rendered for: a prompt replaced meanwhile by one of another task renders it anew.
  rendered: tuple[TaskSpec, features_lib.Feature] | None = dataclasses.field(default=None, compare=False, repr=False)


@dataclasses.dataclass(frozen=True)
class Response:
  label: str | None  # the best class's label name; None: the task has no classes
  scores: dict[str, float]  # per label name, what rank classification compares (log-probability or logit)
  text: str | None  # the generation; None where the backbone generates nothing (encoders)


def render(bank: PromptBank, requests: Sequence[Request]) -> list[features_lib.Feature]:
  """Each request's feature, as its prompt's task renders a record (bad fields raise DataError)."""
  config, codec = bank.exp.config, bank.exp.backbone.codec
  feats = []
  for i, request in enumerate(requests):
    spec = bank.prompts[bank.prompt_id(request.prompt)].spec
    if request.rendered is not None and request.rendered[0] == spec:
      feats.append(request.rendered[1])
      continue
    # A multi-token cloze verbalizer is refused when the bank is built: one mask per pattern.
    (feature,), _ = features_lib.featurize([Record(dict(request.fields), f"request {i} ({request.prompt})")], spec,
                                           codec, config.data.max_input_len, config.data.max_target_len)
    feats.append(feature)
  return feats


def step_outputs(bank: PromptBank, requests: Sequence[Request]) -> dict[str, np.ndarray]:
  """The eval step's per-example outputs for `requests`, in their order (shortest first in batches)."""
  config, pad_id = bank.exp.config, bank.exp.backbone.codec.pad_id
  feats = [with_soft_slots(feature, bank.prompts[bank.prompt_id(request.prompt)].parts, pad_id)
           for feature, request in zip(render(bank, requests), requests, strict=True)]
  order = np.argsort([len(f.inputs) for f in feats], kind="stable")  # similar lengths pad to small buckets
  columns_N = _request_columns(bank, requests, order)
  size, gathered = config.eval_batch_size, {}
  with sharding_lib.activate(bank.exp.mesh, bank.exp.rules):
    for start in range(0, len(feats), size):
      chunk = order[start : start + size]
      rows = bank.batch_rows(len(chunk))  # the last (or only) batch: as few padding rows as the bank's sizes allow
      (local,) = pipeline.eval_batches([feats[i] for i in chunk], rows, bank.input_buckets[-1],
                                       config.data.max_target_len, bank.input_buckets, jax.process_index(),
                                       jax.process_count(), bank.exp.backbone.codec.pad_inputs_left)
      for key, (column_N, filler) in columns_N.items():  # padding rows: any prompt, greedy
        column = np.full(rows, filler, column_N.dtype)
        column[: len(chunk)] = column_N[start : start + size]
        local[key] = _local_rows(column)
      batch = pipeline.to_global(local, bank.exp.batch_sharding)
      out = bank.eval_step(bank.tables, bank.exp.frozen, batch, bank.labels.targets_CxT, bank.labels.target_mask_CxT)
      for name, value in out.items():
        rows_out = np.asarray(multihost_utils.process_allgather(value, tiled=True))
        gathered.setdefault(name, []).append(rows_out[: len(chunk)])
  outputs = {}
  for name, parts in gathered.items():  # every output is per example ([B] or [B, C]): no column depends on L
    rows = np.concatenate(parts)
    outputs[name] = np.empty_like(rows)
    outputs[name][order] = rows
  return outputs


def serve(bank: PromptBank, requests: Sequence[Request]) -> list[Response]:
  """Every request's response, in order; requests for any of the bank's prompts may be mixed."""
  outputs = step_outputs(bank, requests)
  scores = next((outputs[k] for k in SCORE_KEYS if k in outputs), None)
  tokenizer, eos_id = bank.exp.backbone.tokenizer, bank.exp.backbone.codec.eos_id
  responses = []
  for i, request in enumerate(requests):
    p = bank.prompt_id(request.prompt)
    spec, columns = bank.prompts[p].spec, bank.labels.columns[p]
    label, by_label = None, {}
    if columns:
      own = scores[i, list(columns)]
      by_label = {name: float(s) for name, s in zip(spec.label_names, own, strict=True)}
      label = spec.label_names[int(np.argmax(own))]
    text = None
    if "decoded" in outputs:
      ids = [int(t) for t in outputs["decoded"][i]]
      text = tokenizer.decode(ids[: ids.index(eos_id)] if eos_id in ids else ids)
    responses.append(Response(label, by_label, text))
  return responses


def _request_columns(bank: PromptBank, requests: Sequence[Request],
                     order: np.ndarray) -> dict[str, tuple[np.ndarray, Any]]:
  """The per-request batch columns (in `order`) beside the features, each with its padding value:
  the prompt id, and the sampling settings (every batch carries them, so that one compiled step
  serves greedy and sampled requests alike; a step that generates nothing reads none of them)."""
  take = lambda values, dtype: np.array(values, dtype)[order]
  settings = [r.sampling for r in requests]
  vocab = bank.exp.backbone.tokenizer.vocab_size  # what can be decoded: no draw past it
  sampling = (take([s.temperature for s in settings], np.float32), take([s.top_p for s in settings], np.float32),
              take([s.seed % SEED_MODULUS for s in settings], np.int32), np.full(len(requests), vocab, np.int32))
  return {"prompt_id": (take([bank.prompt_id(r.prompt) for r in requests], np.int32), -1),
          **dict(zip(sampling_lib.BATCH_KEYS, zip(sampling, (*GREEDY_FILLERS, vocab)), strict=True))}


def _local_rows(ids_G: np.ndarray) -> np.ndarray:
  """This process's share of a global batch's rows (pipeline.eval_batches's split)."""
  local = len(ids_G) // jax.process_count()
  return ids_G[jax.process_index() * local : (jax.process_index() + 1) * local]

