"""Hugging Face `tokenizers` tokenizers (BPE, byte-level BPE, WordPiece) behind one small interface.

Decoder and encoder backbones use these; T5 keeps its SentencePiece vocabulary (tokenizer.py).
Special-token ids are None when the vocabulary has no such token.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence

import tokenizers


@dataclasses.dataclass(frozen=True)
class SpecialTokens:
  """The strings of the special tokens a model uses (None: the model has none)."""

  bos: str | None = None
  eos: str | None = None
  pad: str | None = None
  unk: str | None = None
  cls: str | None = None
  sep: str | None = None
  mask: str | None = None


class HFTokenizer:
  """A `tokenizers.Tokenizer` with the model's special tokens."""

  def __init__(self, tokenizer: tokenizers.Tokenizer, special: SpecialTokens, source: str):
    self.tokenizer = tokenizer
    self.special = special
    self.source = source

  def __repr__(self) -> str:
    return f"HFTokenizer({self.source!r}, vocab_size={self.vocab_size})"

  @property
  def vocab_size(self) -> int:
    return self.tokenizer.get_vocab_size(with_added_tokens=True)

  def token_to_id(self, token: str | None) -> int | None:
    return None if token is None else self.tokenizer.token_to_id(token)

  @property
  def bos_id(self) -> int | None:
    return self.token_to_id(self.special.bos)

  @property
  def eos_id(self) -> int | None:
    return self.token_to_id(self.special.eos)

  @property
  def pad_id(self) -> int | None:
    return self.token_to_id(self.special.pad)

  @property
  def cls_id(self) -> int | None:
    return self.token_to_id(self.special.cls)

  @property
  def sep_id(self) -> int | None:
    return self.token_to_id(self.special.sep)

  @property
  def mask_id(self) -> int | None:
    return self.token_to_id(self.special.mask)

  def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
    """Token ids of `text`; with add_special_tokens, the tokenizer's template (e.g. [CLS] ... [SEP])."""
    return self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

  def encode_batch(self, texts: Sequence[str], add_special_tokens: bool = False) -> list[list[int]]:
    return [e.ids for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=add_special_tokens)]

  def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
    return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)


def load_tokenizer_json(path: str | os.PathLike, special: SpecialTokens) -> HFTokenizer:
  """A tokenizer.json file."""
  return HFTokenizer(tokenizers.Tokenizer.from_file(str(path)), special, str(path))

