"""A masked LM's objective: the verbalizer's label words scored at the pattern's [MASK] (PET, LM-BFF).

    loss_sum:  one mask: a class's score is the mean of its label words' raw MLM logits at the mask
               (PET's verbalizer; LM-BFF's with one word per class), cross-entropy over the classes.
               Several masks (label words of several tokens with config.cloze.multi_token, or each
               example's own choices, COPA): PET with multiple masks — each choice's log-prob sum
               from one pass with all k masks, the hinge loss between choices (multi_mask.py)
    eval_step: `class_logits` [B, C]: those scores; with several masks, each choice decoded
               (config.cloze.decoding: max_first, PET's default; ltr; parallel), batched over
               examples and choices. A generated candidate (PET's WSC, TaskSpec.generate) trains
               its tokens' cross-entropy and is generated greedily at evaluation (`generated`,
               `referent` [B, K]), which evaluation.py compares as words

With config.cloze.mlm_alpha (PET's auxiliary loss, paper α = 1e-4), an unlabeled batch beside each
labelled one (keys unlabeled_inputs, unlabeled_input_mask, unlabeled_token_types) is BERT-masked
in the step and its MLM loss mixed in: (1 - α) task + α MLM (mlm.py).

The mask positions' states are gathered before the vocabulary projection, and one mask's scores
read only the label words' rows of it: no [B, L, V] logits. Batch keys (pipeline.py): inputs,
input_mask, token_types, mask_positions, label, example_mask; candidates and candidate_mask for
choices.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxprompt.models.prompt import repeat_examples, token_slots
from jaxprompt.objectives import mlm as mlm_lib
from jaxprompt.objectives import multi_mask
from jaxprompt.steps import Batch, class_cross_entropy, kl_divergence
from jaxprompt.tasks import cloze


@dataclasses.dataclass(frozen=True)
class AuxiliaryMLM:
  """PET's auxiliary MLM loss on the unlabeled batch beside each labelled one (batch keys unlabeled_*)."""

  alpha: float  # the paper's α, the MLM term's weight (PET's code's --alpha is 1 - α)
  mask_id: int
  special_ids: tuple[int, ...]  # never masked: [CLS], [SEP], padding, the pattern's [MASK]
  vocab_size: int  # random replacements are drawn from it


@dataclasses.dataclass(frozen=True)
class ClozeLabels:
  """What the steps score: the verbalizer's token ids, or None for per-example candidates."""

  words: cloze.LabelWords | None
  decoding: str  # how choices of several tokens are decoded at inference (multi_mask.ORDERS)
  pad_id: int
  mlm: AuxiliaryMLM | None = None
  bounds: tuple[float, float] | None = None  # a regression: its two classes' words are the poles
  generate: bool = False  # the one candidate is generated into the mask block (PET's WSC)

  @property
  def several_masks(self) -> bool:
    return self.words is None or self.words.num_masks > 1


def labels(tasks, backbone, config) -> ClozeLabels:
  """The one task's label words (or its candidates, which come with each batch)."""
  if len(tasks) != 1:
    raise ValueError(f"a cloze objective trains on one task; config.mixture names {len(tasks)}")
  if config.loss_over != "vocabulary":
    raise ValueError("config.loss_over='label_words' is the cloze objective's own loss already; leave it 'vocabulary'")
  spec = tasks[0].spec
  if not spec.pattern:
    raise ValueError(
        f"a {backbone.family.name} backbone scores label words at a [MASK]: task {spec.name!r} needs a cloze"
        " config.task.pattern (e.g. '{~sentence} It was [MASK] .'), not a template"
    )
  if config.cloze.decoding not in multi_mask.ORDERS:
    raise ValueError(f"config.cloze.decoding={config.cloze.decoding!r} is not one of {multi_mask.ORDERS}")
  if backbone.codec is None:
    raise ValueError("a cloze run's label words need its tokenizer: give config.model.tokenizer as a local path")
  words = None if spec.candidates else cloze.label_words(spec, backbone.codec.cloze, config.cloze.multi_token)
  mlm = None
  if config.cloze.mlm_alpha:
    if config.model.trainable == "none":
      raise ValueError("config.cloze.mlm_alpha trains the MLM on unlabeled text: it needs backbone weights that train"
                       " (config.model.trainable)")
    tokens, tokenizer = backbone.codec.cloze, backbone.tokenizer
    specials = {*tokens.start_ids, *tokens.middle_ids, *tokens.end_ids, tokens.mask_id, backbone.codec.pad_id}
    mlm = AuxiliaryMLM(config.cloze.mlm_alpha, tokens.mask_id, tuple(sorted(specials)), tokenizer.vocab_size)
  if spec.bounds and words.num_masks > 1:
    raise ValueError(f"Task {spec.name!r}: a regression's two label words must be one token each")
  return ClozeLabels(words, config.cloze.decoding, backbone.codec.pad_id, mlm, spec.bounds or None, spec.generate)


def label_targets(spec, codec, max_target_len):
  del spec, codec, max_target_len  # the label words are bound into the steps (ClozeLabels)
  return None, None


def _prompt(method: nn.Module | None, prompt_params: Any, batch: Batch):
  return None if method is None else method.apply({"params": prompt_params}, batch)


def _mask_logits(model: nn.Module, frozen: Any, prompt, rngs, token_ids_W: jax.Array | None = None):
  """multi_mask.MaskLogits of the model: the states at the given token positions, projected."""

  def mask_logits(ids_NxL, valid_NxL, types_NxL, positions_NxK):
    out = model.apply(frozen, ids_NxL, valid_NxL, types_NxL, prompt, rngs=rngs)
    slots_NxK = token_slots(prompt, jnp.maximum(positions_NxK, 0))  # -1: past the example's masks
    states_NxKxD = jnp.take_along_axis(out.hidden_BxTxD, slots_NxK[..., None], axis=1)
    return model.apply(frozen, states_NxKxD, token_ids_W, method=type(model).mlm_logits)

  return mask_logits


def bare_mask_logits(model: nn.Module, frozen: Any, token_ids_W: jax.Array | None = None):
  """The model's multi_mask.MaskLogits with no prompt and no dropout (LM-BFF's zero-shot label
  search): [N, K, V] over the whole vocabulary, or [N, K, W] over the tokens `token_ids_W`."""
  return _mask_logits(model, frozen, None, None, token_ids_W)


def _choices(batch: Batch, labels: ClozeLabels) -> tuple[jax.Array, jax.Array]:
  """Candidates [B, C, K] and their mask: the batch's own, or the verbalizer's for every example."""
  if labels.words is None:
    return batch["candidates"], batch["candidate_mask"]
  shape = (batch["inputs"].shape[0],) + labels.words.ids_CxWxK[:, 0].shape
  return (jnp.broadcast_to(labels.words.ids_CxWxK[:, 0], shape),
          jnp.broadcast_to(labels.words.mask_CxWxK[:, 0], shape))


def _one_mask_scores(mask_logits_fn, batch: Batch, words: cloze.LabelWords) -> jax.Array:
  """[B, C]: each class's mean raw logit of its label words at the one mask (PET's verbalizer)."""
  classes, num_words, _ = words.ids_CxWxK.shape
  logits_Bx1xCW = mask_logits_fn(batch["inputs"], batch["input_mask"], batch["token_types"], batch["mask_positions"][:, :1])
  logits_BxCxW = logits_Bx1xCW[:, 0].reshape(-1, classes, num_words)
  mask_CxW = jnp.asarray(words.mask_CxWxK[:, :, 0], jnp.float32)
  return jnp.sum(logits_BxCxW * mask_CxW, axis=-1) / jnp.sum(mask_CxW, axis=-1)


def _inputs(batch: Batch) -> tuple[jax.Array, ...]:
  return batch["inputs"], batch["input_mask"], batch["token_types"], batch["mask_positions"]


def loss_sum(
    prompt_params: Any, frozen: Any, batch: Batch, rng: jax.Array, *, model: nn.Module, method: nn.Module | None,
    labels: ClozeLabels,
) -> tuple[jax.Array, jax.Array]:
  """(summed loss, number of labelled examples): cross-entropy over classes, or the hinge over choices."""
  prompt = _prompt(method, prompt_params, batch)
  dropout_rng, masking_rng = jax.random.split(rng)
  rngs = None if model.deterministic else {"dropout": dropout_rng}
  labelled_B = (batch["label"] >= 0) & batch["example_mask"]
  if labels.generate:  # the referent's tokens, and pad tokens at the block's extra masks (PET's WSC)
    targets_BxK = jnp.where(batch["candidate_mask"][:, 0], batch["candidates"][:, 0], labels.pad_id)
    total, count = multi_mask.generation_loss(_mask_logits(model, frozen, prompt, rngs), *_inputs(batch),
                                              targets_BxK, labelled_B)
  elif not labels.several_masks:
    token_ids = jnp.asarray(labels.words.ids_CxWxK[:, :, 0].reshape(-1))
    scores_BxC = _one_mask_scores(_mask_logits(model, frozen, prompt, rngs, token_ids), batch, labels.words)
    if labels.bounds:
      total, count = _regression_kl(scores_BxC, batch, labels.bounds)
    else:
      total, count = class_cross_entropy(scores_BxC, batch["label"], labelled_B)
  else:
    candidates, candidate_mask = _choices(batch, labels)
    scores_BxC = multi_mask.choice_log_probs_one_pass(
        _mask_logits(model, frozen, prompt, rngs), *_inputs(batch), candidates, candidate_mask)
    total, count = multi_mask.hinge_loss(scores_BxC, batch["label"], labelled_B, jnp.any(candidate_mask, axis=-1))
  if labels.mlm is None:
    return total, count
  mlm_sum, mlm_count = _auxiliary_mlm(model, frozen, batch, rngs, masking_rng, labels.mlm)
  return mlm_lib.combine_with_mlm(total, count, mlm_sum, mlm_count, labels.mlm.alpha)


def _regression_kl(scores_Bx2: jax.Array, batch: Batch, bounds: tuple[float, float]) -> tuple[jax.Array, jax.Array]:
  """(summed, count) KL(target || softmax over the two poles' logits) with target [1 - s, s], s the
  gold score scaled into [0, 1] (LM-BFF's regression, with the target as probabilities: LM-BFF
  passes them as log-probabilities, LM-BFF#45)."""
  scored_B = jnp.isfinite(batch["score"]) & batch["example_mask"]
  low, high = bounds
  high_B = jnp.where(scored_B, (batch["score"] - low) / (high - low), 0.5)
  target_Bx2 = jnp.stack([1.0 - high_B, high_B], axis=-1)
  logp_Bx2 = jax.nn.log_softmax(scores_Bx2.astype(jnp.float32), axis=-1)
  kl_B = kl_divergence(target_Bx2, logp_Bx2)
  return jnp.sum(jnp.where(scored_B, kl_B, 0.0)), jnp.sum(scored_B).astype(jnp.float32)


def _auxiliary_mlm(model: nn.Module, frozen: Any, batch: Batch, rngs, rng: jax.Array,
                   mlm: AuxiliaryMLM) -> tuple[jax.Array, jax.Array]:
  """(summed, count) MLM loss of the unlabeled batch, BERT-masked here (a new draw every step)."""
  ids, valid, types = batch["unlabeled_inputs"], batch["unlabeled_input_mask"], batch["unlabeled_token_types"]
  # The pattern-rendered unlabeled text, as PET trains it; the MLM runs without the prompt.
  maskable = valid & ~jnp.isin(ids, jnp.asarray(mlm.special_ids))
  masked, positions, targets, weights = mlm_lib.bert_masking(
      rng, ids, maskable, mask_id=mlm.mask_id, vocab_size=mlm.vocab_size,
      max_predictions=mlm_lib.default_max_predictions(ids.shape[1]))
  return mlm_lib.mlm_loss_sum(_mask_logits(model, frozen, None, rngs), masked, valid, types, positions, targets, weights)


def eval_step(
    prompt_params: Any,
    frozen: Any,
    batch: Batch,
    label_targets_CxT: jax.Array | None,
    label_mask_CxT: jax.Array | None,
    *,
    model: nn.Module,
    method: nn.Module | None,
    labels: ClozeLabels,
) -> dict[str, jax.Array]:
  """`class_logits` [B, C]: mean label-word logits at the mask, or the choices' decoded log-prob sums."""
  del label_targets_CxT, label_mask_CxT  # the label words are bound in `labels`
  prompt = _prompt(method, prompt_params, batch)
  if labels.generate:  # evaluation compares the generated words with the referent's (evaluation.py)
    tokens_BxK = multi_mask.generate(_mask_logits(model, frozen, prompt, None), *_inputs(batch), labels.decoding)
    return {"generated": tokens_BxK,
            "referent": jnp.where(batch["candidate_mask"][:, 0], batch["candidates"][:, 0], -1)}
  if not labels.several_masks:
    token_ids = jnp.asarray(labels.words.ids_CxWxK[:, :, 0].reshape(-1))
    return {"class_logits": _one_mask_scores(_mask_logits(model, frozen, prompt, None, token_ids), batch, labels.words)}
  candidates, candidate_mask = _choices(batch, labels)
  # Decoding runs on B x C sequences (one per choice, its surplus masks removed): the prompt too.
  per_choice = _mask_logits(model, frozen, repeat_examples(prompt, candidates.shape[1]), None)
  scores_BxC = multi_mask.decode_scores(per_choice, *_inputs(batch), candidates, candidate_mask, labels.decoding,
                                        labels.pad_id)
  return {"class_logits": jnp.where(jnp.any(candidate_mask, axis=-1), scores_BxC, -jnp.inf)}


def bind_loss(backbone, method: nn.Module | None, labels: ClozeLabels):
  return functools.partial(loss_sum, model=backbone.training_model, method=method, labels=labels)


def bind_eval(backbone, method: nn.Module | None, labels: ClozeLabels, max_decode_len: int):
  del max_decode_len  # nothing is generated
  return functools.partial(eval_step, model=backbone.model, method=method, labels=labels)
