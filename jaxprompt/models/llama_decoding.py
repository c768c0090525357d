"""Generation for the Llama-style decoder with a key/value cache: each token chosen greedily or
sampled per example (models/sampling.py)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxprompt.models.llama import Llama
from jaxprompt.models.prompt import Prompt
from jaxprompt.models.sampling import Sampling, next_tokens


def greedy_generate(
    model: Llama,
    params: Any,
    input_ids_BxL: jax.Array,
    input_mask_BxL: jax.Array,
    max_new_tokens: int,
    prompt: Prompt | None = None,
    eos_id: int | None = None,
    pad_id: int = 0,
) -> jax.Array:
  """Argmax continuations [B, max_new_tokens] of left-padded inputs; pad after each EOS.

  Jit it with `model`, `max_new_tokens`, `eos_id` and `pad_id` static. The inputs (and soft
  tokens) are run once to fill the cache; each new token then costs one step.
  """
  last_hidden, cache = prefill(model, params, input_ids_BxL, input_mask_BxL, max_new_tokens, prompt)
  return generate_continuation(model, params, cache, last_hidden, max_new_tokens, step_prompt(prompt), eos_id, pad_id)


def prefill(
    model: Llama, params: Any, input_ids_BxL: jax.Array, input_mask_BxL: jax.Array, room: int,
    prompt: Prompt | None = None,
) -> tuple[jax.Array, Any]:
  """(last hidden state [B, D], cache with `room` free slots) after running the prompted inputs."""
  batch, length = input_ids_BxL.shape
  inserts = prompt is not None and prompt.embeddings_BxPxD is not None and prompt.replace_at_BxL is None
  num_soft = prompt.embeddings_BxPxD.shape[1] if inserts else 0  # markers replace tokens: no extra slots
  cache = model.init_cache(batch, num_soft + length + room)
  hidden, _, cache = model.apply(params, input_ids_BxL, input_mask_BxL, prompt, cache)
  return hidden[:, -1], cache


def step_prompt(prompt: Prompt | None) -> Prompt | None:
  """What goes along with each step after the prefill: soft tokens are in the cache already, key/
  value prefixes are not."""
  return None if prompt is None or prompt.encoder_self is None else Prompt(encoder_self=prompt.encoder_self)


def generate_continuation(
    model: Llama, params: Any, cache: Any, last_hidden_BxD: jax.Array, max_new_tokens: int,
    prompt: Prompt | None, eos_id: int | None, pad_id: int, sampling: Sampling | None = None,
) -> jax.Array:
  """Tokens [B, max_new_tokens] after a prefilled cache whose last hidden state is given: greedy,
  or with `sampling` each example's own choice."""
  batch = last_hidden_BxD.shape[0]

  def next_token(hidden_BxD, i):
    return next_tokens(model.apply(params, hidden_BxD, method=Llama.logits), i, sampling)

  first = next_token(last_hidden_BxD, 0)
  tokens = jnp.full((batch, max_new_tokens), pad_id, jnp.int32).at[:, 0].set(first)
  done = jnp.zeros((batch,), bool) if eos_id is None else first == eos_id

  def cond(state):
    i, _, _, _, done = state
    return (i < max_new_tokens) & ~jnp.all(done)

  def body(state):
    i, last, cache, tokens, done = state
    hidden, _, cache = model.apply(params, last[:, None], jnp.ones((batch, 1), bool), prompt, cache)
    nxt = jnp.where(done, pad_id, next_token(hidden[:, -1], i))
    if eos_id is not None:
      done = done | (nxt == eos_id)
    return i + 1, nxt, cache, tokens.at[:, i].set(nxt), done

  _, _, _, tokens, _ = jax.lax.while_loop(cond, body, (jnp.int32(1), first, cache, tokens, done))
  return tokens
