"""Prompts added to and removed from a bank at runtime, on the backbone it already holds: the
new bank serves the prompts it keeps exactly as before, and the old one is untouched."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from jaxprompt.serving.requests import Request, step_outputs
from tests.serving.conftest import MEMBERS


def _scores(bank, name, records):
  out = step_outputs(bank, [Request(name, r) for r in records])
  return out["label_scores"][:, list(bank.labels.columns[bank.prompt_id(name)])]


def test_removing_and_adding_prompts_keeps_every_other_prompts_answers(sst2_bank):
  bank, sources, records = sst2_bank
  before = {name: _scores(bank, name, records) for name in MEMBERS}
  smaller = bank.without_prompts(["sst2-b", "rte"])
  assert [p.name for p in smaller.prompts] == ["sst2-a", "sst2-c"]
  assert smaller.exp.backbone is bank.exp.backbone  # nothing reloaded
  for name in ("sst2-a", "sst2-c"):
    np.testing.assert_allclose(_scores(smaller, name, records), before[name], rtol=1e-5, atol=1e-5, err_msg=name)
  # sst2-b comes back under a new name, and sst2-a is replaced in place by sst2-c's run.
  grown = smaller.with_prompts([dataclasses.replace(sources[1], name="sst2-b-again"),
                                dataclasses.replace(sources[2], name="sst2-a")])
  assert sorted(p.name for p in grown.prompts) == ["sst2-a", "sst2-b-again", "sst2-c"]
  np.testing.assert_allclose(_scores(grown, "sst2-b-again", records), before["sst2-b"], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(_scores(grown, "sst2-a", records), before["sst2-c"], rtol=1e-5, atol=1e-5)
  assert [p.name for p in bank.prompts] == [*MEMBERS, "rte"]  # the old bank serves on unchanged
  np.testing.assert_allclose(_scores(bank, "sst2-a", records), before["sst2-a"], rtol=1e-5, atol=1e-5)


def test_removing_an_unknown_or_every_prompt_is_refused(sst2_bank):
  bank, _, _ = sst2_bank
  with pytest.raises(KeyError, match="no prompt 'nope' in the bank"):
    bank.without_prompts(["nope"])
  with pytest.raises(ValueError, match="at least one prompt"):
    bank.without_prompts([p.name for p in bank.prompts])
