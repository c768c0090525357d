"""The HTTP server over a prompt bank: OpenAI's completions and models endpoints, a classification
endpoint of ours, and a health check, on Starlette; every request is checked alone, then queued for
the dynamic batcher, which serves any mix of the bank's prompts in one batch.

    POST /v1/completions  {"model": PROMPT, "prompt": TEXT | {FIELD: TEXT, ...} | [...], "max_tokens": N,
                           "stop": STR | [STR, ...]}  -> OpenAI's text_completion object
    POST /v1/classify     {"model": PROMPT | ENSEMBLE, "input": TEXT | {FIELD: TEXT, ...} | [...]}
                          -> {"data": [{"index", "label", "scores": {LABEL: SCORE}}], ...}
                          (an ensemble's also "votes" and each member's label, from one pass)
    GET  /v1/models       -> one model per prompt and per ensemble, its "parent" the backbone
    POST /v1/prompts      {"name": NAME, "config": "configs/x.py[:arg]", "path": RUN, "overrides": {...}}
                          -> the prompt added (or replaced) at runtime, 201
    DELETE /v1/prompts/NAME -> the prompt removed
    GET  /health          -> 200 while serving, 503 once shutting down
    GET  /metrics         -> Prometheus metrics (serving/metrics.py)

Adding or removing a prompt builds a new bank on the loaded backbone and compiles its step for
every bucket in a thread, while the old bank serves on; then one assignment swaps them. A request
still queued for a prompt just removed gets a 404.

A prompt given as a string fills the task's one input field; an object gives the task's fields
by name (our extension: a two-field task such as RTE reads {"premise": ..., "hypothesis": ...}).
Completions sample as OpenAI's do: `temperature` (default 1; 0 is greedy) and `top_p` (default 1),
`n` completions per prompt; with a `seed` the same request gives the same texts, choice i drawing
with seed + i (without one, the server draws a seed per request). Streaming, best_of, penalties,
echo, logprobs and logit_bias are refused with a 400 naming the field.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
import signal
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from jaxprompt.serving import requests as requests_lib
from jaxprompt.serving.bank import PromptBank
from jaxprompt.serving.bank_file import BankFileError, config_with_overrides
from jaxprompt.serving.batcher import Batcher, Closed, QueueFull
from jaxprompt.serving.ensemble import Ensemble
from jaxprompt.serving.http_inputs import ApiError, CheckedInput, checked_input, field, input_fields, prompt_id
from jaxprompt.serving.loading import PromptSource
from jaxprompt.serving.metrics import ServerMetrics
from jaxprompt.serving.warmup import warm_up

RETRY_AFTER_S = "1"  # a full queue drains within a few batches
MAX_N = 16  # completions per prompt: each is a row of a batch
MAX_TEMPERATURE = 2.0  # OpenAI's bound
_PROMPTS = (str, dict, list)
# OpenAI's completion parameters this server has only their default of: anything else is refused.
_DEFAULT_ONLY = {"best_of": 1, "stream": False, "presence_penalty": 0, "frequency_penalty": 0, "echo": False}
_ACCEPTED = {"model", "prompt", "max_tokens", "stop", "seed", "user", "logprobs", "logit_bias", "suffix", "n",
             "temperature", "top_p", *_DEFAULT_ONLY}


class Service:
  """What the routes serve. `bank` is read afresh by every request and batch, so swapping it
  (prompts added or removed at runtime) is one assignment."""

  def __init__(self, bank: PromptBank, max_batch: int, max_wait_ms: float, max_queue: int,
               ensembles: Sequence[Ensemble] = ()):
    names = {p.name for p in bank.prompts}
    for ensemble in ensembles:
      if ensemble.name in names:
        raise ValueError(f"ensemble {ensemble.name!r} has a prompt's name")
      ensemble.labels(bank)  # its members exist and share one label set
    self.ensembles = {e.name: e for e in ensembles}
    self.bank = bank
    self.batcher = Batcher(self.serve, max_batch, max_wait_ms / 1000, max_queue)
    self.metrics = ServerMetrics(lambda: self.batcher.queued, lambda: len(self.bank.prompts))
    self.created = int(time.time())
    self.warm_up_s: float | None = None
    self.changing = asyncio.Lock()  # one bank change at a time: each builds on the bank before it

  def serve(self, requests: list[requests_lib.Request]) -> list[requests_lib.Response]:
    responses = requests_lib.serve(self.bank, requests)
    self.metrics.served([r.prompt for r in requests])
    return responses


def create_app(bank: PromptBank, max_batch: int, max_wait_ms: float, max_queue: int, warm: bool = True,
               ensembles: Sequence[Ensemble] = ()) -> Starlette:
  """The app; its lifespan warms the step up (unless `warm` is False) and runs the batcher.
  `ensembles` are served by name beside the bank's prompts."""
  service = Service(bank, max_batch, max_wait_ms, max_queue, ensembles)

  @contextlib.asynccontextmanager
  async def lifespan(app: Starlette):
    if warm:  # in a thread: the loop stays free for signals while XLA compiles
      service.warm_up_s = await asyncio.to_thread(warm_up, service.bank)
    service.batcher.start()
    yield
    await service.batcher.close()

  app = Starlette(
      routes=[Route("/v1/completions", _completions, methods=["POST"]),
              Route("/v1/classify", _classify, methods=["POST"]),
              Route("/v1/models", _models, methods=["GET"]),
              Route("/v1/prompts", _add_prompt, methods=["POST"]),
              Route("/v1/prompts/{name}", _remove_prompt, methods=["DELETE"]),
              Route("/health", _health, methods=["GET"]),
              Route("/metrics", _metrics, methods=["GET"])],
      middleware=[Middleware(BaseHTTPMiddleware, dispatch=service.metrics.middleware)],
      exception_handlers={ApiError: _api_error, HTTPException: _http_error, Exception: _server_error},
      lifespan=lifespan,
  )
  app.state.service = service
  return app


def server(app: Starlette, host: str, port: int, **config: Any) -> uvicorn.Server:
  """A uvicorn server of `app` whose SIGTERM (or SIGINT) first makes the batcher refuse new work
  (503), then lets uvicorn finish the requests in flight and run the lifespan's drain."""
  service: Service = app.state.service

  class _Server(uvicorn.Server):
    def handle_exit(self, sig: int, frame: Any) -> None:
      if sig in (signal.SIGTERM, signal.SIGINT):
        service.batcher.stop_accepting()
      super().handle_exit(sig, frame)

  return _Server(uvicorn.Config(app, host=host, port=port, log_config=None, **config))


async def _completions(http: HttpRequest) -> JSONResponse:
  service, body = _service(http), await _json_body(http)
  unknown = sorted(set(body) - _ACCEPTED)
  if unknown:
    raise ApiError(400, f"unrecognized request argument(s) {unknown}", unknown[0])
  for name, only in _DEFAULT_ONLY.items():
    value = field(body, name, type(only) if type(only) is bool else (int, float))
    if value is not None and value != only:
      raise ApiError(400, f"{name}={value!r} is not supported: this server returns each completion whole, without"
                     f" penalties ({name} may only be {only!r})", name, "unsupported_value")
  for name in ("logprobs", "suffix"):
    if body.get(name) is not None:
      raise ApiError(400, f"{name!r} is not supported", name, "unsupported_value")
  if field(body, "logit_bias", dict):
    raise ApiError(400, "'logit_bias' is not supported", "logit_bias", "unsupported_value")
  field(body, "user", str)
  n, sampling = _sampling(body)
  limit = service.bank.exp.config.max_decode_len
  max_tokens = field(body, "max_tokens", int, default=limit)
  if not 1 <= max_tokens <= limit:
    raise ApiError(400, f"max_tokens={max_tokens} is outside [1, {limit}]: this server generates at most {limit}"
                   " tokens (its bank's max_decode_len)", "max_tokens")
  stops = _stops(body)
  model = field(body, "model", str, required=True)
  if model in service.ensembles:
    raise ApiError(400, f"{model!r} is an ensemble of prompts, which classifies: use /v1/classify", "model")
  checked = _checked_inputs(service, model, body, "prompt")
  # n copies of each prompt side by side (OpenAI's choice order), copy i drawing with seed + i
  copies = [dataclasses.replace(c, request=dataclasses.replace(c.request, sampling=dataclasses.replace(
      sampling, seed=sampling.seed + i * n + j))) for i, c in enumerate(checked) for j in range(n)]
  responses = await _submit(service, copies)
  choices, completion_tokens = [], 0
  codec, tokenizer = service.bank.exp.backbone.codec, service.bank.exp.backbone.tokenizer
  for i, response in enumerate(responses):
    if response.text is None:
      raise ApiError(400, f"the backbone of {model!r} generates no text (an encoder): use /v1/classify", "model")
    text, finish = _cut(response.text, max_tokens, limit, stops, codec, tokenizer)
    completion_tokens += len(codec.encode_words(text))
    choices.append({"text": text, "index": i, "logprobs": None, "finish_reason": finish})
  prompt_tokens = sum(c.prompt_tokens for c in checked)
  return JSONResponse({
      "id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()), "model": model,
      "choices": choices,
      "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens},
  })


async def _classify(http: HttpRequest) -> JSONResponse:
  service, body = _service(http), await _json_body(http)
  unknown = sorted(set(body) - {"model", "input", "user"})
  if unknown:
    raise ApiError(400, f"unrecognized request argument(s) {unknown}", unknown[0])
  field(body, "user", str)
  model = field(body, "model", str, required=True)
  if model in service.ensembles:
    return await _classify_ensemble(service, service.ensembles[model], body)
  if not service.bank.prompts[prompt_id(service.bank, model)].spec.num_classes:
    raise ApiError(400, f"the task of {model!r} has no classes to rank: use /v1/completions", "model")
  checked = _checked_inputs(service, model, body, "input")
  responses = await _submit(service, checked)
  tokens = sum(c.prompt_tokens for c in checked)
  return JSONResponse({
      "id": f"clf-{uuid.uuid4().hex}", "object": "list", "created": int(time.time()), "model": model,
      "data": [{"object": "classification", "index": i, "label": r.label, "scores": r.scores}
               for i, r in enumerate(responses)],
      "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
  })


async def _classify_ensemble(service: Service, ensemble: Ensemble, body: Mapping[str, Any]) -> JSONResponse:
  """Every input once per member, in one submission (so in the same batches), then combined."""
  bank = service.bank
  labels = ensemble.labels(bank)
  per_member = [_checked_inputs(service, member, body, "input") for member in ensemble.members]
  checked = [inputs[i] for i in range(len(per_member[0])) for inputs in per_member]  # records side by side
  answers = ensemble.combine(labels, await _submit(service, checked))
  tokens = sum(c.prompt_tokens for c in checked)
  return JSONResponse({
      "id": f"clf-{uuid.uuid4().hex}", "object": "list", "created": int(time.time()), "model": ensemble.name,
      "data": [{"object": "classification", "index": i, "label": a.label, "scores": a.scores, "votes": a.votes,
                "members": a.members} for i, a in enumerate(answers)],
      "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
  })


async def _models(http: HttpRequest) -> JSONResponse:
  service = _service(http)
  prompts = [_model(service, p) for p in service.bank.prompts]
  first = lambda e: service.bank.prompts[service.bank.prompt_id(e.members[0])]
  ensembles = [{**_model(service, first(e)), "id": e.name, "members": list(e.members), "reduction": e.reduction}
               for e in service.ensembles.values()]
  return JSONResponse({"object": "list", "data": prompts + ensembles})


def _model(service: Service, prompt) -> dict[str, Any]:
  backbone = _backbone_name(service.bank)
  return {"id": prompt.name, "object": "model", "created": service.created, "owned_by": "jaxprompt", "root": backbone,
          "parent": backbone, "task": prompt.spec.name, "fields": list(input_fields(prompt.spec)),
          "labels": list(prompt.spec.label_names) if prompt.spec.num_classes else []}


async def _add_prompt(http: HttpRequest) -> JSONResponse:
  service, body = _service(http), await _json_body(http)
  unknown = sorted(set(body) - {"name", "config", "path", "overrides"})
  if unknown:
    raise ApiError(400, f"unrecognized request argument(s) {unknown}", unknown[0])
  name, path = field(body, "name", str, required=True), field(body, "path", str, required=True)
  try:
    config = config_with_overrides(field(body, "config", str, required=True), field(body, "overrides", dict, {}),
                                   "POST /v1/prompts: config")
  except BankFileError as e:
    raise ApiError(400, str(e), "config") from None
  if name in service.ensembles:
    raise ApiError(400, f"{name!r} is an ensemble's name", "name")
  async with service.changing:
    try:
      bank = await asyncio.to_thread(_warmed, service.bank.with_prompts, [PromptSource(name, config, path)])
      for ensemble in service.ensembles.values():  # a member replaced by a prompt of other labels
        ensemble.labels(bank)
    except (ValueError, OSError) as e:  # a checkpoint that does not fit the backbone, a missing run
      raise ApiError(400, f"prompt {name!r} was not added: {e}", "path") from None
    service.bank = bank
  return JSONResponse(_model(service, bank.prompts[bank.prompt_id(name)]), 201)


async def _remove_prompt(http: HttpRequest) -> JSONResponse:
  service, name = _service(http), http.path_params["name"]
  async with service.changing:
    prompt_id(service.bank, name)  # 404 for a name the bank lacks
    users = [e.name for e in service.ensembles.values() if name in e.members]
    if users:
      raise ApiError(400, f"{name!r} is a member of the ensembles {users}; a server keeps their members", "name")
    if len(service.bank.prompts) == 1:
      raise ApiError(400, f"{name!r} is the bank's last prompt; a server serves at least one", "name")
    service.bank = await asyncio.to_thread(_warmed, service.bank.without_prompts, [name])
  return JSONResponse({"id": name, "object": "model", "deleted": True})


def _warmed(change, argument) -> PromptBank:
  """The changed bank with its step compiled for every bucket, before any request reaches it."""
  bank = change(argument)
  warm_up(bank)
  return bank


async def _health(http: HttpRequest) -> JSONResponse:
  service = _service(http)
  if not service.batcher.accepting:
    return JSONResponse({"status": "shutting_down"}, 503, {"Retry-After": RETRY_AFTER_S})
  return JSONResponse({"status": "ok", "prompts": len(service.bank.prompts), "warm_up_s": service.warm_up_s})


async def _metrics(http: HttpRequest) -> Response:
  return _service(http).metrics.exposition()


def _service(http: HttpRequest) -> Service:
  return http.app.state.service


async def _json_body(http: HttpRequest) -> dict[str, Any]:
  try:
    body = await http.json()
  except ValueError as e:  # json.JSONDecodeError and bad UTF-8 alike
    raise ApiError(400, f"the request body is not valid JSON: {e}") from None
  if not isinstance(body, dict):
    raise ApiError(400, f"the request body must be a JSON object, got {type(body).__name__}")
  return body


def _checked_inputs(service: Service, model: str, body: Mapping[str, Any], name: str) -> list[CheckedInput]:
  """Each input of body[name] (one, or a non-empty list of them) as a checked request for `model`."""
  value = field(body, name, _PROMPTS, required=True)
  if not isinstance(value, list):
    return [checked_input(service.bank, model, value, name)]
  if not value:
    raise ApiError(400, f"{name!r} is an empty list", name)
  if any(isinstance(v, int) or isinstance(v, list) for v in value):
    raise ApiError(400, f"{name!r} holds token ids or nested lists: give texts or objects of fields", name)
  return [checked_input(service.bank, model, v, f"{name}[{i}]") for i, v in enumerate(value)]


async def _submit(service: Service, checked: list[CheckedInput]) -> list[requests_lib.Response]:
  try:
    return await service.batcher.submit([c.request for c in checked])
  except QueueFull as e:
    raise ApiError(429, f"too many requests queued ({e}); retry shortly", None, "queue_full", "rate_limit_error",
                   {"Retry-After": RETRY_AFTER_S}) from None
  except Closed as e:
    raise ApiError(503, f"{e}; retry on another replica", None, "shutting_down", "server_error",
                   {"Retry-After": RETRY_AFTER_S}) from None
  except KeyError as e:  # the bank was swapped for one without the prompt while the request waited
    raise ApiError(404, f"the model was removed while the request waited: {e.args[0]}", "model",
                   "model_not_found") from None


def _sampling(body: Mapping[str, Any]) -> tuple[int, requests_lib.SamplingParams]:
  """(n, the settings of the first completion) of a completions body, each field checked."""
  n = field(body, "n", int, default=1)
  if not 1 <= n <= MAX_N:
    raise ApiError(400, f"n={n} is outside [1, {MAX_N}]", "n")
  temperature = field(body, "temperature", (int, float), default=1.0)
  if not 0 <= temperature <= MAX_TEMPERATURE:
    raise ApiError(400, f"temperature={temperature!r} is outside [0, {MAX_TEMPERATURE}]", "temperature")
  top_p = field(body, "top_p", (int, float), default=1.0)
  if not 0 < top_p <= 1:
    raise ApiError(400, f"top_p={top_p!r} is outside (0, 1]", "top_p")
  seed = field(body, "seed", int)
  if seed is None:  # a fresh draw per request, as OpenAI's sampling without a seed
    seed = secrets.randbits(31)
  return n, requests_lib.SamplingParams(float(temperature), float(top_p), seed)


def _stops(body: Mapping[str, Any]) -> list[str]:
  stop = field(body, "stop", (str, list), default=[])
  stops = [stop] if isinstance(stop, str) else stop
  if len(stops) > 4 or not all(isinstance(s, str) and s for s in stops):
    raise ApiError(400, "'stop' must be a non-empty string or a list of at most 4 of them", "stop")
  return stops


def _cut(text: str, max_tokens: int, limit: int, stops: list[str], codec, tokenizer) -> tuple[str, str]:
  """The generation cut to `max_tokens` and before the first stop sequence, and OpenAI's
  finish_reason. The step decodes `limit` tokens: a generation that long ended without EOS."""
  ids = codec.encode_words(text)
  finish = "length" if len(ids) >= limit else "stop"
  if max_tokens < limit and len(ids) > max_tokens:  # the step decoded `limit` tokens; the client asked for fewer
    text, finish = tokenizer.decode(ids[:max_tokens]), "length"
  at = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
  if at >= 0:
    text, finish = text[:at], "stop"
  return text, finish


def _backbone_name(bank: PromptBank) -> str:
  model = bank.exp.config.model
  return model.checkpoint or f"{model.family}-{model.size} (random init)"


async def _api_error(http: HttpRequest, error: ApiError) -> JSONResponse:
  return JSONResponse(error.body(), error.status, error.headers)


async def _http_error(http: HttpRequest, error: HTTPException) -> JSONResponse:
  """Starlette's own errors (an unknown path, a wrong method) in the same envelope."""
  return await _api_error(http, ApiError(error.status_code, f"{http.method} {http.url.path}: {error.detail}"))


async def _server_error(http: HttpRequest, error: Exception) -> JSONResponse:
  """Anything unexpected (Starlette re-raises it after this response, so uvicorn logs it)."""
  return JSONResponse(ApiError(500, f"internal error: {error}", type="server_error").body(), 500)
