"""Reference Llama models for the tests: transformers' PyTorch LlamaForCausalLM with random weights."""

from __future__ import annotations

import numpy as np
import torch
import transformers

VOCAB = 256


def make_hf_llama(tied: bool = False, rope_scaling: dict | None = None, seed: int = 0):
  """A small random LlamaForCausalLM with grouped-query attention, in eval mode."""
  config = transformers.LlamaConfig(
      vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
      num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=tied,
      rope_scaling=rope_scaling, max_position_embeddings=64, initializer_range=0.2,
      bos_token_id=1, eos_token_id=2, pad_token_id=0,
  )
  torch.manual_seed(seed)
  model = transformers.LlamaForCausalLM(config).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "norm" in name:  # default ones would hide a norm scale that is never applied
        p.add_(0.2 * torch.randn_like(p))
  return model


def left_padded(rng: np.random.Generator, lengths: list[int], max_len: int):
  """Left-padded random ids (as batched decoding pads) and their mask."""
  mask = np.arange(max_len)[None, :] >= (max_len - np.asarray(lengths))[:, None]
  return np.where(mask, rng.integers(3, VOCAB, (len(lengths), max_len)), 0).astype(np.int32), mask


def positions(mask: np.ndarray) -> np.ndarray:
  """The position of every slot counted over real tokens only (what generate uses)."""
  return np.maximum(np.cumsum(mask, axis=1) - 1, 0)


def hf_logits(model, ids, mask, position_ids=None) -> np.ndarray:
  with torch.no_grad():
    return model(
        input_ids=torch.tensor(ids, dtype=torch.long),
        attention_mask=torch.tensor(mask, dtype=torch.long),
        position_ids=None if position_ids is None else torch.tensor(position_ids, dtype=torch.long),
    ).logits.numpy()
