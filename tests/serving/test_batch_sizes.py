"""A bank's batches run at the smallest of its batch sizes that holds them (config.serving.batch_sizes),
so a lone request is not padded to eval_batch_size rows, and the answers do not depend on the size."""

from __future__ import annotations

import numpy as np
import pytest

from jaxprompt import sharding
from jaxprompt.serving.bank import batch_sizes, load_bank
from jaxprompt.serving.requests import Request, step_outputs
from jaxprompt.serving.warmup import warm_up
from tests.run_configs import tiny_config
from tests.serving.conftest import BARE, MEMBERS

# Two batch shards (data x fsdp) on the 8 test devices: sizes round up to even row counts.
MESH = {"data": 2, "fsdp": 1, "tensor": 4}


def _config(**overrides):
  return tiny_config("sst2", **{"serving.backbone_name": BARE, "eval_batch_size": 8, "serving.batch_sizes": (1, 4),
                                **{f"mesh.{axis}": size for axis, size in MESH.items()}, **overrides})


def test_sizes_round_up_to_the_batch_shards_and_end_at_eval_batch_size():
  mesh = sharding.make_mesh(MESH)
  assert batch_sizes(_config(**{"serving.batch_sizes": (1, 3, 4, 50)}), mesh) == (2, 4, 8)
  assert batch_sizes(_config(**{"serving.batch_sizes": ()}), mesh) == (8,)  # eval_batch_size only, as before
  for bad in ((0,), (2.5,)):
    with pytest.raises(ValueError, match=r"config.serving.batch_sizes=.* must be positive integers"):
      batch_sizes(_config(**{"serving.batch_sizes": bad}), mesh)


@pytest.fixture(scope="module")
def small_batches_bank(sst2_bank):
  """The conftest bank's prompts on a mesh of two batch shards, with batch sizes 2, 4 and 8."""
  _, sources, _ = sst2_bank
  bank = load_bank(_config(), sources)
  step, rows = bank.eval_step, []

  def recording_step(tables, frozen, batch, *labels):
    rows.append(batch["inputs"].shape[0])
    return step(tables, frozen, batch, *labels)

  bank.eval_step = recording_step
  return bank, step, rows


def test_a_batch_runs_at_the_smallest_size_that_holds_it(small_batches_bank, sst2_bank):
  bank, _, rows = small_batches_bank
  reference, _, records = sst2_bank  # eval_batch_size rows, every batch
  assert bank.batch_sizes == (2, 4, 8)
  requests = [Request(MEMBERS[i % len(MEMBERS)], records[i % len(records)]) for i in range(11)]
  for count, want_rows in ((1, [2]), (3, [4]), (5, [8]), (11, [8, 4])):
    rows.clear()
    got, want = step_outputs(bank, requests[:count]), step_outputs(reference, requests[:count])
    assert rows == want_rows, count
    np.testing.assert_allclose(got["label_scores"], want["label_scores"], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got["decoded"], want["decoded"])


def test_the_warm_up_compiles_every_size_of_every_bucket(small_batches_bank, sst2_bank):
  bank, step, rows = small_batches_bank
  _, _, records = sst2_bank
  rows.clear()
  warm_up(bank)
  assert sorted(set(rows)) == [2, 4, 8]  # the tiny config has one bucket: its max_input_len
  compiled = step._cache_size()
  for count in (1, 2, 3, 4, 6, 8):
    step_outputs(bank, [Request(MEMBERS[0], records[0])] * count)
  assert step._cache_size() == compiled
