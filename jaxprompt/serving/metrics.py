"""The HTTP server's Prometheus metrics (GET /metrics), on prometheus_client: what a team running
many prompts behind one endpoint watches — requests and their latency per endpoint and status,
requests per prompt, the batch sizes dynamic batching achieves, the queue's depth, the prompts
served. Each app has its own registry, so several servers in one process (tests) never share one.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.requests import Request as HttpRequest
from starlette.responses import Response as HttpResponse

_LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServerMetrics:
  def __init__(self, queue_depth: Callable[[], int], prompts: Callable[[], int]):
    self.registry = CollectorRegistry()
    self.requests = Counter("jaxprompt_http_requests", "HTTP requests answered.", ["endpoint", "status"],
                            registry=self.registry)
    self.latency = Histogram("jaxprompt_http_request_seconds", "Time from a request's arrival to its answer.",
                             ["endpoint"], buckets=_LATENCY_BUCKETS_S, registry=self.registry)
    self.prompt_requests = Counter("jaxprompt_prompt_requests", "Inputs served, per prompt (the model name).",
                                   ["model"], registry=self.registry)
    self.batch_size = Histogram("jaxprompt_batch_size", "Inputs per batch the step served.", buckets=_BATCH_BUCKETS,
                                registry=self.registry)
    Gauge("jaxprompt_queue_depth", "Inputs waiting for a batch.", registry=self.registry).set_function(queue_depth)
    Gauge("jaxprompt_prompts", "Prompts the bank serves.", registry=self.registry).set_function(prompts)

  def served(self, prompts: Sequence[str]) -> None:
    """One batch of inputs for these prompts was served."""
    self.batch_size.observe(len(prompts))
    for name in prompts:
      self.prompt_requests.labels(name).inc()

  async def middleware(self, http: HttpRequest, call_next: Callable[[HttpRequest], Awaitable[HttpResponse]]):
    """Times and counts every request by its route (not its raw path: /v1/prompts/NAME is one)."""
    start = time.perf_counter()
    response = await call_next(http)
    route = http.scope.get("route")
    endpoint = route.path if route is not None else "unmatched"
    self.requests.labels(endpoint, str(response.status_code)).inc()
    self.latency.labels(endpoint).observe(time.perf_counter() - start)
    return response

  def exposition(self) -> HttpResponse:
    return HttpResponse(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)
