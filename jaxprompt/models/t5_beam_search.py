"""Beam search over T5's decoder: per input with a key/value cache, or one set of beams for many inputs.

The shared mode is LM-BFF's automatic template generation (Gao et al. 2021): one template for the
whole training set, decoded to maximise the sum over examples of log P_T5(template | input).

Both modes keep finished hypotheses in the beam: a hypothesis ends when it emits one of `end_ids`
(or, in parts, when its last part ends), then keeps its summed log-prob and competes with the live
ones for the W slots. Taking the top W of all W x vocab candidates is the same as LM-BFF's top
(W + 3) per beam, then the top W of those (no beam can put more than W into the top W).
Shapes are static: a beam that has no valid candidate left (W larger than the hypotheses there are)
scores -inf, and its tokens mean nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxprompt.models.t5 import T5, DecodeCache
from jaxprompt.models.t5_config import T5Config


@dataclasses.dataclass(frozen=True)
class BeamSpec:
  """What a search keeps and allows; hashable, so jit takes it as a static argument."""

  beam_width: int
  max_decode_len: int
  end_ids: tuple[int, ...] | None = None  # end a hypothesis and count in its score; None: EOS
  banned_ids: tuple[int, ...] = ()  # log-prob -inf
  no_repeat_id: int | None = None  # may not follow itself (LM-BFF: no two consecutive ".")
  # A hypothesis in parts (LM-BFF's two spans): part k ends at any of part_end_ids[k], and the
  # hypothesis with its last part. An id that ends another part is an ordinary token in this one.
  part_end_ids: tuple[tuple[int, ...], ...] = ()

  def __post_init__(self):
    if self.part_end_ids and self.end_ids is not None:
      raise ValueError(f"BeamSpec takes end_ids or part_end_ids, not both: {self}")


class _Beams(struct.PyTreeNode):
  """W hypotheses for each of B rows."""

  # Column 0 is the decoder start token, column i + 1 the token chosen at step i: column i is
  # then both step i's last token and, as tokens[:, :, :T], the teacher-forcing decoder input.
  tokens_BxWxT1: jax.Array
  scores_BxW: jax.Array  # summed log-probs, float32
  finished_BxW: jax.Array
  parts_BxW: jax.Array  # parts ended so far, int32 (one part unless part_end_ids)


def beam_search(
    model: T5,
    params: Any,
    input_ids_BxL: jax.Array,
    input_mask_BxL: jax.Array,
    spec: BeamSpec,
) -> tuple[jax.Array, jax.Array]:
  """Top W sequences [B, W, max_decode_len] (pad after the end) and summed log-probs [B, W], best first.

  Jit it with `model` and `spec` static.
  """
  c = model.config
  batch, beam_width, max_decode_len = input_ids_BxL.shape[0], spec.beam_width, spec.max_decode_len
  encoded, encoder_mask = model.apply(params, input_ids_BxL, input_mask_BxL, method=T5.encode)
  # Row b * W + w is beam w of input b, in the encoder states and in the cache alike.
  encoded_RxSxD = jnp.repeat(encoded, beam_width, axis=0)
  encoder_mask_RxS = jnp.repeat(encoder_mask, beam_width, axis=0)

  def step(beams: _Beams, cache: DecodeCache, i) -> tuple[_Beams, DecodeCache]:
    last_Rx1 = beams.tokens_BxWxT1[:, :, i].reshape(-1, 1)
    logits, cache = model.apply(
        params, last_Rx1, encoded_RxSxD, encoder_mask_RxS, None, None, cache, method=T5.decode
    )
    logprobs_BxWxV = jax.nn.log_softmax(logits[:, -1]).reshape(batch, beam_width, -1)
    beams, parent_BxW = _extend(beams, logprobs_BxWxV, i, spec, c)
    # Each surviving beam takes its parent's self-attention cache; the cross-attention keys and
    # values are the same for every beam of an input, so they stay where they are.
    rows_R = (jnp.arange(batch)[:, None] * beam_width + parent_BxW).reshape(-1)
    layer_cache = cache.layers.replace(
        self_keys=jnp.take(cache.layers.self_keys, rows_R, axis=1),
        self_values=jnp.take(cache.layers.self_values, rows_R, axis=1),
    )
    return beams, cache.replace(layers=layer_cache)

  # The first step runs outside the loop: it fills the cache's cross-attention keys and values,
  # which changes the structure of the loop's carry.
  beams = _initial_beams(batch, beam_width, max_decode_len, c.decoder_start_token_id, c.pad_token_id)
  beams, cache = step(beams, model.init_cache(batch * beam_width, max_decode_len), 0)
  beams = _loop(step, beams, cache, 1, max_decode_len)
  return beams.tokens_BxWxT1[:, :, 1:], beams.scores_BxW


def shared_beam_search(
    model: T5,
    params: Any,
    input_ids_NxL: jax.Array,
    input_mask_NxL: jax.Array,
    spec: BeamSpec,
    chunk_size: int,
) -> tuple[jax.Array, jax.Array]:
  """One set of beams for all N inputs: top sequences [W, max_decode_len], summed log-probs [W].

  A candidate token's score is the sum over the N inputs of log P(token | prefix, input_n): the
  paper's objective. LM-BFF's code averages the logits over inputs and log-normalises that instead
  (LM-BFF#23); we follow the paper. Inputs go through the encoder and the decoder `chunk_size` at a
  time. Jit it with `model`, `spec` and `chunk_size` static.
  """
  c = model.config
  beam_width, max_decode_len = spec.beam_width, spec.max_decode_len
  num, length = input_ids_NxL.shape
  num_chunks = -(-num // chunk_size)
  # The last chunk is filled with copies of the last input, which count for nothing.
  fill = ((0, num_chunks * chunk_size - num), (0, 0))
  ids_KxCxL = jnp.pad(input_ids_NxL, fill, mode="edge").reshape(num_chunks, chunk_size, length)
  mask_KxCxL = jnp.pad(input_mask_NxL, fill, mode="edge").reshape(num_chunks, chunk_size, length)
  counts_KxC = (jnp.arange(num_chunks * chunk_size) < num).reshape(num_chunks, chunk_size)
  encoded_KxCxSxD, encoder_mask_KxCxS = jax.lax.map(
      lambda x: model.apply(params, *x, method=T5.encode), (ids_KxCxL, mask_KxCxL)
  )

  # No cache here: each step runs the decoder over the whole (static-length) prefix again. A cache
  # would hold keys and values for every (input, beam) pair, N x W x T x layers of them (25 GB for
  # t5-3b in bf16 at N = 32, W = 100, T = 20), growing with N; recomputing keeps memory bounded by
  # chunk_size, for about T times the decoder compute, in a search that runs once per task.
  def summed_logprobs(prefix_WxT, i) -> jax.Array:
    def add_chunk(total_WxV, chunk):
      encoded_CxSxD, encoder_mask_CxS, counts_C = chunk
      # Row n * W + w is beam w given input n.
      logits, _ = model.apply(
          params,
          jnp.tile(prefix_WxT, (chunk_size, 1)),
          jnp.repeat(encoded_CxSxD, beam_width, axis=0),
          jnp.repeat(encoder_mask_CxS, beam_width, axis=0),
          method=T5.decode,
      )
      logprobs_CxWxV = jax.nn.log_softmax(logits[:, i]).reshape(chunk_size, beam_width, -1)
      return total_WxV + jnp.where(counts_C[:, None, None], logprobs_CxWxV, 0.0).sum(axis=0), None

    total_WxV = jnp.zeros((beam_width, c.vocab_size), jnp.float32)
    total_WxV, _ = jax.lax.scan(add_chunk, total_WxV, (encoded_KxCxSxD, encoder_mask_KxCxS, counts_KxC))
    return total_WxV

  def step(beams: _Beams, carry: None, i) -> tuple[_Beams, None]:
    logprobs_1xWxV = summed_logprobs(beams.tokens_BxWxT1[0, :, :max_decode_len], i)[None]
    return _extend(beams, logprobs_1xWxV, i, spec, c)[0], carry

  beams = _initial_beams(1, beam_width, max_decode_len, c.decoder_start_token_id, c.pad_token_id)
  beams = _loop(step, beams, None, 0, max_decode_len)
  return beams.tokens_BxWxT1[0, :, 1:], beams.scores_BxW[0]


def _initial_beams(batch: int, width: int, max_decode_len: int, start_id: int, pad_id: int) -> _Beams:
  """Only beam 0 is alive, so the first step expands one copy of the start token, not W."""
  tokens = jnp.full((batch, width, max_decode_len + 1), pad_id, jnp.int32).at[:, :, 0].set(start_id)
  scores = jnp.full((batch, width), -jnp.inf, jnp.float32).at[:, 0].set(0.0)
  return _Beams(tokens, scores, jnp.zeros((batch, width), bool), jnp.zeros((batch, width), jnp.int32))


def _extend(
    beams: _Beams, logprobs_BxWxV: jax.Array, i, spec: BeamSpec, c: T5Config
) -> tuple[_Beams, jax.Array]:
  """Step i: the best W one-token extensions of the beams, and the beam each came from."""
  batch, width, vocab = logprobs_BxWxV.shape
  vocab_V = jnp.arange(vocab)
  last_BxW = beams.tokens_BxWxT1[:, :, i]
  banned_V = jnp.isin(vocab_V, jnp.asarray(spec.banned_ids, jnp.int32))
  banned_BxWxV = jnp.broadcast_to(banned_V, logprobs_BxWxV.shape)
  if spec.no_repeat_id is not None:
    repeat_BxWxV = (vocab_V == spec.no_repeat_id) & (last_BxW == spec.no_repeat_id)[..., None]
    banned_BxWxV = banned_BxWxV | repeat_BxWxV
  logprobs_BxWxV = jnp.where(banned_BxWxV, -jnp.inf, logprobs_BxWxV)
  # A finished hypothesis has one continuation, a pad token, which keeps its score.
  pad_only_V = jnp.where(vocab_V == c.pad_token_id, 0.0, -jnp.inf)
  logprobs_BxWxV = jnp.where(beams.finished_BxW[..., None], pad_only_V, logprobs_BxWxV)
  candidates_BxWV = (beams.scores_BxW[..., None] + logprobs_BxWxV).reshape(batch, width * vocab)
  scores_BxW, flat_BxW = jax.lax.top_k(candidates_BxWV, width)
  parent_BxW, token_BxW = flat_BxW // vocab, (flat_BxW % vocab).astype(jnp.int32)
  tokens = jnp.take_along_axis(beams.tokens_BxWxT1, parent_BxW[..., None], axis=1)
  tokens = tokens.at[:, :, i + 1].set(token_BxW)
  parts = spec.part_end_ids or ((c.eos_token_id,) if spec.end_ids is None else spec.end_ids,)
  ends_PxV = np.zeros((len(parts), vocab), bool)
  for k, ids in enumerate(parts):
    ends_PxV[k, list(ids)] = True
  was_finished_BxW = jnp.take_along_axis(beams.finished_BxW, parent_BxW, axis=1)
  parts_BxW = jnp.take_along_axis(beams.parts_BxW, parent_BxW, axis=1)
  part_BxW = jnp.minimum(parts_BxW, len(parts) - 1)  # a finished hypothesis's pad ends nothing
  parts_BxW = parts_BxW + (~was_finished_BxW & jnp.asarray(ends_PxV)[part_BxW, token_BxW])
  return _Beams(tokens, scores_BxW, parts_BxW == len(parts), parts_BxW), parent_BxW


def _loop(step: Callable, beams: _Beams, carry: Any, start: int, max_decode_len: int) -> _Beams:
  """Steps start ... max_decode_len - 1, stopping early once no beam can change."""

  def cond(state):
    i, beams, _ = state
    settled = beams.finished_BxW | (beams.scores_BxW == -jnp.inf)
    return (i < max_decode_len) & ~jnp.all(settled)

  def body(state):
    i, beams, carry = state
    beams, carry = step(beams, carry, i)
    return i + 1, beams, carry

  _, beams, _ = jax.lax.while_loop(cond, body, (jnp.int32(start), beams, carry))
  return beams
