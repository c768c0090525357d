"""A bank's tables placed on the mesh by the config's rules (bank_prompt.table_axes)."""

from __future__ import annotations

import numpy as np
from jax.sharding import PartitionSpec

from jaxprompt.serving.bank import load_bank
from jaxprompt.serving.requests import Request, step_outputs
from jaxprompt.sharding import DEFAULT_RULES
from tests.run_configs import tiny_config
from tests.serving.conftest import BARE, MEMBERS


def test_tables_are_placed_by_the_rules(sst2_bank):
  """The same prompts with their rows sharded over the mesh's fsdp axis (config.rules) answer as
  the replicated bank does."""
  bank, sources, records = sst2_bank
  rules = tuple((axis, "fsdp" if axis == "prompt_rows" else mesh_axes) for axis, mesh_axes in DEFAULT_RULES)
  config = tiny_config("sst2", **{"serving.backbone_name": BARE, "serving.spare_rows": 3})
  config.rules = rules
  sharded = load_bank(config, sources)
  assert sharded.method.rows == 8 and sharded.tables["soft"].sharding.spec == PartitionSpec("fsdp", None, None)
  assert len(sharded.tables["soft"].addressable_shards[0].data) == 8 // sharded.exp.mesh.shape["fsdp"]
  requests = [Request(name, records[i]) for i, name in enumerate([*MEMBERS, BARE])]
  requests[-1] = Request(BARE, {"text": records[3]["sentence"]})
  got, want = step_outputs(sharded, requests), step_outputs(bank, requests)
  np.testing.assert_allclose(got["label_scores"], want["label_scores"], rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(got["decoded"], want["decoded"])
