"""Real HTTP against the server under test: uvicorn in a background thread on a free loopback port,
and a small JSON client on urllib (what any client sends: no test-only transport)."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from email.message import Message
from typing import Any

from jaxprompt.serving.http_app import server


class RunningServer:
  """`app` served by uvicorn on 127.0.0.1 (a free port) in a thread, until stop()."""

  def __init__(self, app, startup_timeout_s: float = 300):
    self.server = server(app, "127.0.0.1", 0)
    self.service = app.state.service
    self.thread = threading.Thread(target=self.server.run, daemon=True)
    self.thread.start()
    deadline = time.monotonic() + startup_timeout_s  # the lifespan's warm-up compiles first
    while not self.server.started:
      if not self.thread.is_alive() or time.monotonic() > deadline:
        raise RuntimeError("the server did not start")
      time.sleep(0.05)
    port = self.server.servers[0].sockets[0].getsockname()[1]
    self.url = f"http://127.0.0.1:{port}"

  def stop(self) -> None:
    self.server.should_exit = True
    self.thread.join(60)


def call(url: str, body: Any = None, raw: bytes | None = None, method: str | None = None) -> tuple[int, Message, dict]:
  """(status, headers (case-insensitive), JSON body) of a GET (no body) or a POST of `body` as JSON (or `raw` bytes);
  `method` another verb (DELETE)."""
  data = raw if raw is not None else None if body is None else json.dumps(body).encode()
  request = urllib.request.Request(url, data, {"Content-Type": "application/json"} if data is not None else {},
                                   method=method)
  try:
    with urllib.request.urlopen(request, timeout=120) as response:
      return response.status, response.headers, json.loads(response.read())
  except urllib.error.HTTPError as e:
    return e.code, e.headers, json.loads(e.read())
