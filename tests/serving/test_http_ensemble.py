"""A second server on the shared SST-2 bank: a prompt ensemble served by name (a bank file's
"ensembles") answering /v1/classify as the one-pass ensemble does, what would break an ensemble
refused, and the Prometheus metrics of what it served."""

from __future__ import annotations

import json
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from jaxprompt.serving.bank_file import BankFileError, read_ensembles
from jaxprompt.serving.ensemble import Ensemble, ensemble_classify
from jaxprompt.serving.http_app import create_app
from tests.serving.conftest import MEMBERS
from tests.serving.http_client import RunningServer, call


@pytest.fixture(scope="module")
def running(sst2_bank):
  bank = sst2_bank[0]
  running = RunningServer(create_app(bank, max_batch=16, max_wait_ms=20, max_queue=64, warm=False,
                                     ensembles=[Ensemble("sst2", MEMBERS, "vote")]))
  yield running
  running.stop()


def test_classify_by_ensemble_equals_the_one_pass_ensemble(running, sst2_bank):
  bank, _, records = sst2_bank
  sentences = [r["sentence"] for r in records]
  status, _, body = call(running.url + "/v1/classify", {"model": "sst2", "input": sentences})
  assert status == 200, body
  expected = ensemble_classify(bank, MEMBERS, [{"sentence": s} for s in sentences], "vote")
  for item, answer in zip(body["data"], expected, strict=True):
    assert (item["label"], item["votes"], item["members"]) == (answer.label, answer.votes, answer.members)
    assert item["scores"] == pytest.approx(answer.scores, rel=1e-5, abs=1e-5)
  listed = {m["id"]: m for m in call(running.url + "/v1/models")[2]["data"]}
  assert listed["sst2"]["members"] == list(MEMBERS) and listed["sst2"]["labels"] == ["0", "1"]


def test_what_would_break_an_ensemble_is_refused(running, sst2_bank):
  status, _, body = call(running.url + "/v1/completions", {"model": "sst2", "prompt": "a film"})
  assert status == 400 and "use /v1/classify" in body["error"]["message"], body
  status, _, body = call(running.url + "/v1/prompts/sst2-a", method="DELETE")
  assert status == 400 and "member of the ensembles ['sst2']" in body["error"]["message"], body
  with pytest.raises(ValueError, match="the same labels"):
    create_app(sst2_bank[0], 8, 20, 64, ensembles=[Ensemble("mixed", ("sst2-a", "rte"))])


@pytest.mark.parametrize("entry,message", [({"name": "e", "members": ["a"]}, "two or more"),
                                           ({"members": ["a", "b"]}, "needs \"name\""),
                                           ({"name": "e", "members": ["a", "b"], "reduction": "max"}, "'max' is not")])
def test_bad_ensemble_entries_name_the_file_and_entry(tmp_path, entry, message):
  path = tmp_path / "bank.json"
  path.write_text(json.dumps({"backbone": "x.py", "prompts": [], "ensembles": [entry]}))
  with pytest.raises(BankFileError, match=message) as error:
    read_ensembles(str(path))
  assert "ensembles[0]" in str(error.value) and str(path) in str(error.value)


def test_metrics_count_requests_prompts_and_batches(running, sst2_bank):
  """GET /metrics, in Prometheus's text format, parsed by prometheus_client's own parser."""
  records = sst2_bank[2]
  call(running.url + "/v1/classify", {"model": "sst2-b", "input": [r["sentence"] for r in records[:3]]})
  call(running.url + "/v1/classify", {"model": "nope", "input": "x"})
  call(running.url + "/health")
  with urllib.request.urlopen(running.url + "/metrics") as response:
    text = response.read().decode()
  samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
             for family in text_string_to_metric_families(text) for s in family.samples}
  assert samples[("jaxprompt_http_requests_total", (("endpoint", "/v1/classify"), ("status", "404")))] >= 1
  assert samples[("jaxprompt_http_requests_total", (("endpoint", "/health"), ("status", "200")))] >= 1
  assert samples[("jaxprompt_prompt_requests_total", (("model", "sst2-b"),))] >= 3
  assert samples[("jaxprompt_batch_size_count", ())] >= 1 and samples[("jaxprompt_queue_depth", ())] == 0
  assert samples[("jaxprompt_prompts", ())] == len(sst2_bank[0].prompts)
  assert samples[("jaxprompt_http_request_seconds_count", (("endpoint", "/v1/classify"),))] >= 2
