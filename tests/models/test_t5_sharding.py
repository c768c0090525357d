"""T5 sharded over 8 (fake CPU) devices on 2-D meshes equals T5 on one device."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxprompt import sharding
from jaxprompt.models.prompt import Prompt
from jaxprompt.models.t5 import T5
from jaxprompt.weights.t5_loader import load_t5
from tests.models import t5_reference as ref


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  return str(ref.save_hf(ref.make_hf_t5(ref.V1_1), tmp_path_factory.mktemp("t5")))


def _forward(config, params, ids, mask, dec, soft):
  return T5(config).apply(params, ids, mask, dec, prompt=Prompt(embeddings_BxPxD=soft[None]))


@pytest.mark.parametrize("axes", [{"data": 2, "fsdp": 4}, {"data": 2, "tensor": 4}, {"fsdp": 2, "tensor": -1}])
def test_sharded_forward_equals_unsharded(checkpoint, axes):
  assert len(jax.devices()) == 8
  rng = np.random.default_rng(0)
  ids, mask = ref.padded_batch(rng, [20, 15, 9, 20, 3, 11, 20, 7], 20)
  dec, _ = ref.padded_batch(rng, [6] * 8, 6)
  soft = rng.normal(size=(4, 32)).astype(np.float32)

  config, params = load_t5(checkpoint, param_dtype="float32", dtype="float32")
  expected = jax.jit(functools.partial(_forward, config))(params, ids, mask, dec, soft)

  mesh = sharding.make_mesh(axes)
  config, sharded = load_t5(checkpoint, mesh=mesh, param_dtype="float32", dtype="float32")
  # The weights landed in the shardings the logical rules give them.
  wi = sharded["params"]["encoder"]["layers"]["mlp"]["wi_0"]["kernel"]  # [layers, embed, mlp]
  assert wi.sharding.spec == P(None, "fsdp", "tensor")
  assert wi.addressable_shards[0].data.shape == (2, 32 // mesh.shape["fsdp"], 64 // mesh.shape["tensor"])

  batch_sharding = jax.sharding.NamedSharding(mesh, P(("data", "fsdp")))
  ids, mask, dec = (jax.device_put(x, batch_sharding) for x in (ids, mask, dec))
  with sharding.activate(mesh):
    logits = jax.jit(functools.partial(_forward, config))(sharded, ids, mask, dec, soft)
  # Activations stay batch-sharded over data x fsdp.
  assert logits.addressable_shards[0].data.shape[0] == 8 // (mesh.shape["data"] * mesh.shape["fsdp"])
  np.testing.assert_allclose(logits, expected, atol=1e-5, rtol=0)


def test_mesh_errors_say_what_is_wrong():
  with pytest.raises(ValueError, match="at most one axis may be -1"):
    sharding.make_mesh({"data": -1, "fsdp": -1})
  with pytest.raises(ValueError, match="needs 16 devices, but 8 are available"):
    sharding.make_mesh({"data": 4, "fsdp": 4})
  with pytest.raises(ValueError, match=r"mesh axes \['model'\] are unknown"):
    sharding.make_mesh({"model": 8})
