"""Reference encoders for the ALBERT tests: transformers' PyTorch ALBERT with random weights and odd
shapes, saved as HF checkpoints."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import torch
import transformers

VOCAB = 97
EMBED = 24  # E != H, and neither a power of two: a mixed-up axis cannot go unnoticed
HIDDEN = 40
HEADS = 5
INTERMEDIATE = 52
MAX_POSITIONS = 64


@dataclasses.dataclass(frozen=True)
class Variant:
  name: str
  model_class: type
  num_layers: int = 3
  num_hidden_groups: int = 1
  inner_group_num: int = 1
  hidden_act: str = "gelu_new"  # HF ALBERT's default, the tanh GELU
  vocab_size: int = VOCAB
  num_heads: int = HEADS


# Every ALBERT release: one shared layer applied at every depth.
SHARED_MLM = Variant("shared-mlm", transformers.AlbertForMaskedLM)
# 3 layers over 2 groups (HF's float rule: groups 0, 0, 1), two distinct layers inside each group.
GROUPED = Variant("grouped", transformers.AlbertModel, num_hidden_groups=2, inner_group_num=2, hidden_act="gelu")
# Pooler, MLM head and SOP head; vocabulary and heads divisible by the sharding tests' mesh axes.
PRETRAINING = Variant("pretraining", transformers.AlbertForPreTraining, vocab_size=96, num_heads=4)


def make_hf(variant: Variant, seed: int = 0):
  """A small random transformers model of the variant, in eval mode, every param away from its init."""
  config = transformers.AlbertConfig(
      vocab_size=variant.vocab_size,
      embedding_size=EMBED,
      hidden_size=HIDDEN,
      num_hidden_layers=variant.num_layers,
      num_hidden_groups=variant.num_hidden_groups,
      inner_group_num=variant.inner_group_num,
      num_attention_heads=variant.num_heads,
      intermediate_size=INTERMEDIATE,
      max_position_embeddings=MAX_POSITIONS,
      type_vocab_size=2,
      hidden_act=variant.hidden_act,
      hidden_dropout_prob=0.0,
      attention_probs_dropout_prob=0.0,
      pad_token_id=0,
  )
  torch.manual_seed(seed)
  model = variant.model_class(config).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      # Biases start at 0 and norms at 1: a bias or norm param that is never applied would hide.
      if name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name:
        p.add_(0.2 * torch.randn_like(p))
      elif "embeddings" in name:  # std 1, not 0.02: positions and types matter, MLM logits (tied) of order 1
        p.mul_(50.0)
      else:  # std 0.1: attention far from uniform, so masks and prefixes change the states
        p.mul_(5.0)
  return model


def save_hf(model, directory: Path, **kwargs) -> Path:
  model.save_pretrained(directory, **kwargs)
  return directory


def padded_batch(rng: np.random.Generator, lengths: list[int], max_len: int, vocab: int = VOCAB):
  """Right-padded random ids (first token 2, a [CLS]-like start), their mask and two segments."""
  ids = rng.integers(3, vocab, (len(lengths), max_len))
  ids[:, 0] = 2
  mask = np.arange(max_len)[None, :] < np.asarray(lengths)[:, None]
  types = ((np.arange(max_len)[None] >= np.asarray(lengths)[:, None] // 2) & mask).astype(np.int32)
  return np.where(mask, ids, 0).astype(np.int32), mask, types


def left_padded(lengths: list[int], *arrays: np.ndarray) -> list[np.ndarray]:
  """The right-padded rows rolled so that their padding comes first."""
  max_len = arrays[0].shape[1]
  return [np.stack([np.roll(row, max_len - n) for row, n in zip(a, lengths)]) for a in arrays]


def hf_outputs(model, ids=None, mask=None, types=None, inputs_embeds=None):
  """(logits, None) of an AlbertForMaskedLM, or (last hidden state, pooled) of an AlbertModel."""
  kwargs = dict(attention_mask=torch.tensor(mask, dtype=torch.long),
                token_type_ids=torch.tensor(types, dtype=torch.long))
  if inputs_embeds is None:
    kwargs["input_ids"] = torch.tensor(ids, dtype=torch.long)
  else:
    kwargs["inputs_embeds"] = inputs_embeds
  out = model(**kwargs)
  if hasattr(out, "logits"):
    return out.logits, None
  return out.last_hidden_state, out.pooler_output


def hf_with_prefixes(model, ids, mask, types, keys_AxBxPxHxK, values_AxBxPxHxK, prefix_mask_BxP):
  """An AlbertModel whose attention call number a (in Hugging Face's own order of applications)
  prepends keys/values a: HF's ALBERT takes no past_key_values, so an attention function does it."""
  calls = itertools.count()
  key_bias = lambda m: torch.where(torch.tensor(m, dtype=torch.bool), 0.0, -1e10)[:, None, None, :]
  bias_Bx1x1xS = key_bias(np.concatenate([prefix_mask_BxP, mask], axis=1))

  def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    a = next(calls)  # [B, heads, S, K] below
    key = torch.cat([torch.from_numpy(keys_AxBxPxHxK[a]).transpose(1, 2), key], dim=2)
    value = torch.cat([torch.from_numpy(values_AxBxPxHxK[a]).transpose(1, 2), value], dim=2)
    weights = torch.softmax(query @ key.transpose(2, 3) * scaling + bias_Bx1x1xS, dim=-1)
    return (weights @ value).transpose(1, 2).contiguous(), weights

  transformers.AttentionInterface.register("albert_prefix_reference", attention)
  transformers.AttentionMaskInterface.register("albert_prefix_reference", lambda *args, **kwargs: None)
  model.set_attn_implementation("albert_prefix_reference")
  try:
    with torch.no_grad():
      hidden, pooled = hf_outputs(model, ids, mask, types)
  finally:
    model.set_attn_implementation("eager")
  assert next(calls) == keys_AxBxPxHxK.shape[0], "every prefix was used exactly once"
  return hidden.numpy(), pooled.numpy()
