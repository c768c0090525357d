"""How a backbone family turns an example's texts into token ids.

T5 (text-to-text): inputs and targets each end with EOS; a too-long input loses its end (EOS kept).
Decoder-only (the answer continues the input): inputs may start with BOS; a class label is its
label words alone (what rank classification scores, e.g. " positive"); a generated target ends with
EOS so the model learns to stop; a too-long input loses its start, since the template's question
(e.g. "Sentiment (positive or negative):") sits at its end; inputs are left-padded so every
example's answer starts at the same column.
BERT (encoder with a classification or tagging head): inputs are [CLS] text [SEP]; a too-long
input loses its end, [SEP] kept; there are no text targets.

A cloze pattern (tasks/cloze.py) is read as text on T5 (its sentinel at the mask) and on decoders
(the text up to the mask, the label word continuing it).

Besides whole texts, an input can be encoded from pieces (P-tuning: text and pseudo tokens, each
pseudo token one position holding `pad_id`) or word by word (token labelling: which position is
each word's first sub-token).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from jaxprompt.weights.hf_tokenizer import HFTokenizer
from jaxprompt.weights.tokenizer import SentencePieceTokenizer

Encode = Callable[[str], list[int]]


@dataclasses.dataclass(frozen=True)
class TextCodec:
  """Text -> ids for inputs, class labels and generated targets, and how to cut and pad them.

  `encode_input(text)` is `input_start_ids + encode_words(text) + input_end_ids`.
  """

  encode_input: Encode
  encode_label: Encode
  encode_target: Encode
  encode_words: Encode  # plain text, no special tokens (e.g. a label's words for prompt init)
  eos_id: int | None
  pad_id: int
  keep_input_end: bool  # truncation keeps the end of the input (decoder) or its start (T5)
  pad_inputs_left: bool
  input_start_ids: tuple[int, ...] = ()  # special tokens before an input's words (BOS, [CLS])
  input_end_ids: tuple[int, ...] = ()  # special tokens after them (T5's EOS, BERT's [SEP])
  # Put before every word but the first when words are encoded one by one: byte-level BPE spells a
  # word's leading space into its first token ("Ġworld"), other vocabularies mark word starts themselves.
  word_prefix: str = ""
  # A masked LM's cloze layout (tasks/patterns.ClozeTokens: mask id, [CLS] A [SEP] B [SEP] ...);
  # None for families that fill no [MASK].
  cloze: Any = None
  # T5's span-corruption sentinels (<extra_id_0>, <extra_id_1>): a cloze pattern's mask becomes the
  # first in the input, a label word's target is "first word second". Empty where a cloze pattern's
  # answer continues its text instead (decoders) or is filled at a [MASK] (`cloze`).
  cloze_sentinels: tuple[str, ...] = ()

  def truncate_input(self, ids: list[int], max_len: int) -> tuple[list[int], bool]:
    """The input cut to `max_len` tokens, and whether it was cut."""
    kept = self.kept_input_positions(ids, max_len)
    return ([ids[i] for i in kept], True) if len(kept) < len(ids) else (ids, False)

  def kept_input_positions(self, ids: Sequence[int], max_len: int) -> list[int]:
    """The positions of `ids` that truncation to `max_len` keeps, in order (all of them if it fits)."""
    n = len(ids)
    if n <= max_len:
      return list(range(n))
    if self.keep_input_end:
      return list(range(n - max_len, n))
    end = self.input_end_ids or ((self.eos_id,) if self.eos_id is not None else ())
    kept_end = len(end) if end and tuple(ids[n - len(end) :]) == end and len(end) <= max_len else 0
    return list(range(max_len - kept_end)) + list(range(n - kept_end, n))

  def truncate_target(self, ids: list[int], max_len: int) -> tuple[list[int], bool]:
    if len(ids) <= max_len:
      return ids, False
    return _cut_keeping_eos(ids, max_len, self.eos_id), True

  def encode_input_pieces(self, pieces: Sequence[str | int]) -> tuple[list[int], list[int]]:
    """(ids, soft_positions) of an input of text pieces and pseudo tokens (ints).

    Each text piece is encoded on its own; pseudo token i takes one position, holding `pad_id`, where
    soft_positions is i (-1 everywhere else). The input's special tokens go around the whole.
    """
    ids, soft = list(self.input_start_ids), [-1] * len(self.input_start_ids)
    for piece in pieces:
      if isinstance(piece, str):
        words = self.encode_words(piece) if piece else []
        ids += words
        soft += [-1] * len(words)
      else:
        ids.append(self.pad_id)
        soft.append(int(piece))
    ids += self.input_end_ids
    soft += [-1] * len(self.input_end_ids)
    return ids, soft

  def encode_input_words(self, words: Sequence[str]) -> tuple[list[int], list[int]]:
    """(ids, word_starts) of an input given as words, each encoded on its own.

    word_starts[j] is w where position j holds the first sub-token of word w, else -1 (later
    sub-tokens and special tokens). A word that encodes to no tokens has no start.
    """
    ids, starts = list(self.input_start_ids), [-1] * len(self.input_start_ids)
    for w, word in enumerate(words):
      pieces = self.encode_words(self.word_prefix + word if w else word)
      starts += ([w] + [-1] * (len(pieces) - 1)) if pieces else []
      ids += pieces
    ids += self.input_end_ids
    starts += [-1] * len(self.input_end_ids)
    return ids, starts


def _cut_keeping_eos(ids: list[int], max_len: int, eos_id: int | None) -> list[int]:
  if eos_id is not None and ids[-1] == eos_id:
    return ids[: max_len - 1] + [eos_id]
  return ids[:max_len]


def t5_codec(tokenizer: SentencePieceTokenizer) -> TextCodec:
  encode = lambda text: tokenizer.encode(text, add_eos=True)
  words = lambda text: tokenizer.encode(text, add_eos=False)
  return TextCodec(encode, encode, encode, words, tokenizer.eos_id, tokenizer.pad_id, keep_input_end=False,
                   pad_inputs_left=False, input_end_ids=(tokenizer.eos_id,))


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
      input_start_ids=tuple(bos),
      word_prefix=word_prefix(tokenizer),
  )


def bert_codec(tokenizer: HFTokenizer) -> TextCodec:
  """BERT's conventions: [CLS] text [SEP], right padding, cuts keep the start and [SEP]; no text targets.

  Also RoBERTa-style encoders, whose <s> and </s> are their cls and sep tokens.
  """
  cls, sep = tokenizer.cls_id, tokenizer.sep_id
  if cls is None or sep is None:
    raise ValueError(f"{tokenizer} has no [CLS] / [SEP] tokens (special tokens {tokenizer.special})")
  return TextCodec(
      encode_input=lambda text: [cls] + tokenizer.encode(text) + [sep],
      encode_label=tokenizer.encode,
      encode_target=tokenizer.encode,
      encode_words=tokenizer.encode,
      eos_id=None,  # BERT generates no text
      pad_id=tokenizer.pad_id if tokenizer.pad_id is not None else 0,
      keep_input_end=False,
      pad_inputs_left=False,
      input_start_ids=(cls,),
      input_end_ids=(sep,),
      word_prefix=word_prefix(tokenizer),  # RoBERTa-style encoders use byte-level BPE
  )


def word_prefix(tokenizer: HFTokenizer) -> str:
  """" " if encoding words one by one needs their separating space (byte-level BPE), else ""."""
  # Probed rather than read from the tokenizer's type: WordPiece and SentencePiece-style (Metaspace)
  # vocabularies mark word starts themselves and would encode a written space as an extra token.
  joined = tokenizer.encode("hello world")
  if joined == tokenizer.encode("hello") + tokenizer.encode("world"):
    return ""
  if joined == tokenizer.encode("hello") + tokenizer.encode(" world"):
    return " "
  raise ValueError(f"{tokenizer}: cannot tell how to encode words one by one: 'hello world' is {joined}")
