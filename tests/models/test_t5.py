"""T5 invariants: position buckets, layer stacking, remat, dtypes, and how a `Prompt` enters the model."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers.models.t5.modeling_t5 import T5Attention as HFT5Attention

from jaxprompt.models import layers
from jaxprompt.models.prompt import KVPrefix, Prompt
from jaxprompt.models.t5 import T5, relative_position_buckets
from jaxprompt.models.t5_config import T5Config

CONFIG = T5Config.preset("tiny", vocab_size=128, dtype="float32", relative_attention_max_distance=32)


@pytest.fixture(scope="module")
def params():
  ids = jnp.ones((1, 4), jnp.int32)
  return nn.meta.unbox(jax.jit(T5(CONFIG).init)(jax.random.key(0), ids, ids > 0, ids))


def apply(config: T5Config, *args, method=None, **kwargs):
  """model.apply, jitted (op-by-op dispatch makes even a tiny T5 slow)."""
  return _jitted_apply(config, method)(*args, **kwargs)


@functools.cache
def _jitted_apply(config: T5Config, method):
  return jax.jit(functools.partial(T5(config).apply, method=method))


def _batch(seed: int = 0, lengths=(12, 7, 3), max_len: int = 12):
  rng = np.random.default_rng(seed)
  mask = np.arange(max_len)[None] < np.asarray(lengths)[:, None]
  ids = np.where(mask, rng.integers(2, CONFIG.vocab_size, (len(lengths), max_len)), 0)
  dec = rng.integers(2, CONFIG.vocab_size, (len(lengths), 5))
  return jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(dec)


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (32, 32), (16, 64)])
def test_buckets_equal_transformers(bidirectional, num_buckets, max_distance):
  distances = np.arange(-3 * max_distance, 3 * max_distance + 1)
  expected = HFT5Attention._relative_position_bucket(
      torch.tensor(distances), bidirectional=bidirectional, num_buckets=num_buckets, max_distance=max_distance
  ).numpy()
  table, offset = relative_position_buckets(bidirectional, num_buckets, max_distance)
  np.testing.assert_array_equal(table[np.clip(distances, -offset, offset) + offset], expected)


def test_scanned_and_unrolled_layers_agree(params):
  ids, mask, dec = _batch()
  scanned = apply(CONFIG, params, ids, mask, dec)
  unrolled_params = {"params": _unstack(params["params"])}
  unrolled = apply(CONFIG.replace(scan_layers=False), unrolled_params, ids, mask, dec)
  np.testing.assert_allclose(scanned, unrolled, atol=1e-5, rtol=0)


def _unstack(tree):
  """Scanned params -> unrolled params (layers -> layers_0, layers_1, ...)."""
  out = {}
  for key, value in tree.items():
    if key == "layers":
      n = jax.tree.leaves(value)[0].shape[0]
      for i in range(n):
        out[f"layers_{i}"] = jax.tree.map(lambda x: x[i], value)
    elif isinstance(value, dict):
      out[key] = _unstack(value)
    else:
      out[key] = value
  return out


def _prompt_loss(config, params, soft_PxD, ids, mask, dec):
  prompt = Prompt(embeddings_BxPxD=soft_PxD[None])
  logits = apply(config, params, ids, mask, dec, prompt=prompt)
  return jnp.mean(jax.nn.log_softmax(logits)[..., 3])


@pytest.mark.parametrize("policy", ["full", "dots", "dots_no_batch", "qkv_out"])
def test_remat_policies_change_nothing_but_memory(params, policy):
  ids, mask, dec = _batch()
  soft = jax.random.normal(jax.random.key(1), (4, CONFIG.d_model))
  grad = jax.jit(jax.value_and_grad(_prompt_loss, argnums=2), static_argnums=0)
  loss, g = grad(CONFIG, params, soft, ids, mask, dec)
  loss_remat, g_remat = grad(CONFIG.replace(remat_policy=policy), params, soft, ids, mask, dec)
  np.testing.assert_allclose(loss_remat, loss, rtol=1e-6)
  np.testing.assert_allclose(g_remat, g, atol=1e-6)
  assert np.abs(g).max() > 0


def test_bfloat16_compute_tracks_float32(params):
  ids, mask, dec = _batch()
  f32 = apply(CONFIG, params, ids, mask, dec)
  bf16_params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
  bf16 = apply(CONFIG.replace(dtype="bfloat16"), bf16_params, ids, mask, dec)
  assert bf16.dtype == jnp.float32  # logits are accumulated and returned in float32
  rel = np.linalg.norm(bf16 - f32) / np.linalg.norm(f32)
  assert rel < 0.05, rel


def test_bfloat16_prompt_gradient_tracks_float32(params):
  # Compiled through XLA, the bfloat16 step's projections run bfloat16 x bfloat16 -> float32 dots
  # (jaxprompt/models/low_precision.py) forward and backward; the gradient stays near float32's.
  ids, mask, dec = _batch()
  soft = jax.random.normal(jax.random.key(1), (4, CONFIG.d_model))
  grad = jax.jit(jax.value_and_grad(_prompt_loss, argnums=2), static_argnums=0)
  loss, g = grad(CONFIG, params, soft, ids, mask, dec)
  bf16_params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
  loss_bf16, g_bf16 = grad(CONFIG.replace(dtype="bfloat16"), bf16_params, soft.astype(jnp.bfloat16), ids, mask, dec)
  np.testing.assert_allclose(loss_bf16, loss, rtol=0.02)
  rel = np.linalg.norm(np.asarray(g_bf16, np.float32) - g) / np.linalg.norm(g)
  assert rel < 0.05, rel


def test_empty_prompt_gives_exactly_the_no_prompt_output(params):
  ids, mask, dec = _batch()
  c = CONFIG
  empty_prefix = lambda n: KVPrefix(jnp.zeros((n, 1, 0, c.num_heads, c.d_kv)), jnp.zeros((n, 1, 0, c.num_heads, c.d_kv)))
  empty = Prompt(
      embeddings_BxPxD=jnp.zeros((1, 0, c.d_model)),
      encoder_self=empty_prefix(c.num_encoder_layers),
      decoder_self=empty_prefix(c.num_decoder_layers),
      decoder_cross=empty_prefix(c.num_decoder_layers),
  )
  np.testing.assert_array_equal(apply(c, params, ids, mask, dec, prompt=empty), apply(c, params, ids, mask, dec))
  np.testing.assert_array_equal(apply(c, params, ids, mask, dec, prompt=Prompt()), apply(c, params, ids, mask, dec))


def _embed(params, ids):
  return jnp.take(params["params"]["token_embedder"]["embedding"], ids, axis=0)


def test_soft_tokens_are_ordinary_input_positions(params):
  """A soft prompt holding token embeddings equals those tokens written before the input."""
  ids, mask, dec = _batch()
  prompt_ids = jnp.array([5, 9, 17, 33])
  c = CONFIG
  soft = Prompt(embeddings_BxPxD=_embed(params, prompt_ids)[None])
  with_tokens = jnp.concatenate([jnp.broadcast_to(prompt_ids, (3, 4)), ids], axis=1)
  with_mask = jnp.concatenate([jnp.ones((3, 4), bool), mask], axis=1)
  np.testing.assert_allclose(
      apply(c, params, ids, mask, dec, prompt=soft), apply(c, params, with_tokens, with_mask, dec), atol=1e-5
  )
  # After-BOS placement: the soft tokens go after the first token.
  after_first = Prompt(embeddings_BxPxD=soft.embeddings_BxPxD, insert_at_B=jnp.ones((3,), jnp.int32))
  spliced = jnp.concatenate([ids[:, :1], jnp.broadcast_to(prompt_ids, (3, 4)), ids[:, 1:]], axis=1)
  spliced_mask = jnp.concatenate([mask[:, :1], jnp.ones((3, 4), bool), mask[:, 1:]], axis=1)
  np.testing.assert_allclose(
      apply(c, params, ids, mask, dec, prompt=after_first), apply(c, params, spliced, spliced_mask, dec), atol=1e-5
  )


def test_mixed_length_prompts_equal_each_prompt_alone(params):
  """Masked prompt slots take no position: a padded prompt acts like the shorter prompt alone."""
  c = CONFIG
  ids, mask, dec = _batch(lengths=(12, 7))
  rng = jax.random.split(jax.random.key(2), 4)
  soft = jax.random.normal(rng[0], (2, 5, c.d_model))
  prefix_shape = (c.num_encoder_layers, 2, 3, c.num_heads, c.d_kv)
  keys, values = jax.random.normal(rng[1], prefix_shape), jax.random.normal(rng[2], prefix_shape)
  cross = jax.random.normal(rng[3], (2, c.num_decoder_layers, 2, 3, c.num_heads, c.d_kv))
  soft_mask = jnp.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], bool)  # lengths 5 and 2
  kv_mask = jnp.array([[1, 1, 1], [0, 1, 1]], bool)  # lengths 3 and 2 (left-padded)
  mixed = Prompt(
      embeddings_BxPxD=soft, embeddings_mask_BxP=soft_mask,
      encoder_self=KVPrefix(keys, values, kv_mask),
      decoder_self=KVPrefix(cross[0], cross[1], kv_mask),
  )
  batched = apply(c, params, ids, mask, dec[:2], prompt=mixed)

  for b, (n_soft, kv_from) in enumerate([(5, 0), (2, 1)]):
    alone = Prompt(
        embeddings_BxPxD=soft[b : b + 1, :n_soft],
        encoder_self=KVPrefix(keys[:, b : b + 1, kv_from:], values[:, b : b + 1, kv_from:]),
        decoder_self=KVPrefix(cross[0][:, b : b + 1, kv_from:], cross[1][:, b : b + 1, kv_from:]),
    )
    single = apply(c, params, ids[b : b + 1], mask[b : b + 1], dec[b : b + 1], prompt=alone)
    np.testing.assert_allclose(batched[b], single[0], atol=1e-5)


def test_decoder_prefix_sits_just_before_the_sequence(params):
  """Self-attention prefixes taken from a decoder's own cache continue that sequence exactly."""
  c = CONFIG
  ids, mask, dec = _batch()
  full = apply(c, params, ids, mask, dec)
  encoded, encoder_mask = apply(c, params, ids, mask, method=T5.encode)
  cache = T5(c).init_cache(3, 2)
  for t in range(2):
    _, cache = apply(c, params, dec[:, t : t + 1], encoded, encoder_mask, None, None, cache, method=T5.decode)
  prefix = KVPrefix(cache.layers.self_keys, cache.layers.self_values)
  rest = apply(c, params, ids, mask, dec[:, 2:], prompt=Prompt(decoder_self=prefix))
  np.testing.assert_allclose(rest, full[:, 2:], atol=1e-5)


def test_config_errors_name_the_bad_value():
  with pytest.raises(ValueError, match="feed_forward_proj='swiglu'"):
    T5Config(feed_forward_proj="swiglu")
  with pytest.raises(ValueError, match="remat_policy='some'"):
    T5Config(remat_policy="some")
  with pytest.raises(ValueError, match=r"model_type='bert'.*supported: \('t5', 'mt5'\)"):
    T5Config.from_hf({"model_type": "bert", "architectures": ["BertModel"]}, has_lm_head=False)
  with pytest.raises(ValueError, match="no size 'huge'"):
    T5Config.preset("huge")


@pytest.mark.parametrize("size", ["small", "base", "large", "xl", "xxl"])
def test_v1_1_presets_have_the_published_parameter_counts(size):
  """T5 v1.1 sizes (counted from the abstract init, nothing allocated): 77M ... 11.1B."""
  published = {"small": 76.96e6, "base": 247.6e6, "large": 783.2e6, "xl": 2.85e9, "xxl": 11.14e9}
  ids = jnp.ones((1, 1), jnp.int32)
  shapes = jax.eval_shape(lambda: T5(T5Config.preset(size)).init(jax.random.key(0), ids, ids > 0, ids))
  count = sum(np.prod(x.shape) for x in jax.tree.leaves(shapes))
  assert abs(count - published[size]) / published[size] < 0.01, count


def test_attention_cut_into_batch_pieces_changes_nothing(params, monkeypatch):
  """With one piece per example (as XLA:CPU gets on a single CPU device), a prefix-tuned T5 is unchanged."""
  c = CONFIG
  ids, mask, dec = _batch()
  keys = jax.random.split(jax.random.key(4), 2)
  shape = (c.num_encoder_layers, 1, 3, c.num_heads, c.d_kv)
  prompt = Prompt(embeddings_BxPxD=jax.random.normal(keys[0], (1, 2, c.d_model)),
                  encoder_self=KVPrefix(jax.random.normal(keys[1], shape), jax.random.normal(keys[1], shape)))
  whole = jax.jit(T5(c).apply)(params, ids, mask, dec, prompt=prompt)
  monkeypatch.setattr(layers, "attention_batch_chunks", lambda batch: layers.batch_chunks(batch, batch))
  cut = jax.jit(T5(c).apply)(params, ids, mask, dec, prompt=prompt)
  np.testing.assert_allclose(cut, whole, rtol=1e-5, atol=1e-5)
