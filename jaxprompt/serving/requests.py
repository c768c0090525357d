"""Serving requests from a bank: each rendered with its prompt's task, batched by input length
across prompts, one jitted step per batch, and read back per request.

A request names a prompt and gives a record's fields, as the prompt's task template (or cloze
pattern) reads them. Its response holds, where the bank's step computes them, the rank
classification over its task's classes (the best label and every label's score) and the greedy
generation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from jaxprompt import sharding as sharding_lib
from jaxprompt.serving.bank import PromptBank
from jaxprompt.tasks import features as features_lib
from jaxprompt.tasks import pipeline
from jaxprompt.tasks.records import Record

SCORE_KEYS = ("label_scores", "class_logits")  # rank classification's scores / a verbalizer's or head's logits


@dataclasses.dataclass(frozen=True)
class Request:
  prompt: str  # a bank prompt's name
  fields: Mapping[str, Any]  # the record its task renders


@dataclasses.dataclass(frozen=True)
class Response:
  label: str | None  # the best class's label name; None: the task has no classes
  scores: dict[str, float]  # per label name, what rank classification compares (log-probability or logit)
  text: str | None  # the greedy generation; None where the backbone generates nothing (encoders)


def render(bank: PromptBank, requests: Sequence[Request]) -> list[features_lib.Feature]:
  """Each request's feature, as its prompt's task renders a record (bad fields raise DataError)."""
  config, codec = bank.exp.config, bank.exp.backbone.codec
  feats = []
  for i, request in enumerate(requests):
    spec = bank.prompts[bank.prompt_id(request.prompt)].spec
    # A multi-token cloze verbalizer is refused when the bank is built: one mask per pattern.
    (feature,), _ = features_lib.featurize([Record(dict(request.fields), f"request {i} ({request.prompt})")], spec,
                                           codec, config.data.max_input_len, config.data.max_target_len)
    feats.append(feature)
  return feats


def step_outputs(bank: PromptBank, requests: Sequence[Request]) -> dict[str, np.ndarray]:
  """The eval step's per-example outputs for `requests`, in their order (shortest first in batches)."""
  config = bank.exp.config
  feats = render(bank, requests)
  order = np.argsort([len(f.inputs) for f in feats], kind="stable")  # similar lengths pad to small buckets
  prompt_ids = np.array([bank.prompt_id(r.prompt) for r in requests], np.int32)[order]
  size = config.eval_batch_size
  batches = pipeline.eval_batches([feats[i] for i in order], size, config.data.max_input_len,
                                  config.data.max_target_len, tuple(config.data.bucket_lengths),
                                  jax.process_index(), jax.process_count(), bank.exp.backbone.codec.pad_inputs_left)
  columns: dict[str, list[np.ndarray]] = {}
  with sharding_lib.activate(bank.exp.mesh, bank.exp.rules):
    for start, local in zip(range(0, len(feats), size), batches, strict=True):
      ids = np.full(size, -1, np.int32)
      ids[: len(prompt_ids[start : start + size])] = prompt_ids[start : start + size]
      local["prompt_id"] = _local_rows(ids)
      batch = pipeline.to_global(local, bank.exp.batch_sharding)
      out = bank.eval_step(bank.tables, bank.exp.frozen, batch, bank.labels.targets_CxT, bank.labels.target_mask_CxT)
      for name, value in out.items():
        columns.setdefault(name, []).append(np.asarray(multihost_utils.process_allgather(value, tiled=True)))
  outputs = {}
  for name, parts in columns.items():  # every output is per example ([B] or [B, C]): no column depends on L
    rows = np.concatenate(parts)[: len(feats)]
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


def _local_rows(ids_G: np.ndarray) -> np.ndarray:
  """This process's share of a global batch's rows (pipeline.eval_batches's split)."""
  local = len(ids_G) // jax.process_count()
  return ids_G[jax.process_index() * local : (jax.process_index() + 1) * local]

