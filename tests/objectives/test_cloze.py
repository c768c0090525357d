"""The cloze objective equals a PyTorch computation on transformers' masked LMs (same weights, same
batch): PET's verbalizer loss (several label words per class) and the multi-mask hinge loss, and
their gradients w.r.t. a soft prompt; no [B, L, V] logits are built; batched multi-mask decoding
through the eval step equals one example at a time."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.extend
import numpy as np
import pytest
import torch

from jaxprompt.models.albert import Albert
from jaxprompt.models.bert import Bert
from jaxprompt.objectives import cloze
from jaxprompt.prompts import initializers
from jaxprompt.prompts.soft_prompt import SoftPrompt
from jaxprompt.tasks.cloze import LabelWords
from jaxprompt.weights.albert_loader import load_albert
from jaxprompt.weights.bert_loader import load_bert
from tests.models import albert_reference, bert_reference

PROMPT_LEN, LENGTH, MASK_ID = 3, 20, 5
# (name, reference variant, loader, module, reference module, token types used)
FAMILIES = {
    "bert": (bert_reference.BERT_MLM, load_bert, Bert, bert_reference, True),
    "roberta": (bert_reference.ROBERTA_MLM, load_bert, Bert, bert_reference, False),
    "albert": (albert_reference.SHARED_MLM, load_albert, Albert, albert_reference, True),
}


def _load(name: str, tmp_path):
  variant, loader, module, reference, _ = FAMILIES[name]
  hf = reference.make_hf(variant)
  config, frozen = loader(str(reference.save_hf(hf, tmp_path)), param_dtype="float32", dtype="float32")
  return hf, module(config), frozen


def _batch(name: str, num_masks: int, seed: int = 0) -> dict[str, np.ndarray]:
  """Right-padded random inputs with a block of `num_masks` masks inside each, two segments."""
  _, _, _, reference, typed = FAMILIES[name]
  vocab = reference.VOCAB if name != "albert" else albert_reference.VOCAB
  pad = 1 if name == "roberta" else 0
  rng = np.random.default_rng(seed)
  lengths = np.array([20, 13, 9, 16])
  ids = rng.integers(6, vocab, (4, LENGTH)).astype(np.int32)
  valid = np.arange(LENGTH)[None] < lengths[:, None]
  starts = np.array([4, 2, 1, 7])
  positions = starts[:, None] + np.arange(num_masks)[None]
  np.put_along_axis(ids, positions, MASK_ID, axis=1)
  ids = np.where(valid, ids, pad)
  types = ((np.arange(LENGTH)[None] >= lengths[:, None] // 2) & valid).astype(np.int32) if typed else np.zeros_like(ids)
  return {"inputs": ids, "input_mask": valid, "token_types": types, "mask_positions": positions.astype(np.int32),
          "label": np.array([0, 2, 1, -1], np.int32), "example_mask": np.array([True, True, True, False])}


def _prompt_method(embed_dim: int) -> tuple[nn.Module, dict]:
  method = SoftPrompt(PROMPT_LEN, embed_dim, initializers.uniform(0.5))
  params = nn.meta.unbox(method.init(jax.random.key(3), {"input_mask": np.ones((1, 4), bool)})["params"])
  return method, params


def _torch_mask_logits(hf, prompt_PxE: torch.Tensor, batch) -> torch.Tensor:
  """transformers' MLM logits [B, K, V] at the mask positions, the prompt given as inputs_embeds."""
  ids = torch.tensor(batch["inputs"], dtype=torch.long)
  words = hf.get_input_embeddings()(ids)
  embeds = torch.cat([prompt_PxE.expand(ids.shape[0], -1, -1), words], dim=1)
  ones = torch.ones((ids.shape[0], PROMPT_LEN), dtype=torch.long)
  attention = torch.cat([ones, torch.tensor(batch["input_mask"], dtype=torch.long)], dim=1)
  types = torch.cat([0 * ones, torch.tensor(batch["token_types"], dtype=torch.long)], dim=1)
  logits = hf(inputs_embeds=embeds, attention_mask=attention, token_type_ids=types).logits
  slots = torch.tensor(batch["mask_positions"], dtype=torch.long) + PROMPT_LEN
  return torch.gather(logits, 1, slots[..., None].expand(-1, -1, logits.shape[-1]))


def _our_loss_and_grad(module, frozen, method, params, batch, labels):
  def mean_loss(p):
    total, count = cloze.loss_sum(p, frozen, batch, jax.random.key(0), model=module, method=method, labels=labels)
    return total / count

  return jax.jit(jax.value_and_grad(mean_loss))(params)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_verbalizer_loss_and_prompt_gradient_match_transformers(name, tmp_path):
  hf, module, frozen = _load(name, tmp_path)
  batch = _batch(name, num_masks=1)
  # Three classes; the second has two label words (PET averages their logits), the third one.
  words = LabelWords(np.array([[[7], [0]], [[9], [11]], [[13], [0]]], np.int32),
                     np.array([[[True], [False]], [[True], [True]], [[True], [False]]]))
  method, params = _prompt_method(module.config.embedding_size if name == "albert" else module.config.hidden_size)
  loss, grads = _our_loss_and_grad(module, frozen, method, params, batch, cloze.ClozeLabels(words, "max_first", 0))

  prompt = torch.tensor(np.asarray(params["embeddings"]), requires_grad=True)
  at_mask = _torch_mask_logits(hf, prompt, batch)[:, 0]
  scores = torch.stack([at_mask[:, 7], (at_mask[:, 9] + at_mask[:, 11]) / 2, at_mask[:, 13]], dim=1)
  keep = torch.tensor(batch["example_mask"])
  expected = torch.nn.functional.cross_entropy(scores[keep], torch.tensor(batch["label"], dtype=torch.long)[keep])
  expected.backward()
  assert abs(float(loss) - expected.item()) < 1e-5 and expected.item() > 0.1
  np.testing.assert_allclose(grads["embeddings"], prompt.grad.numpy(), atol=1e-5, rtol=1e-4)
  assert np.abs(prompt.grad.numpy()).max() > 1e-4  # the comparison is not between zeros


def test_multi_mask_hinge_loss_and_prompt_gradient_match_transformers(tmp_path):
  hf, module, frozen = _load("albert", tmp_path)
  batch = _batch("albert", num_masks=3)
  # Each example's own two or three choices of 1..3 tokens (COPA-style), left-aligned in the block.
  candidates = np.array([[[7, 8, 9], [10, 0, 0], [0, 0, 0]], [[11, 12, 0], [13, 14, 15], [16, 0, 0]],
                         [[17, 0, 0], [18, 19, 0], [0, 0, 0]], [[20, 0, 0], [21, 0, 0], [0, 0, 0]]], np.int32)
  batch.update(candidates=candidates, candidate_mask=candidates > 0, label=np.array([0, 2, 1, -1], np.int32))
  method, params = _prompt_method(module.config.embedding_size)
  loss, grads = _our_loss_and_grad(module, frozen, method, params, batch, cloze.ClozeLabels(None, "max_first", 0))

  prompt = torch.tensor(np.asarray(params["embeddings"]), requires_grad=True)
  logp = torch.log_softmax(_torch_mask_logits(hf, prompt, batch), dim=-1)  # [B, K, V]
  total = 0.0
  for b in range(3):  # the fourth example is padding
    scores = [sum(logp[b, j, t] for j, t in enumerate(choice) if t) for choice in candidates[b] if choice.any()]
    gold = scores[batch["label"][b]]
    total = total + sum(torch.relu(1 - gold + s) for i, s in enumerate(scores) if i != batch["label"][b])
  expected = total / 3
  expected.backward()
  assert abs(float(loss) - expected.item()) < 1e-4 * max(1.0, expected.item())
  np.testing.assert_allclose(grads["embeddings"], prompt.grad.numpy(), atol=1e-5, rtol=1e-4)


def _intermediate_shapes(fn, *args) -> list[tuple[int, ...]]:
  jaxpr = jax.make_jaxpr(fn)(*args)
  shapes = []

  def visit(jaxpr):
    for eqn in jaxpr.eqns:
      shapes.extend(v.aval.shape for v in eqn.outvars if hasattr(v.aval, "shape"))
      for sub in jax.extend.core.jaxprs_in_params(eqn.params):
        visit(sub)

  visit(jaxpr.jaxpr)
  return shapes


def test_no_logits_over_every_position_and_the_whole_vocabulary_are_built(tmp_path):
  _, module, frozen = _load("bert", tmp_path)
  vocab, slots = module.config.vocab_size, PROMPT_LEN + LENGTH
  method, params = _prompt_method(module.config.hidden_size)
  words = LabelWords(np.array([[[7]], [[9]], [[13]]], np.int32), np.ones((3, 1, 1), bool))
  one = cloze.ClozeLabels(words, "max_first", 0)
  loss = lambda p, b, labels: cloze.loss_sum(p, frozen, b, jax.random.key(0), model=module, method=method, labels=labels)
  one_mask = _intermediate_shapes(functools.partial(loss, labels=one), params, _batch("bert", 1))
  assert not any(vocab in shape for shape in one_mask)  # one mask: only the label words' columns
  batch = _batch("bert", 3)
  batch.update(candidates=np.full((4, 2, 3), 7, np.int32), candidate_mask=np.ones((4, 2, 3), bool))
  several = _intermediate_shapes(functools.partial(loss, labels=cloze.ClozeLabels(None, "max_first", 0)), params, batch)
  assert (4, 3, vocab) in several and not any(len(s) >= 2 and s[-1] == vocab and slots in s for s in several)


@pytest.mark.parametrize("order", ["max_first", "ltr", "parallel"])
def test_batched_multi_mask_decoding_with_a_prompt_equals_one_example_at_a_time(order, tmp_path):
  _, module, frozen = _load("albert", tmp_path)
  batch = _batch("albert", num_masks=3, seed=1)
  candidates = np.array([[[7, 8, 9], [10, 0, 0]], [[11, 12, 0], [13, 14, 15]], [[17, 0, 0], [18, 19, 0]],
                         [[20, 0, 0], [21, 22, 0]]], np.int32)
  batch.update(candidates=candidates, candidate_mask=candidates > 0)
  method, params = _prompt_method(module.config.embedding_size)
  step = jax.jit(functools.partial(cloze.eval_step, model=module, method=method,
                                   labels=cloze.ClozeLabels(None, order, 0)))
  batched = np.asarray(step(params, frozen, batch, None, None)["class_logits"])
  for b in range(4):
    n = int(batch["input_mask"][b].sum())  # the example alone, unpadded
    alone = {k: v[b : b + 1] for k, v in batch.items()}
    alone.update({k: alone[k][:, :n] for k in ("inputs", "input_mask", "token_types")})
    np.testing.assert_allclose(batched[b], np.asarray(step(params, frozen, alone, None, None)["class_logits"])[0],
                               atol=1e-4, rtol=1e-5)
  assert np.all(np.isfinite(batched)) and len(np.unique(batched.round(3))) > 4


def test_verbalizer_loss_gradient_wrt_the_backbone_weights_matches_transformers(tmp_path):
  """What prompt-based fine-tuning differentiates (PET, LM-BFF): the loss w.r.t. the MLM's own weights."""
  hf, module, frozen = _load("bert", tmp_path)
  batch = _batch("bert", num_masks=1)
  words = LabelWords(np.array([[[7]], [[9]], [[13]]], np.int32), np.ones((3, 1, 1), bool))
  labels = cloze.ClozeLabels(words, "max_first", 0)

  def mean_loss(weights):
    total, count = cloze.loss_sum({}, weights, batch, jax.random.key(0), model=module, method=None, labels=labels)
    return total / count

  loss, grads = jax.jit(jax.value_and_grad(mean_loss))(frozen)
  ids = torch.tensor(batch["inputs"], dtype=torch.long)
  logits = hf(input_ids=ids, attention_mask=torch.tensor(batch["input_mask"], dtype=torch.long),
              token_type_ids=torch.tensor(batch["token_types"], dtype=torch.long)).logits
  at_mask = logits[torch.arange(4), torch.tensor(batch["mask_positions"][:, 0], dtype=torch.long)][:, [7, 9, 13]]
  keep = torch.tensor(batch["example_mask"])
  expected = torch.nn.functional.cross_entropy(at_mask[keep], torch.tensor(batch["label"], dtype=torch.long)[keep])
  expected.backward()
  assert abs(float(loss) - expected.item()) < 1e-5
  g = grads["params"]
  named = dict(hf.named_parameters())
  pairs = {  # ours (layout-converted) -> transformers' gradient
      "mlm_head/bias": (g["mlm_head"]["bias"], named["cls.predictions.bias"].grad),
      "embeddings/norm/scale": (g["embeddings"]["norm"]["scale"], named["bert.embeddings.LayerNorm.weight"].grad),
      "layer 1 intermediate kernel": (g["encoder"]["layers"]["mlp"]["wi"]["kernel"][1].T,
                                      named["bert.encoder.layer.1.intermediate.dense.weight"].grad),
      "word embeddings": (g["token_embedder"]["embedding"], named["bert.embeddings.word_embeddings.weight"].grad),
  }
  for name, (ours, theirs) in pairs.items():
    np.testing.assert_allclose(np.asarray(ours), theirs.numpy(), atol=2e-5, rtol=1e-4, err_msg=name)
    assert np.abs(theirs.numpy()).max() > 1e-5, name


def test_regression_kl_against_a_probability_target_matches_transformers(tmp_path):
  """LM-BFF's STS-B: the two poles' logits, KL to [1 - s, s] with s the scaled score — as probabilities
  (LM-BFF's code passes them as log-probabilities, LM-BFF#45)."""
  hf, module, frozen = _load("roberta", tmp_path)
  batch = _batch("roberta", num_masks=1)
  batch["score"] = np.array([0.0, 3.5, 5.0, np.nan], np.float32)  # bounds (0, 5); the last is padding
  words = LabelWords(np.array([[[7]], [[9]]], np.int32), np.ones((2, 1, 1), bool))
  labels = cloze.ClozeLabels(words, "max_first", 1, bounds=(0.0, 5.0))
  method, params = _prompt_method(module.config.hidden_size)
  loss, grads = _our_loss_and_grad(module, frozen, method, params, batch, labels)

  prompt = torch.tensor(np.asarray(params["embeddings"]), requires_grad=True)
  logp = torch.log_softmax(_torch_mask_logits(hf, prompt, batch)[:3, 0][:, [7, 9]], dim=-1)
  s = torch.tensor(batch["score"][:3] / 5.0)
  expected = torch.nn.functional.kl_div(logp, torch.stack([1 - s, s], dim=-1), reduction="sum") / 3
  expected.backward()
  assert abs(float(loss) - expected.item()) < 1e-5 and expected.item() > 0.01
  np.testing.assert_allclose(grads["embeddings"], prompt.grad.numpy(), atol=1e-5, rtol=1e-4)


def _pet_wsc_decode(hf, ids: np.ndarray, positions: list[int], order: str) -> list[int]:
  """PET's WscTaskHelper.eval_step on transformers' MLM, one unpadded example: the tokens it puts
  at `positions` (the mask block), in their order."""
  ids = torch.tensor(ids[None], dtype=torch.long)
  masked = list(positions)
  with torch.no_grad():
    while masked:
      probs = torch.softmax(hf(input_ids=ids).logits, dim=2)[0].numpy()
      if order == "parallel":
        for p in masked:
          ids[0, p] = int(probs[p].argmax())
        break
      chosen, best = None, -1.0
      for p in (masked[:1] if order == "ltr" else masked):
        if probs[p].max() > best:
          chosen, best = p, probs[p].max()
      ids[0, chosen] = int(probs[chosen].argmax())
      masked.remove(chosen)
  return [int(ids[0, p]) for p in positions]


@pytest.mark.parametrize("order", ["max_first", "ltr", "parallel"])
def test_generating_wscs_referent_batched_equals_pets_decoding_one_example_at_a_time(order, tmp_path):
  hf, module, frozen = _load("bert", tmp_path)
  batch = _batch("bert", num_masks=3, seed=2)
  batch["token_types"] = np.zeros_like(batch["token_types"])  # PET's eval passes input_ids alone
  batch["mask_positions"][2, 2] = -1  # an example whose block is two masks
  batch["inputs"][2, batch["mask_positions"][2, 1] + 1] = 9  # its third slot is a word, not a mask
  candidates = np.array([[[7, 8, 9]], [[11, 0, 0]], [[17, 18, 0]], [[20, 0, 0]]], np.int32)
  batch.update(candidates=candidates, candidate_mask=candidates > 0)
  step = jax.jit(functools.partial(cloze.eval_step, model=module, method=None,
                                   labels=cloze.ClozeLabels(None, order, 0, generate=True)))
  out = step({}, frozen, batch, None, None)
  generated = np.asarray(out["generated"])
  np.testing.assert_array_equal(np.asarray(out["referent"]), np.where(candidates[:, 0] > 0, candidates[:, 0], -1))
  for b in range(4):
    n = int(batch["input_mask"][b].sum())
    positions = [int(p) for p in batch["mask_positions"][b] if p >= 0]
    expected = _pet_wsc_decode(hf, batch["inputs"][b, :n], positions, order)
    assert list(generated[b, : len(positions)]) == expected, (b, order)
    assert (generated[b, len(positions):] == -1).all()


def test_wscs_generation_loss_is_the_mlm_cross_entropy_with_pad_targets(tmp_path):
  hf, module, frozen = _load("bert", tmp_path)
  batch = _batch("bert", num_masks=3, seed=3)
  candidates = np.array([[[7, 8, 0]], [[11, 12, 13]], [[17, 0, 0]], [[20, 0, 0]]], np.int32)
  batch.update(candidates=candidates, candidate_mask=candidates > 0, label=np.array([1, 1, 1, -1], np.int32))
  method, params = _prompt_method(module.config.hidden_size)
  loss, grads = _our_loss_and_grad(module, frozen, method, params, batch, cloze.ClozeLabels(None, "max_first", 0,
                                                                                          generate=True))
  prompt = torch.tensor(np.asarray(params["embeddings"]), requires_grad=True)
  logits = _torch_mask_logits(hf, prompt, batch)[:3]  # [3, K, V]: the fourth example is padding
  targets = torch.tensor(np.where(candidates[:3, 0] > 0, candidates[:3, 0], 0), dtype=torch.long)  # pad id 0
  expected = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
  expected.backward()
  assert abs(float(loss) - expected.item()) < 1e-5
  np.testing.assert_allclose(grads["embeddings"], prompt.grad.numpy(), atol=1e-5, rtol=1e-4)
