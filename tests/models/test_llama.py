"""Llama invariants: how a `Prompt` meets left padding, the cache, and the mesh."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax.sharding import PartitionSpec as P

from jaxprompt import sharding
from jaxprompt.models.llama import Llama
from jaxprompt.models.llama_config import LlamaConfig
from jaxprompt.models.prompt import KVPrefix, Prompt
from tests.models.llama_reference import left_padded

CONFIG = LlamaConfig.tiny(dtype="float32")


@pytest.fixture(scope="module")
def params():
  ids = jnp.ones((1, 4), jnp.int32)
  init = jax.jit(functools.partial(Llama(CONFIG).init, method=Llama.forward_logits))
  return nn.meta.unbox(init(jax.random.key(0), ids, ids > 0))


@functools.cache
def _forward(config: LlamaConfig):
  return jax.jit(functools.partial(Llama(config).apply, method=Llama.forward_logits))


def _embed(params, ids):
  return jnp.take(params["params"]["token_embedder"]["embedding"], ids, axis=0)


def test_empty_prompt_gives_exactly_the_no_prompt_output(params):
  ids, mask = left_padded(np.random.default_rng(0), [9, 5], 9)
  c = CONFIG
  empty_prefix = KVPrefix(jnp.zeros((c.num_layers, 1, 0, c.num_kv_heads, c.head_dim)),
                          jnp.zeros((c.num_layers, 1, 0, c.num_kv_heads, c.head_dim)))
  empty = Prompt(embeddings_BxPxD=jnp.zeros((1, 0, c.hidden_size)), encoder_self=empty_prefix)
  np.testing.assert_array_equal(_forward(c)(params, ids, mask, empty), _forward(c)(params, ids, mask))


def test_soft_tokens_equal_the_tokens_they_embed(params):
  ids, mask = left_padded(np.random.default_rng(1), [9, 9], 9)
  prompt_ids = jnp.array([5, 9, 17])
  soft = Prompt(embeddings_BxPxD=_embed(params, prompt_ids)[None])
  spelled = jnp.concatenate([jnp.broadcast_to(prompt_ids, (2, 3)), ids], axis=1)
  np.testing.assert_allclose(_forward(CONFIG)(params, ids, mask, soft),
                             _forward(CONFIG)(params, spelled, jnp.ones_like(spelled, bool)), atol=1e-5)


def test_a_prompt_before_left_padding_acts_as_without_padding(params):
  """The case that numbering slots 0..T-1 gets wrong: soft tokens, then padding, then text."""
  rng = np.random.default_rng(2)
  ids, mask = left_padded(rng, [12, 4], 12)
  soft = jax.random.normal(jax.random.key(3), (1, 3, CONFIG.hidden_size))
  prefix_shape = (CONFIG.num_layers, 1, 2, CONFIG.num_kv_heads, CONFIG.head_dim)
  prefix = KVPrefix(jax.random.normal(jax.random.key(4), prefix_shape), jax.random.normal(jax.random.key(5), prefix_shape))
  prompt = Prompt(embeddings_BxPxD=soft, encoder_self=prefix)
  batched = _forward(CONFIG)(params, ids, mask, prompt)
  alone = _forward(CONFIG)(params, ids[1:, -4:], mask[1:, -4:], prompt)
  np.testing.assert_allclose(batched[1, -4:], alone[0, -4:], atol=1e-5)  # the text's positions
  np.testing.assert_allclose(batched[1, :3], alone[0, :3], atol=1e-5)  # the soft tokens'


def test_mixed_length_prompts_equal_each_prompt_alone(params):
  ids, mask = left_padded(np.random.default_rng(6), [7, 7], 7)
  soft = jax.random.normal(jax.random.key(7), (2, 4, CONFIG.hidden_size))
  soft_mask = jnp.array([[1, 1, 1, 1], [0, 0, 1, 1]], bool)  # lengths 4 and 2 (left-padded)
  batched = _forward(CONFIG)(params, ids, mask, Prompt(embeddings_BxPxD=soft, embeddings_mask_BxP=soft_mask))
  for b, start in enumerate([0, 2]):
    alone = _forward(CONFIG)(params, ids[b : b + 1], mask[b : b + 1], Prompt(embeddings_BxPxD=soft[b : b + 1, start:]))
    np.testing.assert_allclose(batched[b, -7:], alone[0, -7:], atol=1e-5)


def test_cached_steps_equal_the_full_forward(params):
  """A prefix prompt, left-padded prefill, then token-by-token steps: the same logits."""
  model = Llama(CONFIG)
  ids, mask = left_padded(np.random.default_rng(8), [10, 6], 10)
  prompt = Prompt(embeddings_BxPxD=jax.random.normal(jax.random.key(9), (1, 2, CONFIG.hidden_size)))
  full = _forward(CONFIG)(params, ids, mask, prompt)  # [B, 2 + 10, V]
  apply = jax.jit(model.apply)
  cache = model.init_cache(2, 12)
  hidden, _, cache = apply(params, ids[:, :6], mask[:, :6], prompt, cache)
  logits = [model.apply(params, hidden, method=Llama.logits)]
  for t in range(6, 10):
    hidden, _, cache = apply(params, ids[:, t : t + 1], mask[:, t : t + 1], None, cache)
    logits.append(model.apply(params, hidden, method=Llama.logits))
  np.testing.assert_allclose(jnp.concatenate(logits, axis=1), full, atol=1e-5)


def test_sharded_forward_equals_unsharded(params):
  ids, mask = left_padded(np.random.default_rng(10), [9, 5, 9, 2, 7, 9, 3, 8], 9)
  expected = _forward(CONFIG)(params, ids, mask)
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  boxed = jax.eval_shape(functools.partial(Llama(CONFIG).init, method=Llama.forward_logits), jax.random.key(0), ids, mask)
  shardings = sharding.logical_to_shardings(boxed, mesh)
  sharded = jax.device_put(params, shardings)
  assert sharded["params"]["decoder"]["layers"]["attention"]["key"]["kernel"].sharding.spec == P(None, "fsdp", "tensor", None)
  with sharding.activate(mesh):
    logits = _forward(CONFIG)(sharded, ids, mask)
  np.testing.assert_allclose(logits, expected, atol=1e-5)
