"""T5 beam search against exhaustive search: on a 6-token vocabulary every hypothesis can be scored."""

from __future__ import annotations

import functools
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprompt.models.t5 import T5, shift_right
from jaxprompt.models.t5_beam_search import BeamSpec, beam_search, shared_beam_search
from jaxprompt.models.t5_config import T5Config
from jaxprompt.models.t5_decoding import greedy_decode

CONFIG = T5Config.preset("tiny", vocab_size=6, dtype="float32", relative_attention_max_distance=32)
VOCAB, LENGTH = CONFIG.vocab_size, 3
# Beam search is exact for the top W when W >= VOCAB ** (LENGTH - 1): every prefix up to the last
# step fits in the beam, and the last step ranks all complete hypotheses.
EXACT_WIDTH = VOCAB ** (LENGTH - 1)
PAD, EOS = CONFIG.pad_token_id, CONFIG.eos_token_id


def _init(config: T5Config):
  ids = jnp.ones((1, 4), jnp.int32)
  return nn.meta.unbox(jax.jit(T5(config).init)(jax.random.key(0), ids, ids > 0, ids))


@pytest.fixture(scope="module")
def params():
  return _init(CONFIG)


def _inputs(num: int, seed: int = 0, vocab: int = VOCAB, max_len: int = 7):
  rng = np.random.default_rng(seed)
  mask = np.arange(max_len)[None] < rng.integers(2, max_len + 1, (num, 1))
  return np.where(mask, rng.integers(2, vocab, (num, max_len)), PAD), mask


@functools.cache
def _search(spec: BeamSpec, chunk_size: int | None = None, config: T5Config = CONFIG):
  """The per-input search, or with a chunk_size the shared one."""
  if chunk_size is None:
    return jax.jit(functools.partial(beam_search, T5(config), spec=spec))
  return jax.jit(functools.partial(shared_beam_search, T5(config), spec=spec, chunk_size=chunk_size))


@functools.cache
def _teacher_forced(config: T5Config):
  return jax.jit(T5(config).apply)


def _live(seqs_HxT: np.ndarray, end_ids) -> np.ndarray:
  """Positions up to and including the first end token; with parts (a tuple of end-id tuples), the end of the last."""
  parts = end_ids if isinstance(end_ids[0], tuple) else (end_ids,)
  live = np.ones(seqs_HxT.shape, bool)
  done_H = np.zeros(len(seqs_HxT), int)
  for t in range(seqs_HxT.shape[1]):
    live[:, t] = done_H < len(parts)
    part_H = np.minimum(done_H, len(parts) - 1)
    done_H += live[:, t] & np.array([token in parts[k] for token, k in zip(seqs_HxT[:, t], part_H)], bool)
  return live


def _hypotheses(end_ids, banned_ids=(), no_repeat_id=None) -> np.ndarray:
  """Every distinct allowed hypothesis of at most LENGTH tokens, padded after its end token."""
  seqs = np.array(list(itertools.product(range(VOCAB), repeat=LENGTH)))
  live = _live(seqs, end_ids)
  seqs = np.unique(np.where(live, seqs, PAD), axis=0)
  live = _live(seqs, end_ids)
  banned = (np.isin(seqs, banned_ids) & live).any(axis=1)
  if no_repeat_id is not None:
    repeats = (seqs[:, 1:] == no_repeat_id) & (seqs[:, :-1] == no_repeat_id) & live[:, 1:]
    banned |= repeats.any(axis=1)
  return seqs[~banned]


def _scores(params, ids_NxL, mask_NxL, seqs_HxT, end_ids, config=CONFIG) -> np.ndarray:
  """log P(hypothesis | input) [N, H] from teacher-forced logits, summed up to the end token."""
  num, hyps = len(ids_NxL), len(seqs_HxT)
  decoder_input = shift_right(jnp.asarray(seqs_HxT), config.decoder_start_token_id)
  logits = _teacher_forced(config)(
      params, np.repeat(ids_NxL, hyps, 0), np.repeat(mask_NxL, hyps, 0), jnp.tile(decoder_input, (num, 1))
  )
  targets = np.tile(seqs_HxT, (num, 1))
  token_logprobs = np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)), targets[..., None], -1)[..., 0]
  return np.where(_live(targets, end_ids), token_logprobs, 0.0).sum(axis=1).reshape(num, hyps)


def _greedy(params, ids, mask, length, config=CONFIG):
  decode = jax.jit(functools.partial(greedy_decode, T5(config), max_decode_len=length))
  return np.asarray(decode(params, ids, mask))


def _assert_top(tokens_WxT, scores_W, seqs_HxT, exhaustive_H):
  """The beams are the exhaustive top len(scores_W), best first (beams past the hypotheses: -inf)."""
  order = np.argsort(-exhaustive_H, kind="stable")[: len(scores_W)]
  found = len(order)
  np.testing.assert_array_equal(np.asarray(tokens_WxT)[:found], seqs_HxT[order])
  np.testing.assert_allclose(np.asarray(scores_W)[:found], exhaustive_H[order], atol=1e-5, rtol=0)
  assert np.all(np.asarray(scores_W)[found:] == -np.inf)


@pytest.mark.parametrize(
    "width,end_ids", [(EXACT_WIDTH, None), (EXACT_WIDTH, (EOS, 4)), (VOCAB**LENGTH, None)]
)
def test_wide_beam_search_is_exhaustive_search(params, width, end_ids):
  ends = (EOS,) if end_ids is None else end_ids
  ids, mask = _inputs(3)
  seqs = _hypotheses(ends)
  exhaustive = _scores(params, ids, mask, seqs, ends)
  tokens, scores = _search(BeamSpec(width, LENGTH, end_ids))(params, ids, mask)
  for b in range(len(ids)):
    _assert_top(tokens[b], scores[b], seqs, exhaustive[b])
  assert (np.asarray(tokens)[:, :width // 4] == EOS).any(), "some top hypotheses should end early"
  if width == EXACT_WIDTH:  # fewer beams than hypotheses: the search did prune
    assert len(seqs) > width


@pytest.mark.parametrize("width", [1, 3])
def test_narrow_beam_scores_are_true_and_at_most_the_exhaustive_ones(params, width):
  ids, mask = _inputs(8, seed=1)
  seqs = _hypotheses((EOS,))
  exhaustive = _scores(params, ids, mask, seqs, (EOS,))
  best = np.sort(exhaustive, axis=1)[:, ::-1][:, :width]
  tokens, scores = map(np.asarray, _search(BeamSpec(width, LENGTH))(params, ids, mask))

  index = {tuple(s): h for h, s in enumerate(seqs)}
  for b in range(len(ids)):
    found = [index[tuple(t)] for t in tokens[b]]  # a KeyError: not a valid padded hypothesis
    assert len(set(found)) == width, "beams must be distinct hypotheses"
    np.testing.assert_allclose(scores[b], exhaustive[b, found], atol=1e-5, rtol=0)
  assert np.all(np.diff(scores, axis=1) <= 0), "best first"
  # The k-th best of any W distinct hypotheses is at most the k-th best of all of them.
  assert np.all(scores <= best + 1e-5)
  if width == 1:  # the greedy path: optimal exactly where the greedy path is, and that varies by input
    greedy = _greedy(params, ids, mask, LENGTH)
    np.testing.assert_array_equal(tokens[:, 0], greedy)
    optimal = np.isclose(scores[:, 0], best[:, 0], atol=1e-5, rtol=0)
    greedy_is_optimal = [index[tuple(g)] == h for g, h in zip(greedy, exhaustive.argmax(axis=1))]
    np.testing.assert_array_equal(optimal, greedy_is_optimal)
    assert optimal.any() and not optimal.all()


def test_shared_beam_search_is_exhaustive_over_summed_inputs_for_every_chunk_size(params):
  ids, mask = _inputs(5, seed=2)
  seqs = _hypotheses((EOS,))
  exhaustive = _scores(params, ids, mask, seqs, (EOS,)).sum(axis=0)
  results = []
  for chunk_size in (2, 5, 8):  # chunks with filler, one chunk, one chunk larger than N
    tokens, scores = _search(BeamSpec(EXACT_WIDTH, LENGTH), chunk_size)(params, ids, mask)
    _assert_top(tokens, scores, seqs, exhaustive)
    results.append((tokens, scores))
  for tokens, scores in results[1:]:
    np.testing.assert_array_equal(tokens, results[0][0])
    np.testing.assert_allclose(scores, results[0][1], atol=1e-5, rtol=0)
  # Summing over inputs matters: no input alone ranks the hypotheses as the sum does.
  alone = np.argsort(-_scores(params, ids, mask, seqs, (EOS,)), axis=1, kind="stable")[:, :EXACT_WIDTH]
  assert (alone != np.argsort(-exhaustive, kind="stable")[:EXACT_WIDTH]).any(axis=1).all()


@pytest.mark.parametrize("shared", [False, True], ids=["per_input", "shared"])
def test_banned_tokens_and_repeats_never_appear(params, shared):
  ids, mask = _inputs(3, seed=3)
  seqs = _hypotheses((EOS,), banned_ids=(3,), no_repeat_id=5)
  exhaustive = _scores(params, ids, mask, seqs, (EOS,))
  chunk_size = 2 if shared else None
  spec = BeamSpec(EXACT_WIDTH, LENGTH, banned_ids=(3,), no_repeat_id=5)
  tokens, scores = _search(spec, chunk_size)(params, ids, mask)
  if shared:
    tokens, scores, exhaustive = tokens[None], scores[None], exhaustive.sum(axis=0, keepdims=True)
  tokens = np.asarray(tokens)
  assert np.all(np.isfinite(scores)), "there are more allowed hypotheses than beams"
  assert not (tokens == 3).any()
  assert not ((tokens[..., 1:] == 5) & (tokens[..., :-1] == 5)).any()
  for b in range(len(tokens)):
    _assert_top(tokens[b], scores[b], seqs, exhaustive[b])
  # Without the rules the same search would pick banned hypotheses.
  free = np.asarray(_search(BeamSpec(EXACT_WIDTH, LENGTH), chunk_size)(params, ids, mask)[0])
  assert (free == 3).any() and ((free[..., 1:] == 5) & (free[..., :-1] == 5)).any()


@pytest.mark.parametrize("shared", [False, True], ids=["per_input", "shared"])
def test_hypotheses_in_parts_end_with_their_last_part(params, shared):
  """LM-BFF's two spans: part 0 ends at 4 or EOS, part 1 at 5 or EOS; 5 in part 0 and 4 in part 1 are plain tokens."""
  parts = ((4, EOS), (5, EOS))
  ids, mask = _inputs(3, seed=5)
  seqs = _hypotheses(parts)
  exhaustive = _scores(params, ids, mask, seqs, parts)
  chunk_size = 2 if shared else None
  tokens, scores = _search(BeamSpec(EXACT_WIDTH, LENGTH, part_end_ids=parts), chunk_size)(params, ids, mask)
  if shared:
    tokens, scores, exhaustive = tokens[None], scores[None], exhaustive.sum(axis=0, keepdims=True)
  for b in range(len(tokens)):
    _assert_top(tokens[b], scores[b], seqs, exhaustive[b])
  tokens = np.asarray(tokens)
  first_ends = np.isin(tokens[..., 0], (4, EOS))
  assert (first_ends & np.isin(tokens[..., 1], (5, EOS))).any(), "some top beams should end after two tokens"
  plain = (tokens[..., 0] == 5) | (first_ends & (tokens[..., 1] == 4))
  assert plain.any(), "some top beams should hold another part's end id as a plain token"
  with pytest.raises(ValueError, match="not both"):
    BeamSpec(2, 3, end_ids=(EOS,), part_end_ids=parts)


def test_width_one_is_greedy_decoding_and_wider_beams_score_truly():
  """On a larger vocabulary and longer outputs, where the cache is reordered over many steps."""
  config = CONFIG.replace(vocab_size=32)
  params = _init(config)
  # A random model rarely says EOS: a larger EOS output column makes some outputs end early.
  kernel = params["params"]["decoder"]["logits_dense"]["kernel"]
  params["params"]["decoder"]["logits_dense"]["kernel"] = kernel.at[:, EOS].multiply(4.0)
  ids, mask = _inputs(4, seed=4, vocab=32)
  length = 8
  tokens, _ = _search(BeamSpec(1, length), config=config)(params, ids, mask)
  greedy = _greedy(params, ids, mask, length, config)
  np.testing.assert_array_equal(np.asarray(tokens)[:, 0], greedy)
  assert (greedy[:, 1:-1] == EOS).any(), "some outputs should end midway"
  assert (greedy[:, -1] != PAD).any(), "some outputs should run to the cap"

  tokens, scores = map(np.asarray, _search(BeamSpec(4, length), config=config)(params, ids, mask))
  ended = (tokens == EOS).any(axis=-1)
  assert ended.any() and not ended.all(), "some beams should end early, some run to the cap"
  for b in range(len(ids)):
    rescored = _scores(params, ids[b : b + 1], mask[b : b + 1], tokens[b], (EOS,), config)[0]
    np.testing.assert_allclose(scores[b], rescored, atol=1e-5, rtol=0)
    assert len({tuple(t) for t in tokens[b]}) == 4
