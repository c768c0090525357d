"""BERT sharded over 8 (fake CPU) devices on 2-D meshes equals BERT on one device."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import transformers
from jax.sharding import PartitionSpec as P

from jaxprompt import sharding
from jaxprompt.models.bert import Bert
from jaxprompt.models.prompt import KVPrefix, Prompt
from jaxprompt.weights.bert_loader import load_bert
from tests.models import bert_reference as ref

# BertForPreTraining: a pooler and an MLM head, so every param kind is placed and used.
PRETRAINING = ref.Variant("bert-pretraining", transformers.BertForPreTraining, transformers.BertConfig, 0, 2)


def _forward(config, params, ids, mask, types, soft, prefix):
  model = Bert(config)
  prompt = Prompt(embeddings_BxPxD=soft[None], insert_at_B=jnp.ones((ids.shape[0],), jnp.int32),
                  encoder_self=KVPrefix(prefix, prefix))
  out = model.apply(params, ids, mask, types, prompt=prompt)
  return out.hidden_BxTxD, out.pooled_BxD, model.apply(params, out.hidden_BxTxD, method=Bert.mlm_logits)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  return str(ref.save_hf(ref.make_hf(PRETRAINING), tmp_path_factory.mktemp("bert")))


@pytest.fixture(scope="module")
def inputs():
  rng = np.random.default_rng(0)
  ids, mask = ref.padded_batch(rng, [20, 15, 9, 20, 3, 11, 20, 7], 20, pad=0)
  types = (np.arange(20)[None] >= 5).astype(np.int32) * mask
  soft = rng.normal(size=(4, ref.HIDDEN)).astype(np.float32)
  prefix = rng.normal(size=(2, 1, 3, 4, ref.HIDDEN // 4)).astype(np.float32)
  return ids, mask, types, soft, prefix


@pytest.fixture(scope="module")
def expected(checkpoint, inputs):
  config, params = load_bert(checkpoint, param_dtype="float32", dtype="float32")
  assert config.has_pooler and config.has_mlm_head
  return jax.jit(functools.partial(_forward, config))(params, *inputs)


@pytest.mark.parametrize("axes", [{"data": 2, "fsdp": 4}, {"data": 2, "tensor": 4}])
def test_sharded_forward_equals_unsharded(checkpoint, inputs, expected, axes):
  assert len(jax.devices()) == 8
  ids, mask, types, soft, prefix = inputs
  mesh = sharding.make_mesh(axes)
  config, sharded = load_bert(checkpoint, mesh=mesh, param_dtype="float32", dtype="float32")
  # The weights landed in the shardings the logical rules give them.
  wi = sharded["params"]["encoder"]["layers"]["mlp"]["wi"]["kernel"]  # [layers, embed, mlp]
  assert wi.sharding.spec == P(None, "fsdp", "tensor")
  assert wi.addressable_shards[0].data.shape == (2, 32 // mesh.shape["fsdp"], 64 // mesh.shape["tensor"])
  query_bias = sharded["params"]["encoder"]["layers"]["attention"]["query"]["bias"]  # [layers, heads, kv]
  assert query_bias.addressable_shards[0].data.shape == (2, 4 // mesh.shape["tensor"], 8)

  batch_sharding = jax.sharding.NamedSharding(mesh, P(("data", "fsdp")))
  ids, mask, types = (jax.device_put(x, batch_sharding) for x in (ids, mask, types))
  with sharding.activate(mesh):
    got = jax.jit(functools.partial(_forward, config))(sharded, ids, mask, types, soft, prefix)
  # Activations stay batch-sharded over data x fsdp.
  assert got[0].addressable_shards[0].data.shape[0] == 8 // (mesh.shape["data"] * mesh.shape["fsdp"])
  # Logits reach ~20 in magnitude: the same float32 relative error is a larger absolute one.
  for name, a, b, atol in zip(("hidden", "pooled", "mlm logits"), got, expected, (1e-5, 1e-5, 5e-5)):
    np.testing.assert_allclose(a, b, atol=atol, rtol=0, err_msg=name)
