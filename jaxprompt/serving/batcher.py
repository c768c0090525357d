"""Dynamic batching: requests from many HTTP handlers queue on the event loop, and one worker serves
up to `max_batch` of them (waiting at most `max_wait_s` for more) with one call in a thread, so the
jitted step never blocks the loop and any mix of prompts shares a batch.

A batch that fails as a whole is served again request by request: the per-request checks before
queueing should leave nothing to fail, and if one still does, only its own caller sees the error.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import logging
from collections.abc import Callable, Sequence

from jaxprompt.serving.requests import Request, Response

log = logging.getLogger(__name__)

ServeFn = Callable[[Sequence[Request]], list[Response]]


class QueueFull(Exception):
  """More requests are waiting than the queue holds."""


class Closed(Exception):
  """The batcher is shutting down and takes no new requests."""


@dataclasses.dataclass
class _Pending:
  request: Request
  future: asyncio.Future


class Batcher:
  """Queues requests and serves them in batches; start() and close() run on the serving event loop."""

  def __init__(self, serve: ServeFn, max_batch: int, max_wait_s: float, max_queue: int):
    if max_batch < 1 or max_queue < 1 or max_wait_s < 0:
      raise ValueError(f"need max_batch >= 1, max_queue >= 1, max_wait_s >= 0; got {max_batch}, {max_queue}, "
                       f"{max_wait_s}")
    self._serve = serve
    self.max_batch, self.max_wait_s, self.max_queue = max_batch, max_wait_s, max_queue
    self._queue: collections.deque[_Pending] = collections.deque()
    self._arrived = asyncio.Event()
    # One thread: the device serves one batch at a time, and the next batch gathers meanwhile.
    self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="bank")
    self._worker: asyncio.Task | None = None
    self.accepting = True
    # The latest batches' sizes, in order: what dynamic batching achieved (bounded: a server runs for weeks).
    self.batch_sizes: collections.deque[int] = collections.deque(maxlen=100_000)

  @property
  def queued(self) -> int:
    return len(self._queue)

  def start(self) -> None:
    self._worker = asyncio.get_running_loop().create_task(self._run())

  def stop_accepting(self) -> None:
    """New submits raise Closed; what is queued is still served. Safe to call from a signal handler."""
    self.accepting = False

  async def close(self) -> None:
    """Serves what is queued, then stops the worker and its thread."""
    self.stop_accepting()
    self._arrived.set()  # wakes an idle worker to see that nothing more is coming
    if self._worker is not None:
      await self._worker
    self._executor.shutdown(wait=True)

  async def submit(self, requests: Sequence[Request]) -> list[Response]:
    """The responses to `requests` (all queued, or none when the queue lacks room), in order."""
    if not self.accepting:
      raise Closed("the server is shutting down")
    if len(self._queue) + len(requests) > self.max_queue:
      raise QueueFull(f"{len(self._queue)} requests are queued, at most {self.max_queue} may wait")
    loop = asyncio.get_running_loop()
    pending = [_Pending(request, loop.create_future()) for request in requests]
    self._queue.extend(pending)
    self._arrived.set()
    results = await asyncio.gather(*(p.future for p in pending), return_exceptions=True)
    for result in results:  # every future is awaited, so none leaves an unretrieved error behind
      if isinstance(result, BaseException):
        raise result
    return results

  async def _run(self) -> None:
    loop = asyncio.get_running_loop()
    while self._queue or self.accepting:
      if not self._queue:
        await self._next_arrival(None)
        continue
      deadline = loop.time() + self.max_wait_s
      while self.accepting and len(self._queue) < self.max_batch and loop.time() < deadline:
        await self._next_arrival(deadline - loop.time())
      batch = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
      await self._serve_batch([p for p in batch if not p.future.done()])  # done: its handler was cancelled

  async def _next_arrival(self, timeout: float | None) -> None:
    self._arrived.clear()
    try:
      await asyncio.wait_for(self._arrived.wait(), timeout)
    except TimeoutError:
      pass

  async def _serve_batch(self, batch: list[_Pending]) -> None:
    if not batch:
      return
    loop = asyncio.get_running_loop()
    self.batch_sizes.append(len(batch))
    try:
      responses = await loop.run_in_executor(self._executor, self._serve, [p.request for p in batch])
    except Exception:  # noqa: BLE001 - any failure of the batch is retried per request below
      log.exception("a batch of %d requests failed; serving them one by one", len(batch))
      for p in batch:
        try:
          (response,) = await loop.run_in_executor(self._executor, self._serve, [p.request])
        except Exception as e:  # noqa: BLE001 - handed to this request's caller alone
          _resolve(p.future, error=e)
        else:
          _resolve(p.future, response)
      return
    for p, response in zip(batch, responses, strict=True):
      _resolve(p.future, response)


def _resolve(future: asyncio.Future, response: Response | None = None, error: Exception | None = None) -> None:
  if future.done():  # the caller went away while its batch ran
    return
  if error is not None:
    future.set_exception(error)
  else:
    future.set_result(response)
