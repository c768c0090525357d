"""Load on the HTTP prompt-bank server over loopback: one server mixing four prompts in its batches,
the same server taking one task at a time, and one server per prompt.

    python -m bench.serve_load --tiny --workdir=/tmp/serve-load
    python -m bench.serve_load --bank=bank.json --clients=32 --requests=50 --rounds=3

Run from the repo root. The bank is the first four prompts of --bank, or (--tiny, the default) four
prompt-tuning prompts of the tiny random T5 at fixed seeds (SST-2, RTE, CB, BoolQ, data from
../shared/data), exported under --workdir. The requests are real eval records of each prompt's
task, only the fields its input reads, sent as /v1/classify bodies by --clients threads, each
sending --requests of them one at a time on a kept-alive connection, cycling over the prompts:

    mixed      one server over the four prompts, all clients at once: batches mix the prompts
    by_task    the same server and requests, one task at a time (all of its requests concurrently,
               then the next task's): no batch mixes prompts
    per_task   four servers, each over a bank of one prompt; each request goes to its task's server

Every server is its own process (`python -m jaxprompt.serve`'s code, without access logs, plus a
route reporting its batcher's batch sizes), started together and warmed up before any timing:
the server compiles at start-up, and every record is sent once untimed (a record its server
refuses, e.g. longer than the bank's max_input_len, is left out of the load). The clients run in
this process, so they share no GIL with any server. Sides take turns over --rounds; their numbers
pool the rounds. Any non-200 answer or client error is a failure, printed. A markdown table goes
to stdout (and --out, JSON).
"""

from __future__ import annotations

import collections
import datetime
import http.client
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import numpy as np
from absl import app, flags
from starlette.responses import JSONResponse

from configs import t5_prompt
from jaxprompt import experiment
from jaxprompt.checkpoint import export_prompt
from jaxprompt.serving.bank_file import config_with_overrides, load_bank_file, read_bank_file
from jaxprompt.serving.http_app import create_app, server
from jaxprompt.serving.http_inputs import input_fields
from jaxprompt.tasks import readers

_BANK = flags.DEFINE_string("bank", None, "A bank file (JSON) of at least four prompts; its first four are served.")
_TINY = flags.DEFINE_bool("tiny", None, "Serve 4 tiny-T5 prompts made under --workdir (the default without --bank).")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/serve-load", "Where the bank files and the servers' logs go.")
_CLIENTS = flags.DEFINE_integer("clients", 32, "Concurrent clients, each with one request in flight.")
_REQUESTS = flags.DEFINE_integer("requests", 50, "Requests each client sends per side and round.")
_RECORDS = flags.DEFINE_integer("records", 64, "Eval records read per prompt (those its server refuses are dropped).")
_ROUNDS = flags.DEFINE_integer("rounds", 1, "Times each side runs, the sides taking turns.")
_MAX_BATCH = flags.DEFINE_integer("max_batch", 32, "Every server's --max_batch (tiny: also the eval_batch_size).")
_MAX_WAIT_MS = flags.DEFINE_float("max_wait_ms", 5.0, "Every server's --max_wait_ms.")
_MAX_QUEUE = flags.DEFINE_integer("max_queue", 1024, "Every server's --max_queue.")
_TIMEOUT_S = flags.DEFINE_float("timeout_s", 60.0, "A request's socket timeout: longer is a failure.")
_STARTUP_TIMEOUT_S = flags.DEFINE_float("startup_timeout_s", 600.0, "Longest a server may take to load and compile.")
_OUT = flags.DEFINE_string("out", None, "Also write the results here (JSON).")
_SERVE = flags.DEFINE_string("serve", None, "Internal: serve this bank file on --port.")
_PORT = flags.DEFINE_integer("port", 0, "Internal: --serve's port.")
flags.mark_flags_as_mutual_exclusive(["bank", "tiny"])

REPO = Path(__file__).resolve().parents[1]
NUM_PROMPTS = 4
TINY_TASKS = ("sst2", "rte", "cb", "boolq")
_TINY_CONFIG = f"{REPO}/configs/t5_prompt.py:size=tiny,data=local,task="
SIDES = ("mixed", "by_task", "per_task")


def _serve(bank_file: str, port: int) -> None:
  """--serve: what `python -m jaxprompt.serve` runs, plus GET /bench/batch_sizes."""
  logging.getLogger().setLevel(logging.WARNING)
  for name in ("jaxprompt", "uvicorn"):
    logging.getLogger(name).setLevel(logging.INFO)
  web = create_app(load_bank_file(bank_file), _MAX_BATCH.value, _MAX_WAIT_MS.value, _MAX_QUEUE.value)

  async def batch_sizes(request):
    return JSONResponse({"batch_sizes": list(web.state.service.batcher.batch_sizes)})

  web.add_route("/bench/batch_sizes", batch_sizes, methods=["GET"])
  server(web, "127.0.0.1", port, access_log=False).run()  # a log line per request would be timed too


def _local_files(task: str) -> dict[str, list[str]]:
  """Overrides naming the preset's local data files of `task` absolutely (they are relative to the repo)."""
  return {f"data.{split}.files": [str((REPO / f).resolve()) for f in source.files]
          for split, source in zip(("train", "eval"), t5_prompt.task_data(task, "local"), strict=True)}


def _tiny_bank(folder: Path, eval_batch_size: int) -> Path:
  """A bank file of TINY_TASKS' prompts on the tiny T5, each a prompt at a seed exported into `folder`."""
  shared = {"model.tokenizer": str(REPO.parent / "shared" / "data" / "t5_vocab" / "spiece.model"),
            "data.max_input_len": 128,  # most RTE, CB and BoolQ records fit (64 holds few of CB's and BoolQ's)
            "eval_batch_size": eval_batch_size}  # a full batch is one step
  configs = {task: config_with_overrides(_TINY_CONFIG + task, {**shared, **_local_files(task)}, f"tiny {task}")
             for task in TINY_TASKS}
  backbone = configs[TINY_TASKS[0]].copy_and_resolve_references()
  backbone.prompt.method = "none"  # the backbone alone: the prompts are made on it below
  base = experiment.build(backbone)
  entries = []
  for seed, (task, config) in enumerate(configs.items()):
    exp = experiment.on_backbone(config, base.backbone, base.mesh)
    path = export_prompt(folder, task, exp.method.export(exp.init_params(jax.random.key(seed))))
    entries.append({"name": task, "config": _TINY_CONFIG + task, "overrides": _local_files(task),
                    "path": str(path.relative_to(folder))})
  bank_file = folder / "bank.json"
  spec = {"backbone": _TINY_CONFIG + TINY_TASKS[0], "overrides": {**shared, **_local_files(TINY_TASKS[0])},
          "prompts": entries}
  bank_file.write_text(json.dumps(spec, indent=1))
  return bank_file


def _bank_files(bank: Path, folder: Path) -> tuple[Path, list[Path]]:
  """The first NUM_PROMPTS prompts of `bank` as one bank file and as one file per prompt, in `folder`."""
  spec = json.loads(bank.read_text())
  # The paths are relative to the bank file's folder, which the new files are not in.
  prompts = [{**entry, "path": str((bank.parent / entry["path"]).resolve())} for entry in spec["prompts"][:NUM_PROMPTS]]
  if len(prompts) < NUM_PROMPTS:
    raise app.UsageError(f"{bank} holds {len(prompts)} prompts; the load needs {NUM_PROMPTS}")
  folder.mkdir(parents=True, exist_ok=True)
  files = []
  for name, entries in [("mixed", prompts), *((f"prompt{i}", [p]) for i, p in enumerate(prompts))]:
    files.append(folder / f"{name}.json")
    files[-1].write_text(json.dumps({**spec, "prompts": entries}, indent=1))
  return files[0], files[1:]


def _inputs(bank_file: Path, count: int) -> dict[str, list[dict]]:
  """Per prompt, the fields its task's input reads of the first `count` records of its eval data."""
  inputs = {}
  for source in read_bank_file(str(bank_file))[1]:
    (task,) = experiment.tasks_from_config(source.config)
    read = {path.split(".")[0] for path in input_fields(task.spec)}
    records = readers.read_records(task.eval)[:count]
    inputs[source.name] = [{k: v for k, v in r.fields.items() if k in read} for r in records]
  return inputs


class Servers:
  """Bank servers (this module's --serve), one process each on a free loopback port, started together."""

  def __init__(self, bank_files: dict[str, Path], logs: Path):
    logs.mkdir(parents=True, exist_ok=True)
    self.logs, self.ports, self.processes = logs, {}, {}
    for name, bank_file in bank_files.items():
      self.ports[name] = _free_port()
      with (logs / f"{name}.log").open("w") as log:
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "bench.serve_load", f"--serve={bank_file}", f"--port={self.ports[name]}",
             f"--max_batch={_MAX_BATCH.value}", f"--max_wait_ms={_MAX_WAIT_MS.value}",
             f"--max_queue={_MAX_QUEUE.value}"], stdout=log, stderr=subprocess.STDOUT)

  def wait_ready(self) -> None:
    """Until every server answers /health (each has loaded its bank and compiled its step)."""
    deadline = time.monotonic() + _STARTUP_TIMEOUT_S.value
    for name, process in self.processes.items():
      while _get(self.ports[name], "/health") is None:
        if process.poll() is not None or time.monotonic() > deadline:
          raise RuntimeError(f"server {name!r} did not start: see {self.logs / f'{name}.log'}")
        time.sleep(0.5)

  def batch_sizes(self, name: str) -> list[int]:
    return _get(self.ports[name], "/bench/batch_sizes")["batch_sizes"]

  def stop(self) -> None:
    for process in self.processes.values():
      process.terminate()  # SIGTERM: the server drains and exits
    for process in self.processes.values():
      try:
        process.wait(60)
      except subprocess.TimeoutExpired:
        process.kill()


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _get(port: int, path: str) -> dict | None:
  """GET's JSON body, or None when the server does not answer 200 (yet)."""
  connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
  try:
    connection.request("GET", path)
    response = connection.getresponse()
    return json.loads(response.read()) if response.status == 200 else None
  except (OSError, http.client.HTTPException):  # not listening yet
    return None
  finally:
    connection.close()


Call = tuple[int, bytes]  # a server's port, a /v1/classify body
Result = tuple[int | str, float, str]  # HTTP status (or the client error's name), latency ms, what a failure said


def _post(connections: dict[int, http.client.HTTPConnection], port: int, body: bytes) -> tuple[int | str, str]:
  if port not in connections:
    connections[port] = http.client.HTTPConnection("127.0.0.1", port, timeout=_TIMEOUT_S.value)
  try:
    connections[port].request("POST", "/v1/classify", body, {"Content-Type": "application/json"})
    response = connections[port].getresponse()
    text = response.read()
    return response.status, "" if response.status == 200 else text.decode(errors="replace")[:300]
  except (OSError, http.client.HTTPException) as e:  # a timeout, a dropped connection: the next call reconnects
    connections.pop(port).close()
    return type(e).__name__, str(e)


def _send(clients: list[list[Call]]) -> tuple[float, list[Result]]:
  """Each client's calls from its own thread, one at a time; the wall seconds from the moment all
  threads are ready until the last answer, and the results, client after client."""
  results: list[list[Result]] = [[] for _ in clients]
  ready = threading.Barrier(len(clients) + 1)

  def client(calls: list[Call], out: list[Result]) -> None:
    connections: dict[int, http.client.HTTPConnection] = {}
    ready.wait()
    for port, body in calls:
      start = time.perf_counter()
      status, detail = _post(connections, port, body)
      out.append((status, (time.perf_counter() - start) * 1e3, detail))
    for connection in connections.values():
      connection.close()

  threads = [threading.Thread(target=client, args=(calls, out)) for calls, out in zip(clients, results, strict=True)]
  for thread in threads:
    thread.start()
  ready.wait()
  start = time.perf_counter()
  for thread in threads:
    thread.join()
  return time.perf_counter() - start, [r for out in results for r in out]


def _dealt(calls: list[Call], clients: int) -> list[list[Call]]:
  """`calls` dealt round-robin to `clients` lists."""
  return [calls[i::clients] for i in range(min(clients, len(calls)))]


def _side(side: str, load: list[list[tuple[str, bytes]]], servers: Servers) -> tuple[float, list[Result]]:
  """The load of (prompt, body) per client sent as `side` sends it; wall seconds and results."""
  if side == "per_task":
    return _send([[(servers.ports[prompt], body) for prompt, body in calls] for calls in load])
  mixed = servers.ports["mixed"]
  if side == "mixed":
    return _send([[(mixed, body) for _, body in calls] for calls in load])
  wall, results = 0.0, []
  for prompt in dict.fromkeys(p for calls in load for p, _ in calls):  # task after task
    seconds, done = _send(_dealt([(mixed, body) for calls in load for p, body in calls if p == prompt], len(load)))
    wall, results = wall + seconds, results + done
  return wall, results


def _warm(inputs: dict[str, list[dict]], servers: Servers) -> dict[str, list[bytes]]:
  """Every record sent once, untimed, to the mixed server, and each prompt's first served one to its
  own server; the bodies the mixed server answered (refusals printed), per prompt."""
  bodies = {p: [json.dumps({"model": p, "input": r}).encode() for r in records] for p, records in inputs.items()}
  dealt = _dealt([(servers.ports["mixed"], body) for own in bodies.values() for body in own], _CLIENTS.value)
  _, results = _send(dealt)
  answered = dict(zip((body for calls in dealt for _, body in calls), results, strict=True))
  served = {}
  for prompt, prompt_bodies in bodies.items():
    served[prompt] = [b for b in prompt_bodies if answered[b][0] == 200]
    refused = [answered[b] for b in prompt_bodies if answered[b][0] != 200]
    if refused:
      print(f"{prompt}: {len(refused)} of {len(prompt_bodies)} records left out, the first: {refused[0][0]}"
            f" {refused[0][2][:200]}", file=sys.stderr)
    if not served[prompt]:
      raise RuntimeError(f"the server refused every record of prompt {prompt!r}")
  _, results = _send([[(servers.ports[p], b[0]) for p, b in served.items()]])
  for (prompt, _), (status, _, detail) in zip(served.items(), results, strict=True):
    if status != 200:
      raise RuntimeError(f"the server of prompt {prompt!r} alone answered {status}: {detail}")
  return served


def _load(bodies: dict[str, list[bytes]], clients: int, requests: int) -> list[list[tuple[str, bytes]]]:
  """Per client, its (prompt, body) calls: the k-th request overall (client after client) is for
  prompt k mod P, cycling over that prompt's records."""
  prompts = list(bodies)

  def call(k: int) -> tuple[str, bytes]:
    own = bodies[prompts[k % len(prompts)]]
    return prompts[k % len(prompts)], own[k // len(prompts) % len(own)]

  return [[call(k) for k in range(c * requests, (c + 1) * requests)] for c in range(clients)]


def _machine() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    model = "unknown CPU"
  return f"{model}, {os.cpu_count()} cores"


def _summary(wall: float, results: list[Result], batches: list[int]) -> dict:
  ok = [ms for status, ms, _ in results if status == 200]
  failures = collections.Counter(f"{status} {detail}" for status, _, detail in results if status != 200)
  return {
      "requests": len(results), "failures": sum(failures.values()), "failure_kinds": dict(failures),
      "p50_ms": float(np.percentile(ok, 50)) if ok else None, "p99_ms": float(np.percentile(ok, 99)) if ok else None,
      "requests_per_s": len(ok) / wall, "wall_s": wall, "batches": len(batches),
      "mean_batch": float(np.mean(batches)) if batches else None,
      "batch_size_counts": dict(sorted(collections.Counter(batches).items())),
  }


def _number(value: float | None, spec: str) -> str:
  return "–" if value is None else format(value, spec)


def _table(summaries: dict[str, dict]) -> str:
  mixed = summaries["mixed"]

  def ratio(row: dict, key: str) -> str:
    return _number(row[key] / mixed[key] if row[key] and mixed[key] else None, ".2f")

  lines = ["| side | requests | failures | p50 ms | p99 ms | requests/s | wall s | batches | mean batch |"
           " req/s ÷ mixed | p50 ÷ mixed | p99 ÷ mixed |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for side, row in summaries.items():
    lines.append(f"| {side} | {row['requests']} | {row['failures']} | {_number(row['p50_ms'], '.1f')} |"
                 f" {_number(row['p99_ms'], '.1f')} | {row['requests_per_s']:.1f} | {row['wall_s']:.2f} |"
                 f" {row['batches']} | {_number(row['mean_batch'], '.1f')} | {ratio(row, 'requests_per_s')} |"
                 f" {ratio(row, 'p50_ms')} | {ratio(row, 'p99_ms')} |")
  return "\n".join(lines)


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _SERVE.value:
    _serve(_SERVE.value, _PORT.value)
    return
  if _TINY.value is False and not _BANK.value:
    raise app.UsageError("--notiny needs --bank")
  # Several server processes may share one accelerator: each takes what it uses, not most of it.
  os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  workdir = Path(_WORKDIR.value)
  if _BANK.value:
    bank = Path(_BANK.value)
  else:
    (workdir / "tiny").mkdir(parents=True, exist_ok=True)
    bank = _tiny_bank(workdir / "tiny", _MAX_BATCH.value)
  mixed_file, alone_files = _bank_files(bank, workdir / "banks")
  inputs = _inputs(mixed_file, _RECORDS.value)
  servers = Servers({"mixed": mixed_file, **dict(zip(inputs, alone_files, strict=True))}, workdir / "logs")
  try:
    servers.wait_ready()
    bodies = _warm(inputs, servers)
    load = _load(bodies, _CLIENTS.value, _REQUESTS.value)
    runs: dict[str, list] = {side: [0.0, [], []] for side in SIDES}  # wall s, results, batch sizes
    for _ in range(_ROUNDS.value):
      for side in SIDES:
        names = list(inputs) if side == "per_task" else ["mixed"]
        before = {name: len(servers.batch_sizes(name)) for name in names}
        wall, results = _side(side, load, servers)
        runs[side][0] += wall
        runs[side][1] += results
        runs[side][2] += [size for name in names for size in servers.batch_sizes(name)[before[name]:]]
  finally:
    servers.stop()

  summaries = {side: _summary(*run) for side, run in runs.items()}
  for side, summary in summaries.items():
    for what, count in summary["failure_kinds"].items():
      print(f"{side}: {count} failures: {what}", file=sys.stderr)
  command = " ".join(["python -m bench.serve_load", *sys.argv[1:]])
  header = {"date": datetime.date.today().isoformat(), "machine": _machine(), "command": command,
            "prompts": {p: len(b) for p, b in bodies.items()},
            "load": f"clients={_CLIENTS.value}, requests={_REQUESTS.value} each per side and round,"
                    f" rounds={_ROUNDS.value}, max_batch={_MAX_BATCH.value}, max_wait_ms={_MAX_WAIT_MS.value}"}
  print(f"{header['date']}, {header['machine']}\n\n`{command}`\n\n{header['load']}; prompts (records each):"
        f" {', '.join(f'{p} ({n})' for p, n in header['prompts'].items())}\n\n{_table(summaries)}")
  if _OUT.value:
    Path(_OUT.value).write_text(json.dumps({**header, "sides": summaries}, indent=1) + "\n")


if __name__ == "__main__":
  app.run(main)
