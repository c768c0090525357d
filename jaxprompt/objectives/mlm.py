"""PET's auxiliary MLM objective: BERT masking, the masked-token loss, and its mix with the task loss.

    masked, positions_BxM, targets_BxM, weights_BxM = bert_masking(
        rng, ids_BxL, maskable_BxL, mask_id=..., vocab_size=..., max_predictions=default_max_predictions(L))
    mlm_sum, mlm_count = mlm_loss_sum(
        mask_logits, masked, valid_BxL, types_BxL, positions_BxM, targets_BxM, weights_BxM)
    total, count = combine_with_mlm(task_sum, task_count, mlm_sum, mlm_count, alpha=PAPER_ALPHA)

The masking draws what transformers' DataCollatorForLanguageModeling.torch_mask_tokens and PET's
`_mask_tokens` draw (PET:pet/wrapper.py:433-462): an independent Bernoulli(p) per maskable token;
of the selected, Bernoulli(0.8) -> [MASK]; of the rest, Bernoulli(0.5) -> a token uniform over the
whole vocabulary (it may equal the original or be a special token); the others stay unchanged. The
predicted positions are gathered into M static slots so the vocabulary projection runs on [B, M, D]
states, never [B, L, V] (PET's call projects every position). PET draws random tokens from
len(tokenizer): pass that as vocab_size. The caller's maskable mask is valid-and-not-special, as in
current transformers; the tokenizers of the transformers 3.0.2 PET pins mark only [CLS]/[SEP] as
special, so PET also masks (and predicts) padding and the pattern's own [MASK].
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxprompt.steps import class_cross_entropy

# The paper's α: the weight of the MLM term (PET's --alpha 0.9999 is the weight of the task term).
PAPER_ALPHA = 1e-4
# Standard deviations above the binomial mean that default_max_predictions leaves room for.
_CAP_SIGMAS = 6.0

MaskLogits = Callable[[jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]


def default_max_predictions(length: int, probability: float = 0.15) -> int:
  """Slots M for length-L rows: the Binomial(L, p) mean + 6 sd (overflow chance < 2e-7 a row at p=0.15)."""
  # The count of selected tokens is Binomial(n, p) with n <= L maskable tokens, so its tail at n = L
  # bounds every row's. Exact tails at p=0.15 for L = 8..1024 are 0 to 1.3e-7 (tested), i.e. about
  # one truncated row in ten million, at ~1.6x the mean number of slots (126 for L=512, mean 77).
  spread = _CAP_SIGMAS * math.sqrt(length * probability * (1.0 - probability))
  return max(1, min(length, math.ceil(probability * length + spread)))


def _into_slots(selected_L: jax.Array, values_L: jax.Array, num_slots: int) -> jax.Array:
  """The selected entries of one row, in position order, in num_slots slots (0 after the last)."""
  slot_L = jnp.where(selected_L, jnp.cumsum(selected_L) - 1, num_slots)  # num_slots: out of range, dropped
  return jnp.zeros((num_slots,), values_L.dtype).at[slot_L].set(values_L, mode="drop")


def bert_masking(
    rng: jax.Array,
    ids_BxL: jax.Array,
    maskable_BxL: jax.Array,
    *,
    mask_id: int,
    vocab_size: int,
    max_predictions: int,
    probability: float = 0.15,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """(masked ids [B, L], positions [B, M], original ids there [B, M], float32 weights [B, M]) of BERT masking."""
  select_rng, replace_rng, random_rng, token_rng = jax.random.split(rng, 4)
  shape = ids_BxL.shape
  selected_BxL = jax.random.bernoulli(select_rng, probability, shape) & maskable_BxL.astype(bool)
  # Slots hold the first M selections in position order; later ones are dropped *before* the
  # replacement, so a token is changed exactly when it is predicted. Under the default cap this
  # happens to fewer than 2e-7 of rows, so its bias toward early positions is negligible.
  rank_BxL = jnp.cumsum(selected_BxL, axis=1) - 1
  selected_BxL = selected_BxL & (rank_BxL < max_predictions)
  replaced_BxL = jax.random.bernoulli(replace_rng, 0.8, shape) & selected_BxL
  # 0.5 of the remaining 20%: transformers' random_replace_prob / (1 - mask_replace_prob) = 0.1 / 0.2.
  randomised_BxL = jax.random.bernoulli(random_rng, 0.5, shape) & selected_BxL & ~replaced_BxL
  random_ids_BxL = jax.random.randint(token_rng, shape, 0, vocab_size, dtype=ids_BxL.dtype)
  masked_BxL = jnp.where(replaced_BxL, jnp.asarray(mask_id, ids_BxL.dtype), ids_BxL)
  masked_BxL = jnp.where(randomised_BxL, random_ids_BxL, masked_BxL)

  to_slots = jax.vmap(lambda sel, values: _into_slots(sel, values, max_predictions))
  positions_BxL = jnp.broadcast_to(jnp.arange(shape[1], dtype=jnp.int32), shape)
  positions_BxM = to_slots(selected_BxL, positions_BxL)
  targets_BxM = to_slots(selected_BxL, ids_BxL)
  weights_BxM = to_slots(selected_BxL, selected_BxL.astype(jnp.float32))
  return masked_BxL, positions_BxM, targets_BxM, weights_BxM


def mlm_loss_sum(
    mask_logits: MaskLogits,
    ids_BxL: jax.Array,
    valid_BxL: jax.Array,
    token_types_BxL: jax.Array,
    positions_BxM: jax.Array,
    targets_BxM: jax.Array,
    weights_BxM: jax.Array,
) -> tuple[jax.Array, jax.Array]:
  """(summed cross-entropy, number of predicted tokens) of the masked ids' logits at the gathered positions."""
  logits_BxMxV = mask_logits(ids_BxL, valid_BxL, token_types_BxL, positions_BxM)
  return class_cross_entropy(logits_BxMxV, targets_BxM, weights_BxM)


def combine_with_mlm(
    task_sum: jax.Array,
    task_count: jax.Array,
    mlm_sum: jax.Array,
    mlm_count: jax.Array,
    alpha: float = PAPER_ALPHA,
) -> tuple[jax.Array, jax.Array]:
  """(sum, task_count): sum / task_count = (1 - α)·task_mean + α·mlm_mean; α the paper's (PET's --alpha = 1 - α).

  Under gradient accumulation the step sums both over microbatches i and divides once, giving
  (1 - α)·(full-batch task mean) + α·Σ_i (task_count_i / Σ task_count)·mlm_mean_i: the task term is the
  full-batch one; the MLM term weights each microbatch's own MLM mean by its labelled count (the
  full-batch MLM mean when predicted counts are proportional to labelled ones). PET instead averages each
  microbatch's combined loss equally (loss / gradient_accumulation_steps); the two agree when
  microbatches hold equally many labelled examples. A microbatch without labelled examples adds
  nothing, its MLM term included; one without predicted tokens adds no MLM term (PyTorch: NaN).
  """
  task_count = jnp.asarray(task_count, jnp.float32)
  mlm_mean = mlm_sum / jnp.maximum(mlm_count, 1.0)
  return (1.0 - alpha) * task_sum + alpha * task_count * mlm_mean, task_count
