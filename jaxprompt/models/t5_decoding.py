"""Decoding for T5 with a key/value cache: the encoder runs once, then one decoder step per token,
each token chosen greedily or sampled per example (models/sampling.py)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxprompt.models.prompt import Prompt
from jaxprompt.models.sampling import Sampling, next_tokens
from jaxprompt.models.t5 import T5


def greedy_decode(
    model: T5,
    params: Any,
    input_ids_BxL: jax.Array,
    input_mask_BxL: jax.Array,
    max_decode_len: int,
    prompt: Prompt | None = None,
) -> jax.Array:
  """Argmax tokens [B, max_decode_len]; after a sequence's EOS, pad tokens (as HF `generate`).

  Jit it with `model` and `max_decode_len` static.
  """
  encoded, encoder_mask = model.apply(params, input_ids_BxL, input_mask_BxL, prompt, method=T5.encode)
  return decode_encoded(model, params, encoded, encoder_mask, max_decode_len, prompt)


def decode_encoded(
    model: T5,
    params: Any,
    encoded_BxSxD: jax.Array,
    encoder_mask_BxS: jax.Array,
    max_decode_len: int,
    prompt: Prompt | None = None,
    sampling: Sampling | None = None,
) -> jax.Array:
  """Tokens [B, max_decode_len] from encoder states already computed: `greedy_decode`'s, or with
  `sampling` each example's own choice (models/sampling.py); pad after each EOS.

  The first step also fills the cross-attention keys/values of every layer, so the loop reuses
  them instead of projecting the encoder states again per token.
  """
  c = model.config
  batch = encoded_BxSxD.shape[0]

  def step(tokens_Bx1, cache, i):
    logits, cache = model.apply(
        params, tokens_Bx1, encoded_BxSxD, encoder_mask_BxS, None, prompt, cache, method=T5.decode
    )
    return next_tokens(logits[:, -1], i, sampling), cache

  start = jnp.full((batch, 1), c.decoder_start_token_id, jnp.int32)
  first, cache = step(start, model.init_cache(batch, max_decode_len), 0)
  tokens = jnp.full((batch, max_decode_len), c.pad_token_id, jnp.int32).at[:, 0].set(first)
  done = first == c.eos_token_id

  def cond(state):
    i, _, _, _, done = state
    return (i < max_decode_len) & ~jnp.all(done)

  def body(state):
    i, last, cache, tokens, done = state
    nxt, cache = step(last[:, None], cache, i)
    nxt = jnp.where(done, c.pad_token_id, nxt)
    return i + 1, nxt, cache, tokens.at[:, i].set(nxt), done | (nxt == c.eos_token_id)

  _, _, _, tokens, _ = jax.lax.while_loop(cond, body, (jnp.int32(1), first, cache, tokens, done))
  return tokens
