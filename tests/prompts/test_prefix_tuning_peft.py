"""Prefix tuning equals Hugging Face PEFT's `PrefixTuning` where their semantics are the same:
decoder-only models, and T5's decoder-side prefixes."""

from __future__ import annotations

import jax
import numpy as np
import peft
import pytest
import torch
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from jaxprompt.models.llama import Llama
from jaxprompt.models.t5 import T5
from jaxprompt.objectives import causal_lm, seq2seq
from jaxprompt.prompts.prefix_tuning import AttentionShape, PrefixTuning
from jaxprompt.weights.llama_loader import load_llama
from jaxprompt.weights.t5_loader import load_t5
from tests.models import llama_reference, t5_reference

P, HIDDEN = 5, 24


def _from_peft(encoder, reparam: bool, layers: int, heads: int, head_dim: int) -> dict:
  """PEFT PrefixEncoder weights in our PrefixBank layout (both lay out (layer, key|value, head, dim))."""
  w = lambda t: t.detach().numpy().astype(np.float32)
  if not reparam:
    table = w(encoder.embedding.weight).reshape(P, layers, 2, heads, head_dim)
    return {"keys": table[:, :, 0].transpose(1, 0, 2, 3), "values": table[:, :, 1].transpose(1, 0, 2, 3)}
  return {
      "embedding": w(encoder.embedding.weight),
      "mlp_in": {"kernel": w(encoder.transform[0].weight).T, "bias": w(encoder.transform[0].bias)},
      "mlp_out": {"kernel": w(encoder.transform[2].weight).T, "bias": w(encoder.transform[2].bias)},
  }


def _to_peft_layout(grads: dict, reparam: bool, layers: int, heads: int, head_dim: int) -> list[np.ndarray]:
  if not reparam:
    table = np.stack([grads["keys"].transpose(1, 0, 2, 3), grads["values"].transpose(1, 0, 2, 3)], axis=2)
    return [table.reshape(P, -1)]
  return [grads["embedding"], grads["mlp_in"]["kernel"].T, grads["mlp_in"]["bias"],
          grads["mlp_out"]["kernel"].T, grads["mlp_out"]["bias"]]


def _peft_grads(encoder, reparam: bool) -> list[np.ndarray]:
  if not reparam:
    return [encoder.embedding.weight.grad.numpy()]
  t = encoder.transform
  return [encoder.embedding.weight.grad.numpy(), t[0].weight.grad.numpy(), t[0].bias.grad.numpy(),
          t[2].weight.grad.numpy(), t[2].bias.grad.numpy()]


def _check(loss, grads, peft_loss, encoder, reparam, layers, heads, head_dim):
  np.testing.assert_allclose(loss, peft_loss.item(), atol=1e-4, rtol=0)
  ours = _to_peft_layout(jax.tree.map(np.asarray, grads), reparam, layers, heads, head_dim)
  for a, b in zip(ours, _peft_grads(encoder, reparam)):
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=0)
  assert max(np.abs(g).max() for g in ours) > 1e-3  # real gradients, not zeros


@pytest.mark.parametrize("reparam", [False, True], ids=["direct", "mlp"])
def test_decoder_only_prefix_tuning_matches_peft(tmp_path, reparam):
  hf_model = llama_reference.make_hf_llama()
  hf_model.save_pretrained(tmp_path)
  config, frozen = load_llama(str(tmp_path), param_dtype="float32", dtype="float32")
  kv_heads, head_dim, layers = config.num_kv_heads, config.head_dim, config.num_layers
  peft_config = peft.PrefixTuningConfig(task_type=peft.TaskType.CAUSAL_LM, num_virtual_tokens=P,
                                        prefix_projection=reparam, encoder_hidden_size=HIDDEN)
  peft_model = peft.get_peft_model(hf_model, peft_config)
  encoder = peft_model.prompt_encoder["default"]

  rng = np.random.default_rng(0)
  inputs = rng.integers(3, llama_reference.VOCAB, (3, 10)).astype(np.int32)
  targets = rng.integers(3, llama_reference.VOCAB, (3, 2)).astype(np.int32)
  ids = torch.tensor(np.concatenate([inputs, targets], 1), dtype=torch.long)
  labels = ids.clone()
  labels[:, :10] = -100  # the loss on the answer tokens only, as ours
  out = peft_model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels)
  out.loss.backward()

  method = PrefixTuning(P, (AttentionShape("encoder_self", layers, kv_heads, head_dim),), kv_heads * head_dim,
                        HIDDEN if reparam else 0)
  params = {"encoder_self": _from_peft(encoder, reparam, layers, kv_heads, head_dim)}
  batch = {"inputs": inputs, "input_mask": np.ones_like(inputs, bool), "targets": targets,
           "target_mask": np.ones_like(targets, bool), "example_mask": np.ones(3, bool), "label": np.zeros(3, np.int32)}

  def mean_loss(p):
    total, count = causal_lm.loss_sum(p, frozen, batch, jax.random.key(0), model=Llama(config), method=method)
    return total / count

  loss, grads = jax.value_and_grad(mean_loss)(params)
  _check(loss, grads["encoder_self"], out.loss, encoder, reparam, layers, kv_heads, head_dim)


@pytest.mark.parametrize("reparam", [False, True], ids=["direct", "mlp"])
def test_t5_decoder_prefix_tuning_matches_peft(tmp_path, reparam):
  """Prefixes in T5's decoder self-attention, made by PEFT's PrefixTuning (the prefix encoder and,
  with `mlp`, its reparameterisation) and run by transformers' T5 as its decoder self-attention
  cache.

  PEFT's own seq2seq forward cannot be the reference here: with num_transformer_submodules=1 it
  passes a plain DynamicCache, which T5 uses for self- and cross-attention alike (the encoder's keys
  are appended into the self-attention cache and the forward fails); with 2 it also fills the
  cross-attention cache, whose keys transformers' T5 then uses in place of the encoder's, with an
  encoder mask sized for the encoder alone. We wrap PEFT's prefixes in an EncoderDecoderCache with
  an empty cross-attention cache: decoder self-attention prefixes, the semantics ours has.
  """
  hf_model = t5_reference.make_hf_t5(t5_reference.V1_1, num_decoder_layers=2)
  config, frozen = load_t5(str(t5_reference.save_hf(hf_model, tmp_path)), param_dtype="float32", dtype="float32")
  heads, head_dim, layers = config.num_heads, config.d_kv, config.num_decoder_layers
  assert heads * head_dim == config.d_model  # PEFT assumes token_dim = d_model = heads x head_dim
  peft_config = peft.PrefixTuningConfig(task_type=peft.TaskType.SEQ_2_SEQ_LM, num_virtual_tokens=P,
                                        prefix_projection=reparam, encoder_hidden_size=HIDDEN,
                                        num_transformer_submodules=1)
  peft_model = peft.get_peft_model(hf_model, peft_config)
  encoder = peft_model.prompt_encoder["default"]

  rng = np.random.default_rng(0)
  inputs, input_mask = t5_reference.padded_batch(rng, [12, 7, 4], 12)
  targets, target_mask = t5_reference.padded_batch(rng, [3, 2, 3], 3)
  cache = EncoderDecoderCache(peft_model.get_prompt(3), DynamicCache())
  out = hf_model(input_ids=torch.tensor(inputs, dtype=torch.long), attention_mask=torch.tensor(input_mask, dtype=torch.long),
                 labels=torch.tensor(np.where(target_mask, targets, -100), dtype=torch.long), past_key_values=cache)
  out.loss.backward()

  method = PrefixTuning(P, (AttentionShape("decoder_self", layers, heads, head_dim),), heads * head_dim,
                        HIDDEN if reparam else 0)
  params = {"decoder_self": _from_peft(encoder, reparam, layers, heads, head_dim)}
  batch = {"inputs": inputs, "input_mask": input_mask, "targets": targets, "target_mask": target_mask,
           "example_mask": np.ones(3, bool)}

  def mean_loss(p):
    total, count = seq2seq.loss_sum(p, frozen, batch, jax.random.key(0), model=T5(config), method=method)
    return total / count

  loss, grads = jax.value_and_grad(mean_loss)(params)
  _check(loss, grads["decoder_self"], out.loss, encoder, reparam, layers, heads, head_dim)
