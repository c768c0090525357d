"""Reference encoders for the tests: transformers' PyTorch BERT / RoBERTa with random weights, saved as HF checkpoints."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
import transformers

VOCAB = 128
HIDDEN = 32


@dataclasses.dataclass(frozen=True)
class Variant:
  name: str
  model_class: type
  config_class: type
  pad: int  # BERT pads with 0; RoBERTa with 1 (its positions start at pad + 1)
  type_vocab_size: int


BERT = Variant("bert", transformers.BertModel, transformers.BertConfig, 0, 2)
BERT_MLM = Variant("bert-mlm", transformers.BertForMaskedLM, transformers.BertConfig, 0, 2)
ROBERTA = Variant("roberta", transformers.RobertaModel, transformers.RobertaConfig, 1, 1)
ROBERTA_MLM = Variant("roberta-mlm", transformers.RobertaForMaskedLM, transformers.RobertaConfig, 1, 1)


def make_hf(variant: Variant, seed: int = 0, num_layers: int = 2):
  """A small random transformers model of the variant, in eval mode, every param away from its init."""
  config = variant.config_class(
      vocab_size=VOCAB,
      hidden_size=HIDDEN,
      num_hidden_layers=num_layers,
      num_attention_heads=4,
      intermediate_size=64,
      max_position_embeddings=64,
      type_vocab_size=variant.type_vocab_size,
      pad_token_id=variant.pad,
      hidden_act="gelu",
      layer_norm_eps=1e-12,
      hidden_dropout_prob=0.0,
      attention_probs_dropout_prob=0.0,
  )
  torch.manual_seed(seed)
  model = variant.model_class(config).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      # Biases start at 0 and norms at 1: a bias or norm param that is never applied would hide.
      if name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name:
        p.add_(0.2 * torch.randn_like(p))
      if name.endswith("word_embeddings.weight"):  # std 1, not 0.02: MLM logits (tied) of order 1
        p.mul_(50.0)
  return model


def save_hf(model, directory: Path, **kwargs) -> Path:
  model.save_pretrained(directory, **kwargs)
  return directory


def padded_batch(rng: np.random.Generator, lengths: list[int], max_len: int, pad: int, low: int = 3):
  """Right-padded random ids (first token 0 or 2, a [CLS]-like start) and their mask."""
  ids = rng.integers(low, VOCAB, (len(lengths), max_len))
  ids[:, 0] = 2 if pad == 0 else 0
  mask = np.arange(max_len)[None, :] < np.asarray(lengths)[:, None]
  return np.where(mask, ids, pad).astype(np.int32), mask


def hf_outputs(model, ids, mask, token_type_ids=None):
  """(last hidden state, pooled or None) of a *Model, or (logits, None) of a *ForMaskedLM."""
  kwargs = dict(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask, dtype=torch.long))
  if token_type_ids is not None:
    kwargs["token_type_ids"] = torch.tensor(token_type_ids, dtype=torch.long)
  with torch.no_grad():
    out = model(**kwargs)
  if hasattr(out, "logits"):
    return out.logits.numpy(), None
  pooled = None if out.pooler_output is None else out.pooler_output.numpy()
  return out.last_hidden_state.numpy(), pooled
