"""The HTTP server's checks of one request body, before anything is queued: the fields of a JSON
body, the prompt it names, and each input rendered alone by that prompt's task, so a request that
cannot be served fails by itself with a 4xx naming what is wrong, never inside a batch."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from jaxprompt.serving.bank import PromptBank
from jaxprompt.serving.requests import Request
from jaxprompt.tasks import cloze
from jaxprompt.tasks import features as features_lib
from jaxprompt.tasks.records import DataError, Record
from jaxprompt.tasks.task_spec import TaskSpec
from jaxprompt.tasks.templates import Template


@dataclasses.dataclass
class ApiError(Exception):
  """An error response in OpenAI's envelope: {"error": {"message", "type", "param", "code"}}."""

  status: int
  message: str
  param: str | None = None
  code: str | None = None
  type: str = "invalid_request_error"
  headers: dict[str, str] = dataclasses.field(default_factory=dict)

  def body(self) -> dict[str, Any]:
    return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclasses.dataclass(frozen=True)
class CheckedInput:
  request: Request
  prompt_tokens: int  # the rendered input's length, special tokens included


def field(body: Mapping[str, Any], name: str, types: type | tuple[type, ...], default: Any = None,
          required: bool = False) -> Any:
  """body[name] if it has one of `types` (JSON null counts as absent), else a 400 naming it."""
  value = body.get(name)
  if value is None:
    if required:
      raise ApiError(400, f"missing required field {name!r}", name)
    return default
  # JSON has no int/bool distinction Python keeps: true is not a number here.
  if not isinstance(value, types) or (isinstance(value, bool) and bool not in _as_tuple(types)):
    raise ApiError(400, f"{name!r} must be {_type_names(types)}, got {type(value).__name__}: {value!r:.80}", name)
  return value


def prompt_id(bank: PromptBank, model: str) -> int:
  """The bank's prompt named `model`; unknown ones are a 404 on 'model', as OpenAI's are."""
  try:
    return bank.prompt_id(model)
  except KeyError:
    names = [p.name for p in bank.prompts]
    raise ApiError(404, f"the model {model!r} does not exist; this server serves {names}", "model",
                   "model_not_found") from None


def input_fields(spec: TaskSpec) -> tuple[str, ...]:
  """The record fields the task's input reads (dotted paths), in order."""
  if spec.pattern:
    paths = [slot.path for slot in cloze.pattern_of(spec).slots]
  else:
    paths = list(Template(spec.template).fields)
  paths += [slot.path for slot in cloze.candidate_slots(spec)]  # each example's choices (COPA)
  return tuple(dict.fromkeys(paths))


def checked_input(bank: PromptBank, model: str, value: Any, param: str) -> CheckedInput:
  """`value` (the text of the task's one field, or an object of its fields) as a request for
  `model`, rendered alone and checked against the bank's max_input_len."""
  spec = bank.prompts[prompt_id(bank, model)].spec
  fields = input_fields(spec)
  if isinstance(value, str):
    if len(fields) != 1:
      raise ApiError(400, f"the task of {model!r} reads the fields {list(fields)}: give {param!r} as an object of"
                     " them, not a string", param)
    value = _nested(fields[0], value)
  elif not isinstance(value, Mapping):
    raise ApiError(400, f"{param!r} must be a string or an object of the fields {list(fields)}, got"
                   f" {type(value).__name__}", param)
  data = bank.exp.config.data
  try:
    (feature,), stats = features_lib.featurize([Record(dict(value), param)], spec, bank.exp.backbone.codec,
                                               data.max_input_len, data.max_target_len)
  except DataError as e:
    named = next((f for f in fields if f"field {f!r}" in str(e)), None)  # as templates' DataErrors name it
    raise ApiError(400, str(e), f"{param}.{named}" if named else param) from None
  if stats.longest_input > data.max_input_len:
    raise ApiError(400, f"{param!r} renders to {stats.longest_input} tokens, more than the {data.max_input_len}"
                   " this server's inputs may have", param, "context_length_exceeded")
  return CheckedInput(Request(model, value, rendered=(spec, feature)), len(feature.inputs))


def _nested(path: str, value: Any) -> dict[str, Any]:
  """{"a": {"b": value}} for the dotted path "a.b"."""
  *parents, leaf = path.split(".")
  record = {leaf: value}
  for key in reversed(parents):
    record = {key: record}
  return record


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
  return types if isinstance(types, tuple) else (types,)


def _type_names(types: type | tuple[type, ...]) -> str:
  names = {str: "a string", int: "an integer", float: "a number", bool: "a boolean", list: "a list", dict: "an object"}
  return " or ".join(names.get(t, t.__name__) for t in _as_tuple(types))
