"""Banks shared by the tests that serve through them (built once per test process): three SST-2
prompts of different lengths and one RTE prompt on the tiny T5, and two prompts on a tiny Llama;
each also serves its bare backbone as BARE."""

from __future__ import annotations

import pytest

from jaxprompt import experiment
from jaxprompt.serving.bank import load_bank
from jaxprompt.serving.loading import PromptSource
from tests.method_runs import CASES
from tests.run_configs import apply_overrides, tiny_config
from tests.serving.saved_prompts import eval_records, save_run, saved_bank

MEMBERS = ("sst2-a", "sst2-b", "sst2-c")
BARE = "base"  # the name each bank serves its bare backbone under


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
  bank = load_bank(tiny_config("sst2", **{"serving.backbone_name": BARE}), sources)
  return bank, sources, eval_records(configs[MEMBERS[0]], 6)


@pytest.fixture(scope="session")
def llama_bank(tmp_path_factory):
  """(the bank: a 4-token soft prompt and a 3-token prefix on a tiny Llama, three SST-2 records)."""
  llama = CASES["prefix_tuning-llama"]
  configs = {"prompt4": llama(**{"prompt.method": "prompt_tuning", "prompt.length": 4}), "prefix3": llama()}
  bank = saved_bank(tmp_path_factory.mktemp("llama-bank"), llama(**{"serving.backbone_name": BARE}), configs)
  return bank, eval_records(configs["prompt4"], 3)
