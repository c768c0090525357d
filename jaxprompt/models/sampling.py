"""How each decoding step picks the next token: greedily, or sampled with temperature and nucleus
(top-p) filtering from a key of the example's own seed.

Everything is per example, so one batch mixes greedy and sampled requests with their own
settings, and a sampled request's tokens depend only on its seed, its logits and the step: the
same in any batch (a server's batches are whatever arrived together). Step t of an example draws
with `fold_in(key(seed), t)`. The filtering is transformers' TemperatureLogitsWarper then
TopPLogitsWarper: logits divided by the temperature, then only the most likely tokens whose
probability mass before them is below top_p are kept (the most likely one always is). Ids at or
past the tokenizer's vocabulary (`vocab_B`: a model's padded embedding rows, e.g. T5's 28 beyond
its 32,100 pieces) are never drawn.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp

BATCH_KEYS = ("temperature", "top_p", "seed", "sample_vocab")  # the batch columns a sampled batch carries


class Sampling(NamedTuple):
  """Per-example sampling settings; temperature 0 is greedy decoding."""

  temperature_B: jax.Array  # float32, >= 0
  top_p_B: jax.Array  # float32 in (0, 1]
  seed_B: jax.Array  # int32
  vocab_B: jax.Array  # int32: the tokenizer's vocabulary size, ids from it on are never drawn


def sampling_of(batch: Mapping[str, jax.Array]) -> Sampling | None:
  """The batch's sampling settings, or None where it carries none (every example greedy)."""
  if "temperature" not in batch:
    return None
  return Sampling(*(batch[key] for key in BATCH_KEYS))


def filtered_logits(logits_BxV: jax.Array, temperature_B: jax.Array, top_p_B: jax.Array) -> jax.Array:
  """Float32 logits / temperature with the tokens outside each row's nucleus set to -inf
  (temperature must be > 0 here)."""
  scaled = logits_BxV.astype(jnp.float32) / temperature_B[:, None]

  def nucleus(scaled_BxV):
    sorted_BxV = jnp.sort(scaled_BxV, axis=-1)[:, ::-1]
    probs = jax.nn.softmax(sorted_BxV, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    kept = mass_before < top_p_B[:, None]  # a prefix of the sorted row, never empty
    threshold_B = jnp.min(jnp.where(kept, sorted_BxV, jnp.inf), axis=-1)
    return jnp.where(scaled_BxV >= threshold_B[:, None], scaled_BxV, -jnp.inf)

  # The sort over the vocabulary is the costly part; batches without top_p < 1 skip it.
  return jax.lax.cond(jnp.all(top_p_B >= 1.0), lambda s: s, nucleus, scaled)


def next_tokens(logits_BxV: jax.Array, step: jax.Array | int, sampling: Sampling | None) -> jax.Array:
  """Each example's token [B] (int32) at decoding step `step` from its logits."""
  greedy = jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
  if sampling is None:
    return greedy

  def sampled(_):
    safe_t = jnp.where(sampling.temperature_B > 0, sampling.temperature_B, 1.0)  # greedy rows: any finite value
    in_vocab = jnp.arange(logits_BxV.shape[-1])[None] < sampling.vocab_B[:, None]
    filtered = filtered_logits(jnp.where(in_vocab, logits_BxV, -jnp.inf), safe_t, sampling.top_p_B)
    keys = jax.vmap(lambda seed: jax.random.fold_in(jax.random.key(seed), step))(sampling.seed_B)
    drawn = jax.vmap(jax.random.categorical)(keys, filtered).astype(jnp.int32)
    return jnp.where(sampling.temperature_B > 0, drawn, greedy)

  return jax.lax.cond(jnp.any(sampling.temperature_B > 0), sampled, lambda _: greedy, None)
