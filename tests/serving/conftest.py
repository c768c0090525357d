"""A bank of three SST-2 prompts of different lengths and one RTE prompt on the tiny T5, shared by
the tests that serve through it (built once per test process)."""

from __future__ import annotations

import pytest

from jaxprompt import experiment
from jaxprompt.serving.bank import load_bank
from jaxprompt.serving.loading import PromptSource
from tests.run_configs import apply_overrides, tiny_config
from tests.serving.saved_prompts import eval_records, save_run

MEMBERS = ("sst2-a", "sst2-b", "sst2-c")


@pytest.fixture(scope="session")
def sst2_bank(tmp_path_factory):
  """(the bank, its prompts' sources, six SST-2 eval records)."""
  root = tmp_path_factory.mktemp("sst2-bank")
  configs = {name: tiny_config("sst2", **{"prompt.length": 2 + i, "prompt.init": "uniform"})
             for i, name in enumerate(MEMBERS)}
  configs["rte"] = tiny_config("rte", **{"prompt.length": 2})
  base = experiment.build(apply_overrides(tiny_config("sst2"), **{"prompt.method": "none"}))
  sources = [PromptSource(name, config, str(save_run(config, base.backbone, base.mesh, root / name, seed)))
             for seed, (name, config) in enumerate(configs.items())]
  return load_bank(tiny_config("sst2"), sources), sources, eval_records(configs[MEMBERS[0]], 6)
