"""Prompts added to and removed from a bank at runtime, on the backbone it already holds: the
new bank serves the prompts it keeps exactly as before, and the old one is untouched."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from jaxprompt.serving.loading import PromptSource
from jaxprompt.serving.requests import Request, step_outputs
from tests.run_configs import tiny_config
from tests.serving.conftest import BARE, MEMBERS
from tests.serving.saved_prompts import eval_records, save_run, served_alone


def _scores(bank, name, records):
  out = step_outputs(bank, [Request(name, r) for r in records])
  return out["label_scores"][:, list(bank.labels.columns[bank.prompt_id(name)])]


def test_removing_and_adding_prompts_keeps_every_other_prompts_answers(sst2_bank):
  bank, sources, records = sst2_bank
  before = {name: _scores(bank, name, records) for name in MEMBERS}
  smaller = bank.without_prompts(["sst2-b", "rte"])
  assert [p.name for p in smaller.prompts] == ["sst2-a", "sst2-c", BARE]
  assert smaller.exp.backbone is bank.exp.backbone  # nothing reloaded
  for name in ("sst2-a", "sst2-c"):
    np.testing.assert_allclose(_scores(smaller, name, records), before[name], rtol=1e-5, atol=1e-5, err_msg=name)
  # sst2-b comes back under a new name, and sst2-a is replaced in place by sst2-c's run.
  grown = smaller.with_prompts([dataclasses.replace(sources[1], name="sst2-b-again"),
                                dataclasses.replace(sources[2], name="sst2-a")])
  assert sorted(p.name for p in grown.prompts) == sorted(["sst2-a", "sst2-b-again", "sst2-c", BARE])
  np.testing.assert_allclose(_scores(grown, "sst2-b-again", records), before["sst2-b"], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(_scores(grown, "sst2-a", records), before["sst2-c"], rtol=1e-5, atol=1e-5)
  assert [p.name for p in bank.prompts] == [*MEMBERS, "rte", BARE]  # the old bank serves on unchanged
  np.testing.assert_allclose(_scores(bank, "sst2-a", records), before["sst2-a"], rtol=1e-5, atol=1e-5)


def test_removing_an_unknown_or_every_prompt_is_refused(sst2_bank):
  bank, _, _ = sst2_bank
  with pytest.raises(KeyError, match="no prompt 'nope' in the bank"):
    bank.without_prompts(["nope"])
  with pytest.raises(ValueError, match="at least one prompt"):
    bank.without_prompts([p.name for p in bank.prompts])


def test_a_prompt_that_fits_the_tables_runs_the_compiled_step(sst2_bank, tmp_path):
  """Another SST-2 prompt no longer than the bank's longest, and an RTE prompt (its label texts
  are in the bank), take spare rows: the same compiled step, nothing compiled while serving them,
  and each answers as served alone. A longer prompt, or new label texts, compiles a new step."""
  bank, _, records = sst2_bank
  step_outputs(bank, [Request(name, records[0]) for name in MEMBERS])  # compiled for this bucket
  compiled = bank.eval_step._cache_size()
  fitting = {"sst2-d": tiny_config("sst2", **{"prompt.length": 3, "prompt.init": "uniform"}),
             "rte-b": tiny_config("rte", **{"prompt.length": 4})}
  grown = bank.with_prompts([PromptSource(name, config, str(save_run(config, bank.exp.backbone, bank.exp.mesh,
                                                                       tmp_path / name, 7 + i)))
                             for i, (name, config) in enumerate(fitting.items())])
  assert grown.eval_step is bank.eval_step and grown.method.capacity == bank.method.capacity
  rte = eval_records(fitting["rte-b"], 2)
  out = step_outputs(grown, [Request("sst2-d", records[0]), Request("rte-b", rte[0]), Request("sst2-a", records[0])])
  assert bank.eval_step._cache_size() == compiled
  for row, (name, record) in enumerate([("sst2-d", records[0]), ("rte-b", rte[0])]):
    p = grown.prompt_id(name)
    alone = served_alone(grown.prompts[p], [record])["label_scores"][0]
    np.testing.assert_allclose(out["label_scores"][row, list(grown.labels.columns[p])], alone, rtol=1e-5, atol=1e-5)
  longer = tiny_config("sst2", **{"prompt.length": 6})
  cb = tiny_config("cb", **{"prompt.length": 3})
  for name, config in (("sst2-long", longer), ("cb", cb)):
    other = bank.with_prompts([PromptSource(name, config, str(save_run(config, bank.exp.backbone, bank.exp.mesh,
                                                                         tmp_path / name, 9)))])
    assert other.eval_step is not bank.eval_step, name
  assert other.method.rows == bank.method.rows  # capacities never shrink: the next fitting prompt reuses this step

