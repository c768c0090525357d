"""The HTTP server over a bank of two prompts (tiny T5: prompt tuning for SST-2, prefix tuning for
RTE), on a real loopback socket: each response equals serving the bank directly, concurrent mixed
requests are batched together, errors come in OpenAI's envelope without disturbing good requests,
and SIGTERM drains what is in flight."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from jaxprompt import experiment
from jaxprompt.serving.bank import load_bank
from jaxprompt.serving.http_app import create_app
from jaxprompt.serving.loading import PromptSource
from jaxprompt.serving.requests import Request, SamplingParams, serve
from tests.conftest import SHARED_DATA
from tests.run_configs import apply_overrides, tiny_config
from tests.serving.http_client import RunningServer, call
from tests.serving.saved_prompts import eval_records, save_run

REPO = Path(__file__).resolve().parents[2]
BUCKETS = (32, 64)  # two input buckets: warm-up compiles both
BARE = "t5-tiny"  # the bare backbone's model name
RTE_RECORDS = [  # RTE's dev premises are longer than tiny T5's 64 input tokens
    {"premise": "A man is playing a guitar on a stage.", "hypothesis": "A man plays music."},
    {"premise": "The cat sleeps on the warm windowsill all afternoon.", "hypothesis": "A dog is running."},
    {"premise": "Prices rose sharply in March.", "hypothesis": "Prices went up."},
]


def _configs():
  return {
      "sst2-prompt3": tiny_config("sst2", **{"prompt.length": 3}),
      "rte-prefix2": tiny_config("rte", **{"prompt.method": "prefix_tuning", "prompt.length": 2,
                                          "prompt.reparam_hidden": 8}),
  }


def _bank_config():
  return tiny_config("sst2", **{"data.bucket_lengths": BUCKETS, "serving.backbone_name": BARE})


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  """The two prompts saved as runs (seeds 0, 1): their configs and workdirs."""
  root = tmp_path_factory.mktemp("prompts")
  base = experiment.build(apply_overrides(_bank_config(), **{"prompt.method": "none"}))
  return {name: (config, save_run(config, base.backbone, base.mesh, root / name, seed))
          for seed, (name, config) in enumerate(_configs().items())}


@pytest.fixture(scope="module")
def bank(saved):
  return load_bank(_bank_config(), [PromptSource(name, config, str(path)) for name, (config, path) in saved.items()])


@pytest.fixture(scope="module")
def running(bank):
  """The server (warmed up by its lifespan) for the whole module."""
  app = create_app(bank, max_batch=8, max_wait_ms=20, max_queue=64)
  running = RunningServer(app)
  running.compiled = bank.eval_step._cache_size()  # what the warm-up compiled
  yield running
  running.stop()


@pytest.fixture(scope="module")
def records():
  return {"sst2-prompt3": eval_records(_configs()["sst2-prompt3"], 4), "rte-prefix2": RTE_RECORDS}


def _direct(bank, model, fields):
  (response,) = serve(bank, [Request(model, fields)])
  return response


def test_models_lists_the_prompts(running):
  status, _, body = call(running.url + "/v1/models")
  assert status == 200 and body["object"] == "list"
  assert [m["id"] for m in body["data"]] == ["sst2-prompt3", "rte-prefix2", BARE]
  assert all(m["object"] == "model" and m["owned_by"] and m["parent"] == m["root"] == "t5-tiny (random init)"
             for m in body["data"])
  assert [m["fields"] for m in body["data"]] == [["sentence"], ["hypothesis", "premise"], ["text"]]
  assert call(running.url + "/health")[:1] == (200,)


def test_warm_up_compiled_every_bucket(running):
  assert running.compiled == len(BUCKETS)
  assert running.service.warm_up_s > 0


def test_completions_equal_serving_the_bank(running, bank, records):
  sentence = records["sst2-prompt3"][0]["sentence"]
  status, _, body = call(running.url + "/v1/completions", {"model": "sst2-prompt3", "prompt": sentence,
                                                           "temperature": 0})
  assert status == 200, body
  assert body["object"] == "text_completion" and body["model"] == "sst2-prompt3" and body["id"].startswith("cmpl-")
  (choice,) = body["choices"]
  assert choice["text"] == _direct(bank, "sst2-prompt3", {"sentence": sentence}).text
  assert choice["index"] == 0 and choice["logprobs"] is None and choice["finish_reason"] in ("stop", "length")
  usage = body["usage"]
  assert usage["prompt_tokens"] > 0 and usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
  # A list of field objects: one choice each, in order; max_tokens cuts the text.
  status, _, body = call(running.url + "/v1/completions", {"model": "rte-prefix2", "prompt": RTE_RECORDS,
                                                           "max_tokens": 2, "temperature": 0})
  assert status == 200, body
  for i, (choice, record) in enumerate(zip(body["choices"], RTE_RECORDS, strict=True)):
    full = _direct(bank, "rte-prefix2", record).text
    assert choice["index"] == i and full.startswith(choice["text"].strip())


def test_the_bare_backbone_completes_text(running, bank):
  status, _, body = call(running.url + "/v1/completions", {"model": BARE, "prompt": "a quiet film", "temperature": 0})
  assert status == 200, body
  assert body["choices"][0]["text"] == _direct(bank, BARE, {"text": "a quiet film"}).text
  status, _, body = call(running.url + "/v1/classify", {"model": BARE, "input": "a quiet film"})
  assert status == 400 and body["error"]["param"] == "model" and "no classes" in body["error"]["message"], body


def test_completions_sample_with_their_seed(running, bank):
  """n seeded completions per prompt equal the bank's draws with seeds seed, seed + 1, ...; the
  same request gives the same texts; without a seed, the server draws one per request."""
  body = {"model": "rte-prefix2", "prompt": RTE_RECORDS[:2], "n": 3, "temperature": 1.5, "top_p": 0.9, "seed": 40}
  status, _, first = call(running.url + "/v1/completions", body)
  assert status == 200, first
  texts = [c["text"] for c in first["choices"]]
  assert [c["index"] for c in first["choices"]] == list(range(6))
  direct = serve(bank, [Request("rte-prefix2", record, SamplingParams(1.5, 0.9, 40 + i * 3 + j))
                        for i, record in enumerate(RTE_RECORDS[:2]) for j in range(3)])
  assert texts == [r.text for r in direct]
  assert len(set(texts)) > 1
  assert [c["text"] for c in call(running.url + "/v1/completions", body)[2]["choices"]] == texts
  unseeded = {k: v for k, v in body.items() if k != "seed"}
  draws = {tuple(c["text"] for c in call(running.url + "/v1/completions", unseeded)[2]["choices"]) for _ in range(3)}
  assert len(draws) > 1


def test_classify_equals_serving_the_bank(running, bank, records):
  inputs = records["sst2-prompt3"]
  status, _, body = call(running.url + "/v1/classify", {"model": "sst2-prompt3", "input": inputs})
  assert status == 200, body
  assert [d["index"] for d in body["data"]] == list(range(len(inputs)))
  for item, record in zip(body["data"], inputs, strict=True):
    direct = _direct(bank, "sst2-prompt3", record)
    assert item["label"] == direct.label and set(item["scores"]) == {"0", "1"}
    np.testing.assert_allclose([item["scores"][k] for k in "01"], [direct.scores[k] for k in "01"], rtol=1e-5,
                               atol=1e-5)
  status, _, body = call(running.url + "/v1/classify", {"model": "rte-prefix2", "input": RTE_RECORDS[0]})
  assert status == 200 and body["data"][0]["label"] == _direct(bank, "rte-prefix2", RTE_RECORDS[0]).label


def test_concurrent_mixed_requests_are_batched_and_each_as_served_directly(running, bank, records):
  """16 clients at once, taking turns between the prompts and the two endpoints: every response is
  the bank's own, the batcher mixed them into batches, and nothing compiled after the warm-up."""
  jobs = [(model, record, endpoint) for i in range(4) for model in records
          for endpoint in ("/v1/completions", "/v1/classify") for record in [records[model][i % len(records[model])]]]
  batches_before = len(running.service.batcher.batch_sizes)

  def send(job):
    model, record, endpoint = job
    key = "prompt" if endpoint == "/v1/completions" else "input"
    return call(running.url + endpoint, {"model": model, key: record, **GREEDY[endpoint]})

  with concurrent.futures.ThreadPoolExecutor(16) as pool:
    results = list(pool.map(send, jobs))
  for (model, record, endpoint), (status, _, body) in zip(jobs, results, strict=True):
    assert status == 200, body
    direct = _direct(bank, model, record)
    if endpoint == "/v1/completions":
      assert body["choices"][0]["text"] == direct.text
    else:
      assert body["data"][0]["label"] == direct.label
      np.testing.assert_allclose(list(body["data"][0]["scores"].values()), list(direct.scores.values()), rtol=1e-5,
                                 atol=1e-5)
  sizes = list(running.service.batcher.batch_sizes)[batches_before:]
  assert sum(sizes) == len(jobs) and max(sizes) > 1
  assert bank.eval_step._cache_size() == running.compiled


_LONG = " ".join(["great"] * 200)
GREEDY = {"/v1/completions": {"temperature": 0}, "/v1/classify": {}}  # completions sample unless told not to


@pytest.mark.parametrize("path,body,status,param,code", [
    ("/v1/completions", {"model": "nope", "prompt": "x"}, 404, "model", "model_not_found"),
    ("/v1/classify", {"model": "nope", "input": "x"}, 404, "model", "model_not_found"),
    ("/v1/completions", {"prompt": "x"}, 400, "model", None),
    ("/v1/completions", {"model": 3, "prompt": "x"}, 400, "model", None),
    ("/v1/completions", {"model": "sst2-prompt3"}, 400, "prompt", None),
    ("/v1/completions", {"model": "sst2-prompt3", "prompt": 3.5}, 400, "prompt", None),
    ("/v1/completions", {"model": "sst2-prompt3", "prompt": [1, 2]}, 400, "prompt", None),
    ("/v1/completions", {"model": "rte-prefix2", "prompt": "one text for two fields"}, 400, "prompt", None),
    ("/v1/completions", {"model": "rte-prefix2", "prompt": {"premise": "p"}}, 400, "prompt.hypothesis", None),
    ("/v1/classify", {"model": "rte-prefix2", "input": [RTE_RECORDS[0], {"hypothesis": "h"}]}, 400,
     "input[1].premise", None),
    ("/v1/completions", {"model": "sst2-prompt3", "prompt": _LONG}, 400, "prompt", "context_length_exceeded"),
    ("/v1/completions", {"model": "sst2-prompt3", "prompt": "x", "max_tokens": 9}, 400, "max_tokens", None),
    ("/v1/completions", {"model": "sst2-prompt3", "prompt": "x", "max_tokens": "2"}, 400, "max_tokens", None),
    ("/v1/completions", {"model": "sst2-prompt3", "prompt": "x", "n": 0}, 400, "n", None),
    ("/v1/completions", {"model": "sst2-prompt3", "prompt": "x", "n": 17}, 400, "n", None),
    ("/v1/completions", {"model": "sst2-prompt3", "prompt": "x", "stream": True}, 400, "stream", "unsupported_value"),
    ("/v1/completions", {"model": "sst2-prompt3", "prompt": "x", "best_of": 3}, 400, "best_of", "unsupported_value"),
    ("/v1/completions", {"model": "sst2-prompt3", "prompt": "x", "temperature": 2.5}, 400, "temperature", None),
    ("/v1/completions", {"model": "sst2-prompt3", "prompt": "x", "temperature": "hot"}, 400, "temperature", None),
    ("/v1/completions", {"model": "sst2-prompt3", "prompt": "x", "top_p": 0}, 400, "top_p", None),
    ("/v1/completions", {"model": "sst2-prompt3", "prompt": "x", "seed": 1.5}, 400, "seed", None),
    ("/v1/completions", {"model": "sst2-prompt3", "prompt": "x", "top_k": 5}, 400, "top_k", None),
])
def test_bad_requests_get_openai_errors(running, path, body, status, param, code):
  got, _, response = call(running.url + path, body)
  assert got == status, response
  error = response["error"]
  assert set(error) == {"message", "type", "param", "code"} and error["message"]
  assert (error["param"], error["code"]) == (param, code), error


def test_too_long_input_names_both_lengths(running):
  _, _, body = call(running.url + "/v1/completions", {"model": "sst2-prompt3", "prompt": _LONG})
  assert re.search(r"renders to \d+ tokens, more than the 64", body["error"]["message"]), body


def test_malformed_bodies_and_unknown_paths(running):
  for raw in (b"{not json", b"[1, 2]"):
    status, _, body = call(running.url + "/v1/completions", raw=raw)
    assert status == 400 and body["error"]["type"] == "invalid_request_error", body
  status, _, body = call(running.url + "/v1/nothing")
  assert status == 404 and "error" in body


def test_bad_requests_alongside_good_ones_leave_them_served(running, bank, records):
  good = [{"model": "sst2-prompt3", "prompt": r["sentence"], "temperature": 0} for r in records["sst2-prompt3"]]
  bad = [{"model": "rte-prefix2", "prompt": {"premise": "p"}}, {"model": "nope", "prompt": "x"},
         {"model": "sst2-prompt3", "prompt": _LONG}, {"model": "sst2-prompt3", "prompt": {"sentence": None}}]
  mixed = [b for pair in zip(good, bad, strict=True) for b in pair]
  with concurrent.futures.ThreadPoolExecutor(len(mixed)) as pool:
    results = list(pool.map(lambda b: call(running.url + "/v1/completions", b), mixed))
  assert [r[0] for r in results] == [200, 400, 200, 404, 200, 400, 200, 400]
  for body, (_, _, response) in zip(mixed[::2], results[::2], strict=True):
    assert response["choices"][0]["text"] == _direct(bank, "sst2-prompt3", {"sentence": body["prompt"]}).text


def test_prompts_are_added_and_removed_at_runtime(running, saved, records):
  """A copy of the SST-2 run added under a new name answers as the original; one that does not fit
  the backbone is a 400 and changes nothing; removal makes the name a 404. The bank is restored."""
  url, inputs = running.url, records["sst2-prompt3"]
  overrides = {"model.tokenizer": str(SHARED_DATA / "t5_vocab" / "spiece.model"), "prompt.length": 3,
               "mesh.data": 2, "mesh.fsdp": 4}
  body = {"name": "sst2-copy", "config": str(REPO / "configs" / "t5_prompt.py") + ":size=tiny,task=sst2,data=local",
          "overrides": overrides, "path": str(saved["sst2-prompt3"][1])}
  step = running.service.bank.eval_step
  status, _, added = call(url + "/v1/prompts", body)
  assert status == 201 and added["id"] == "sst2-copy" and added["fields"] == ["sentence"], added
  assert running.service.bank.eval_step is step and step._cache_size() == running.compiled  # it fit: no compile
  assert [m["id"] for m in call(url + "/v1/models")[2]["data"]] == ["sst2-prompt3", "rte-prefix2", BARE, "sst2-copy"]
  copy, original = (call(url + "/v1/classify", {"model": m, "input": inputs})[2]["data"] for m in ("sst2-copy",
                                                                                                   "sst2-prompt3"))
  for a, b in zip(copy, original, strict=True):
    assert a["label"] == b["label"] and a["scores"] == pytest.approx(b["scores"], rel=1e-5, abs=1e-5)
  status, _, error = call(url + "/v1/prompts", {**body, "name": "wrong", "overrides": {**overrides, "prompt.length": 5}})
  assert status == 400 and error["error"]["param"] == "path" and "[3, 16]" in error["error"]["message"], error
  status, _, error = call(url + "/v1/prompts", {**body, "overrides": {"prompt.lenght": 3}})
  assert status == 400 and error["error"]["param"] == "config" and "'lenght'" in error["error"]["message"], error
  assert call(url + "/v1/prompts/sst2-copy", method="DELETE")[:1] == (200,)
  status, _, error = call(url + "/v1/classify", {"model": "sst2-copy", "input": inputs})
  assert status == 404 and error["error"]["code"] == "model_not_found"
  assert call(url + "/v1/prompts/sst2-copy", method="DELETE")[0] == 404
  assert [m["id"] for m in call(url + "/v1/models")[2]["data"]] == ["sst2-prompt3", "rte-prefix2", BARE]


def test_full_queue_and_shutdown(bank):
  """A second server on the same (already compiled) bank: more inputs than its queue holds get 429,
  and once SIGTERM's handler has run, requests queued before it are served and new ones get 503."""
  running = RunningServer(create_app(bank, max_batch=8, max_wait_ms=1500, max_queue=3, warm=False))
  try:
    status, headers, body = call(running.url + "/v1/classify", {"model": "sst2-prompt3", "input": ["a", "b", "c", "d"]})
    assert status == 429 and headers["Retry-After"] and body["error"]["code"] == "queue_full", body
    batcher = running.service.batcher
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
      queued = [pool.submit(call, running.url + "/v1/classify", {"model": "sst2-prompt3", "input": text})
                for text in ("a fine film", "dull")]
      while len(batcher._queue) < 2:  # both wait out max_wait_ms for more
        time.sleep(0.01)
      batcher.stop_accepting()  # what the server's SIGTERM handler does first
      status, headers, body = call(running.url + "/v1/classify", {"model": "sst2-prompt3", "input": "late"})
      assert status == 503 and headers["Retry-After"] and body["error"]["code"] == "shutting_down", body
      assert call(running.url + "/health")[0] == 503
      running.server.handle_exit(signal.SIGTERM, None)
      assert [f.result()[0] for f in queued] == [200, 200]
    running.thread.join(60)
    assert not running.thread.is_alive()
  finally:
    running.stop()


def test_serve_cli_drains_in_flight_requests_on_sigterm(saved, bank, tmp_path):
  """`python -m jaxprompt.serve --bank=FILE` in its own process: it answers as the bank does, and on
  SIGTERM serves the requests already queued, then exits."""
  (_, sst2_path), (_, rte_path) = saved.values()
  bank_file = tmp_path / "bank.json"
  sst2_files = {"data.train.files": [str(SHARED_DATA / "sst2" / "dev.tsv")],
                "data.eval.files": [str(SHARED_DATA / "sst2" / "test.tsv")]}
  rte_dir = SHARED_DATA / "superglue" / "RTE"
  bank_file.write_text(json.dumps({
      "backbone": "configs/t5_prompt.py:size=tiny,task=sst2,data=local",
      "overrides": {"model.tokenizer": str(SHARED_DATA / "t5_vocab" / "spiece.model"), "mesh.data": 2,
                    "mesh.fsdp": 4, "data.bucket_lengths": list(BUCKETS), **sst2_files},
      "prompts": [
          {"name": "sst2-prompt3", "path": str(sst2_path), "overrides": {"prompt.length": 3}},
          {"name": "rte-prefix2", "path": str(rte_path), "config": "configs/t5_prompt.py:size=tiny,task=rte,data=local",
           "overrides": {"prompt.method": "prefix_tuning", "prompt.length": 2, "prompt.reparam_hidden": 8,
                         "data.train.files": [str(rte_dir / "train32.jsonl")],
                         "data.eval.files": [str(rte_dir / "dev32.jsonl")]}},
      ],
  }))
  process = subprocess.Popen([sys.executable, "-m", "jaxprompt.serve", f"--bank={bank_file}", "--port=0",
                              "--max_wait_ms=1000"], cwd=REPO, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
  log, started = [], threading.Event()
  port = []

  def read_log():
    for line in process.stderr:
      log.append(line)
      if found := re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", line):
        port.append(int(found[1]))
        started.set()

  threading.Thread(target=read_log, daemon=True).start()
  try:
    assert started.wait(300), "".join(log[-30:])
    url = f"http://127.0.0.1:{port[0]}/v1/completions"
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
      in_flight = [pool.submit(call, url, {"model": model, "prompt": record, "temperature": 0})
                   for model, record in [("rte-prefix2", RTE_RECORDS[0]), ("sst2-prompt3", "a fine film"),
                                         ("rte-prefix2", RTE_RECORDS[1])]]
      time.sleep(0.5)  # queued: the batch waits up to 1 s for more
      process.send_signal(signal.SIGTERM)
      results = [f.result() for f in in_flight]
    assert [status for status, _, _ in results] == [200, 200, 200], results
    direct = serve(bank, [Request("rte-prefix2", RTE_RECORDS[0]), Request("sst2-prompt3", {"sentence": "a fine film"}),
                          Request("rte-prefix2", RTE_RECORDS[1])])
    assert [body["choices"][0]["text"] for _, _, body in results] == [r.text for r in direct]
    assert process.wait(60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has drained
    assert any("warmed up" in line for line in log), "".join(log[-30:])
  finally:
    if process.poll() is None:
      process.kill()
