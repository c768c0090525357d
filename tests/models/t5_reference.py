"""Reference T5 models for the tests: transformers' PyTorch T5 with random weights, saved as HF checkpoints."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
import transformers

VOCAB = 256


@dataclasses.dataclass(frozen=True)
class Variant:
  name: str
  feed_forward_proj: str
  tied: bool  # v1.0 ties the output projection to the embedding and scales decoder outputs
  num_decoder_layers: int


V1_0 = Variant("v1.0", "relu", True, 3)
V1_1 = Variant("v1.1", "gated-gelu", False, 2)


def make_hf_t5(variant: Variant, seed: int = 0, num_decoder_layers: int | None = None):
  """A small random transformers T5ForConditionalGeneration of the variant, in eval mode."""
  config = transformers.T5Config(
      vocab_size=VOCAB,
      d_model=32,
      d_kv=8,
      d_ff=64,
      num_heads=4,
      num_layers=2,
      num_decoder_layers=num_decoder_layers or variant.num_decoder_layers,
      relative_attention_num_buckets=32,
      relative_attention_max_distance=32,  # short, so test lengths reach the saturated buckets
      feed_forward_proj=variant.feed_forward_proj,
      tie_word_embeddings=variant.tied,
      dropout_rate=0.0,
      decoder_start_token_id=0,
      pad_token_id=0,
      eos_token_id=1,
  )
  torch.manual_seed(seed)
  model = transformers.T5ForConditionalGeneration(config).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "layer_norm" in name:  # default ones would hide a norm scale that is never applied
        p.add_(0.2 * torch.randn_like(p))
    if not variant.tied:  # transformers 5 ties lm_head even for v1.1 configs; give it its own
      model.lm_head.weight = torch.nn.Parameter(torch.randn(VOCAB, 32) * 32**-0.5)
  return model


def save_hf(model, directory: Path, **kwargs) -> Path:
  model.save_pretrained(directory, **kwargs)
  return directory


def padded_batch(rng: np.random.Generator, lengths: list[int], max_len: int, low: int = 2):
  """Right-padded random ids and their mask."""
  ids = rng.integers(low, VOCAB, (len(lengths), max_len))
  mask = np.arange(max_len)[None, :] < np.asarray(lengths)[:, None]
  return np.where(mask, ids, 0).astype(np.int32), mask


def hf_logits(model, ids, mask, dec, dec_mask) -> np.ndarray:
  with torch.no_grad():
    out = model(
        input_ids=torch.tensor(ids, dtype=torch.long),
        attention_mask=torch.tensor(mask, dtype=torch.long),
        decoder_input_ids=torch.tensor(dec, dtype=torch.long),
        decoder_attention_mask=torch.tensor(dec_mask, dtype=torch.long),
    )
  return out.logits.numpy()


def hf_encoder_states(model, ids, mask) -> np.ndarray:
  with torch.no_grad():
    out = model.encoder(
        input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask, dtype=torch.long)
    )
  return out.last_hidden_state.numpy()
