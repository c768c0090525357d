"""How a backbone family turns an example's texts into token ids.

T5 (text-to-text): inputs and targets each end with EOS; a too-long input loses its end (EOS kept).
Decoder-only (the answer continues the input): inputs may start with BOS; a class label is its
label words alone (what rank classification scores, e.g. " positive"); a generated target ends with
EOS so the model learns to stop; a too-long input loses its start, since the template's question
(e.g. "Sentiment (positive or negative):") sits at its end; inputs are left-padded so every
example's answer starts at the same column.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from jaxprompt.weights.hf_tokenizer import HFTokenizer
from jaxprompt.weights.tokenizer import SentencePieceTokenizer

Encode = Callable[[str], list[int]]


@dataclasses.dataclass(frozen=True)
class TextCodec:
  """Text -> ids for inputs, class labels and generated targets, and how to cut and pad them."""

  encode_input: Encode
  encode_label: Encode
  encode_target: Encode
  encode_words: Encode  # plain text, no special tokens (e.g. a label's words for prompt init)
  eos_id: int | None
  pad_id: int
  keep_input_end: bool  # truncation keeps the end of the input (decoder) or its start (T5)
  pad_inputs_left: bool

  def truncate_input(self, ids: list[int], max_len: int) -> tuple[list[int], bool]:
    """The input cut to `max_len` tokens, and whether it was cut."""
    if len(ids) <= max_len:
      return ids, False
    if self.keep_input_end:
      return ids[len(ids) - max_len :], True
    return _cut_keeping_eos(ids, max_len, self.eos_id), True

  def truncate_target(self, ids: list[int], max_len: int) -> tuple[list[int], bool]:
    if len(ids) <= max_len:
      return ids, False
    return _cut_keeping_eos(ids, max_len, self.eos_id), True


def _cut_keeping_eos(ids: list[int], max_len: int, eos_id: int | None) -> list[int]:
  if eos_id is not None and ids[-1] == eos_id:
    return ids[: max_len - 1] + [eos_id]
  return ids[:max_len]


def t5_codec(tokenizer: SentencePieceTokenizer) -> TextCodec:
  encode = lambda text: tokenizer.encode(text, add_eos=True)
  words = lambda text: tokenizer.encode(text, add_eos=False)
  return TextCodec(encode, encode, encode, words, tokenizer.eos_id, tokenizer.pad_id, keep_input_end=False,
                   pad_inputs_left=False)


def decoder_codec(tokenizer: HFTokenizer, add_bos: bool) -> TextCodec:
  eos = tokenizer.eos_id
  bos = [tokenizer.bos_id] if add_bos and tokenizer.bos_id is not None else []
  pad = tokenizer.pad_id if tokenizer.pad_id is not None else (eos if eos is not None else 0)
  return TextCodec(
      encode_input=lambda text: bos + tokenizer.encode(text),
      encode_label=tokenizer.encode,
      encode_target=lambda text: tokenizer.encode(text) + ([eos] if eos is not None else []),
      encode_words=tokenizer.encode,
      eos_id=eos,
      pad_id=pad,
      keep_input_end=True,
      pad_inputs_left=True,
  )
