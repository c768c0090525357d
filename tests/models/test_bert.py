"""BERT invariants: layer stacking, remat, dtypes, configs, and how a `Prompt` enters the model."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprompt.models.bert import Bert, mean_pool
from jaxprompt.models.bert_config import BertConfig
from jaxprompt.models.prompt import KVPrefix, Prompt

BERT = BertConfig(
    vocab_size=128, hidden_size=32, num_heads=4, num_layers=2, intermediate_size=64,
    max_position_embeddings=64, has_mlm_head=True, dtype="float32",
)
# RoBERTa positions: counted over valid slots from pad + 1; padding takes position pad.
ROBERTA = BERT.replace(pad_token_id=1, position_offset=2, type_vocab_size=1)
CONFIGS = {"bert": BERT, "roberta": ROBERTA}


@functools.cache
def _params(config: BertConfig):
  """Random params (numpy: nothing to compile), norm scales near 1 and every bias away from 0."""
  ids = jnp.ones((1, 4), jnp.int32)
  shapes = nn.meta.unbox(jax.eval_shape(Bert(config).init, jax.random.key(0), ids, ids > 0))
  rng = np.random.default_rng(0)
  draw = lambda path, x: (path[-1].key == "scale") + 0.2 * rng.standard_normal(x.shape, np.float32)
  return jax.tree_util.tree_map_with_path(draw, shapes)


def apply(config: BertConfig, *args, method=None, **kwargs):
  """model.apply, jitted (op-by-op dispatch makes even a tiny BERT slow)."""
  return _jitted_apply(config, method)(*args, **kwargs)


@functools.cache
def _jitted_apply(config: BertConfig, method):
  return jax.jit(functools.partial(Bert(config).apply, method=method))


def _batch(config: BertConfig, seed: int = 0, lengths=(12, 7, 3), max_len: int = 12):
  """Right-padded ids starting with a [CLS]-like token, a mask, and two-segment token types."""
  rng = np.random.default_rng(seed)
  mask = np.arange(max_len)[None] < np.asarray(lengths)[:, None]
  ids = rng.integers(3, config.vocab_size, (len(lengths), max_len))
  ids[:, 0] = 2
  types = (np.arange(max_len)[None] >= np.asarray(lengths)[:, None] // 2) & mask
  types = types if config.type_vocab_size > 1 else np.zeros_like(types)
  return jnp.asarray(np.where(mask, ids, config.pad_token_id)), jnp.asarray(mask), jnp.asarray(types.astype(np.int32))


def _unstack(tree):
  """Scanned params -> unrolled params (layers -> layers_0, layers_1, ...)."""
  out = {}
  for key, value in tree.items():
    if key == "layers":
      for i in range(jax.tree.leaves(value)[0].shape[0]):
        out[f"layers_{i}"] = jax.tree.map(lambda x: x[i], value)
    elif isinstance(value, dict):
      out[key] = _unstack(value)
    else:
      out[key] = value
  return out


def test_scanned_and_unrolled_layers_agree():
  params = _params(BERT)
  ids, mask, types = _batch(BERT)
  scanned = apply(BERT, params, ids, mask, types)
  unrolled = apply(BERT.replace(scan_layers=False), {"params": _unstack(params["params"])}, ids, mask, types)
  np.testing.assert_allclose(unrolled.hidden_BxTxD, scanned.hidden_BxTxD, atol=1e-5, rtol=0)
  np.testing.assert_allclose(unrolled.pooled_BxD, scanned.pooled_BxD, atol=1e-5, rtol=0)


def _prompt_loss(config, params, soft_PxD, ids, mask):
  out = Bert(config).apply(params, ids, mask, prompt=Prompt(embeddings_BxPxD=soft_PxD[None]))
  return jnp.mean(jnp.sin(out.hidden_BxTxD))  # remat acts inside the layers only


def test_remat_changes_nothing_but_memory():
  params = _params(BERT)
  ids, mask, _ = _batch(BERT)
  soft = jax.random.normal(jax.random.key(2), (4, BERT.hidden_size))
  grad = jax.jit(jax.value_and_grad(_prompt_loss, argnums=2), static_argnums=0)
  loss, g = grad(BERT, params, soft, ids, mask)
  loss_remat, g_remat = grad(BERT.replace(remat_policy="full"), params, soft, ids, mask)
  np.testing.assert_allclose(loss_remat, loss, rtol=1e-6)
  np.testing.assert_allclose(g_remat, g, atol=1e-6)
  assert np.abs(g).max() > 0


def test_bfloat16_compute_tracks_float32():
  params = _params(BERT)
  ids, mask, types = _batch(BERT)
  f32 = apply(BERT, params, ids, mask, types)
  bf16_params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
  bf16 = apply(BERT.replace(dtype="bfloat16"), bf16_params, ids, mask, types)
  assert bf16.hidden_BxTxD.dtype == jnp.bfloat16
  rel = np.linalg.norm(bf16.hidden_BxTxD.astype(jnp.float32) - f32.hidden_BxTxD) / np.linalg.norm(f32.hidden_BxTxD)
  assert rel < 0.05, rel


def test_empty_prompt_gives_exactly_the_no_prompt_output():
  c = BERT
  params = _params(c)
  ids, mask, types = _batch(c)
  prefix = jnp.zeros((c.num_layers, 1, 0, c.num_heads, c.head_dim))
  empty = Prompt(embeddings_BxPxD=jnp.zeros((1, 0, c.hidden_size)), encoder_self=KVPrefix(prefix, prefix))
  plain = apply(c, params, ids, mask, types)
  for prompt in (empty, Prompt()):
    out = apply(c, params, ids, mask, types, prompt=prompt)
    np.testing.assert_array_equal(out.hidden_BxTxD, plain.hidden_BxTxD)
    np.testing.assert_array_equal(out.pooled_BxD, plain.pooled_BxD)
    np.testing.assert_array_equal(out.mask_BxT, plain.mask_BxT)


def _embed(params, ids):
  return jnp.take(params["params"]["token_embedder"]["embedding"], ids, axis=0)


@pytest.mark.parametrize("name", CONFIGS)
def test_soft_tokens_are_ordinary_input_positions(name):
  """Soft tokens holding word embeddings equal those tokens written into the input (type 0)."""
  c = CONFIGS[name]
  params = _params(c)
  ids, mask, types = _batch(c)
  prompt_ids = jnp.array([5, 9, 17, 33])
  soft = _embed(params, prompt_ids)[None]
  tokens, ones, zeros = jnp.broadcast_to(prompt_ids, (3, 4)), jnp.ones((3, 4), bool), jnp.zeros((3, 4), jnp.int32)

  # After [CLS]: the soft tokens go after the first token.
  after_cls = Prompt(embeddings_BxPxD=soft, insert_at_B=jnp.ones((3,), jnp.int32))
  splice = lambda a, b: jnp.concatenate([a[:, :1], b, a[:, 1:]], axis=1)
  expected = apply(c, params, splice(ids, tokens), splice(mask, ones), splice(types, zeros))
  got = apply(c, params, ids, mask, types, prompt=after_cls)
  np.testing.assert_array_equal(got.mask_BxT, expected.mask_BxT)
  np.testing.assert_allclose(got.hidden_BxTxD, expected.hidden_BxTxD, atol=1e-5, rtol=0)
  np.testing.assert_allclose(got.pooled_BxD, expected.pooled_BxD, atol=1e-5, rtol=0)

  # Before everything (PEFT's prompt tuning): the pooler then reads the first soft token.
  first = apply(c, params, ids, mask, types, prompt=Prompt(embeddings_BxPxD=soft))
  prepend = lambda a, b: jnp.concatenate([b, a], axis=1)
  expected = apply(c, params, prepend(ids, tokens), prepend(mask, ones), prepend(types, zeros))
  np.testing.assert_allclose(first.hidden_BxTxD, expected.hidden_BxTxD, atol=1e-5, rtol=0)
  np.testing.assert_allclose(first.pooled_BxD, expected.pooled_BxD, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", CONFIGS)
def test_mixed_length_prompts_equal_each_prompt_alone(name):
  """Masked prompt slots take no position and no attention: a padded prompt acts like the shorter one."""
  c = CONFIGS[name]
  params = _params(c)
  ids, mask, types = _batch(c, lengths=(12, 7))
  rng = jax.random.split(jax.random.key(3), 3)
  soft = jax.random.normal(rng[0], (2, 5, c.hidden_size))
  prefix_shape = (c.num_layers, 2, 3, c.num_heads, c.head_dim)
  keys, values = jax.random.normal(rng[1], prefix_shape), jax.random.normal(rng[2], prefix_shape)
  soft_mask = jnp.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], bool)  # lengths 5 and 2
  kv_mask = jnp.array([[1, 1, 1], [0, 1, 1]], bool)  # lengths 3 and 2 (left-padded)
  at = jnp.ones((2,), jnp.int32)
  mixed = Prompt(embeddings_BxPxD=soft, embeddings_mask_BxP=soft_mask, insert_at_B=at,
                 encoder_self=KVPrefix(keys, values, kv_mask))
  batched = apply(c, params, ids, mask, types, prompt=mixed)

  for b, (n_soft, kv_from) in enumerate([(5, 0), (2, 1)]):
    alone = Prompt(
        embeddings_BxPxD=soft[b : b + 1, :n_soft], insert_at_B=at[:1],
        encoder_self=KVPrefix(keys[:, b : b + 1, kv_from:], values[:, b : b + 1, kv_from:]),
    )
    single = apply(c, params, ids[b : b + 1], mask[b : b + 1], types[b : b + 1], prompt=alone)
    valid = np.asarray(batched.mask_BxT[b])
    np.testing.assert_array_equal(valid.sum(), single.mask_BxT[0].sum())
    np.testing.assert_allclose(
        batched.hidden_BxTxD[b][valid], single.hidden_BxTxD[0][np.asarray(single.mask_BxT[0])], atol=1e-5, rtol=0
    )
    np.testing.assert_allclose(batched.pooled_BxD[b], single.pooled_BxD[0], atol=1e-5, rtol=0)
    pool = jax.jit(mean_pool)
    np.testing.assert_allclose(
        pool(batched.hidden_BxTxD, batched.mask_BxT)[b], pool(single.hidden_BxTxD, single.mask_BxT)[0], atol=1e-5, rtol=0
    )


def test_fully_masked_prefix_equals_no_prefix():
  c = BERT
  params = _params(c)
  ids, mask, types = _batch(c)
  prefix = jax.random.normal(jax.random.key(4), (c.num_layers, 3, 2, c.num_heads, c.head_dim))
  masked = Prompt(encoder_self=KVPrefix(prefix, prefix, jnp.zeros((3, 2), bool)))
  np.testing.assert_allclose(
      apply(c, params, ids, mask, types, prompt=masked).hidden_BxTxD,
      apply(c, params, ids, mask, types).hidden_BxTxD, atol=1e-5, rtol=0,
  )
  valid = Prompt(encoder_self=KVPrefix(prefix, prefix, jnp.ones((3, 2), bool)))  # same structure: one compile
  assert np.abs(apply(c, params, ids, mask, types, prompt=valid).hidden_BxTxD - apply(c, params, ids, mask, types).hidden_BxTxD).max() > 1e-3


def test_sequences_longer_than_the_position_table_fail_clearly():
  c = ROBERTA  # 64 positions, the first at 2: at most 62 slots
  ids = jnp.full((1, 60), 5, jnp.int32)
  soft = Prompt(embeddings_BxPxD=jnp.zeros((1, 3, c.hidden_size)))
  with pytest.raises(ValueError, match="63 slots .* positions up to 64, but the model has 64 position embeddings"):
    Bert(c).apply(_params(c), ids, ids > 0, prompt=soft)


def test_mlm_logits_need_an_mlm_head():
  c = BERT.replace(has_mlm_head=False)
  ids = jnp.ones((1, 3), jnp.int32)
  params = jax.eval_shape(Bert(c).init, jax.random.key(0), ids, ids > 0)
  assert "mlm_head" not in params["params"]
  with pytest.raises(ValueError, match="no MLM head"):
    Bert(c).apply(params, jnp.zeros((1, 3, c.hidden_size)), method=Bert.mlm_logits)


_HF_BERT = {"model_type": "bert", "vocab_size": 99, "hidden_size": 32, "num_attention_heads": 4,
            "num_hidden_layers": 2, "intermediate_size": 64, "max_position_embeddings": 40}


def test_hf_configs_map_onto_the_config():
  bert = BertConfig.from_hf(_HF_BERT, has_pooler=True, has_mlm_head=False)
  assert (bert.position_offset, bert.pad_token_id, bert.activation, bert.head_dim) == (0, 0, "gelu", 8)
  for model_type in ("roberta", "xlm-roberta"):
    hf = {**_HF_BERT, "model_type": model_type, "pad_token_id": 1, "type_vocab_size": 1, "hidden_act": "gelu_new"}
    roberta = BertConfig.from_hf(hf, has_pooler=False, has_mlm_head=True, dtype="float32")
    assert (roberta.position_offset, roberta.activation, roberta.mlm_activation) == (2, "gelu_tanh", "gelu")
    assert (roberta.has_pooler, roberta.has_mlm_head, roberta.dtype) == (False, True, "float32")


def test_config_errors_name_the_bad_value():
  with pytest.raises(ValueError, match=r"model_type='llama'.*LlamaForCausalLM.*supported: \('bert', 'roberta', 'xlm-roberta'\)"):
    BertConfig.from_hf({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}, has_pooler=False, has_mlm_head=False)
  with pytest.raises(ValueError, match="position_embedding_type='relative_key'"):
    BertConfig.from_hf({**_HF_BERT, "position_embedding_type": "relative_key"}, has_pooler=False, has_mlm_head=False)
  with pytest.raises(ValueError, match="hidden_act='quick_gelu'"):
    BertConfig.from_hf({**_HF_BERT, "hidden_act": "quick_gelu"}, has_pooler=False, has_mlm_head=False)
  with pytest.raises(ValueError, match="required key 'vocab_size'"):
    BertConfig.from_hf({"model_type": "bert"}, has_pooler=False, has_mlm_head=False)
  with pytest.raises(ValueError, match="hidden_size=30 is not a multiple of num_heads=4"):
    BertConfig(hidden_size=30, num_heads=4)
  with pytest.raises(ValueError, match="remat_policy='some'"):
    BertConfig(remat_policy="some")
