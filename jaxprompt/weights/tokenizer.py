"""T5's SentencePiece vocabulary: 32,000 pieces plus 100 sentinels, and where to load it from.

The T5 vocabulary (v1.0, v1.1, LM-adapted, Flan-T5) is one `spiece.model` (pad=0, eos=1, unk=2)
followed by 100 "extra ids": `<extra_id_N>` has id 32099 - N, as in seqio's SentencePieceVocabulary.
Text is encoded by SentencePiece itself, the tokenizer T5 was trained with. Like Hugging Face's T5
tokenizer (and unlike seqio), a sentinel written in the text, e.g. "<extra_id_0>", encodes to its id.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

import huggingface_hub
import sentencepiece as spm
from huggingface_hub import constants as hub_constants
from huggingface_hub.errors import EntryNotFoundError

SPIECE_FILENAME = "spiece.model"
NUM_EXTRA_IDS = 100
# A Hub model id: "name" or "org/name". Anything else that does not exist locally is a missing path.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def extra_id_token(n: int) -> str:
  """The text form of sentinel n: "<extra_id_{n}>"."""
  return f"<extra_id_{n}>"


class SentencePieceTokenizer:
  """A SentencePiece model with `num_extra_ids` sentinels appended after its pieces, last one first."""

  def __init__(self, model_file: str | os.PathLike, num_extra_ids: int = NUM_EXTRA_IDS):
    self.model_file = str(model_file)
    self.num_extra_ids = num_extra_ids
    self._sp = spm.SentencePieceProcessor(model_file=self.model_file)
    self._num_pieces = self._sp.get_piece_size()
    self._extra_to_id = {extra_id_token(n): self.extra_id(n) for n in range(num_extra_ids)}
    self._id_to_extra = {i: token for token, i in self._extra_to_id.items()}
    # Exact alternation rather than <extra_id_\d+>: "<extra_id_100>" or "<extra_id_07>" is plain
    # text to Hugging Face, and must not split the text around it either.
    alternation = "|".join(re.escape(token) for token in self._extra_to_id)
    self._sentinel_re = re.compile(f"({alternation})") if num_extra_ids else None

  def __getstate__(self) -> dict[str, object]:
    # Rebuilt from the file in __setstate__, so that data-loader workers can receive a tokenizer.
    return {"model_file": self.model_file, "num_extra_ids": self.num_extra_ids}

  def __setstate__(self, state: dict[str, object]) -> None:
    self.__init__(state["model_file"], state["num_extra_ids"])

  def __repr__(self) -> str:
    return f"SentencePieceTokenizer({self.model_file!r}, num_extra_ids={self.num_extra_ids})"

  @property
  def vocab_size(self) -> int:
    """Pieces plus sentinels (32,100 for T5); models pad their embedding table beyond it."""
    return self._num_pieces + self.num_extra_ids

  @property
  def pad_id(self) -> int:
    return self._sp.pad_id()

  @property
  def eos_id(self) -> int:
    return self._sp.eos_id()

  @property
  def unk_id(self) -> int:
    return self._sp.unk_id()

  def extra_id(self, n: int) -> int:
    """The id of sentinel n (`<extra_id_0>` is the last id of the vocabulary)."""
    if not 0 <= n < self.num_extra_ids:
      raise ValueError(f"extra id {n} is out of range: the vocabulary has {self.num_extra_ids} extra ids")
    return self._num_pieces + self.num_extra_ids - 1 - n

  def piece_to_id(self, piece: str) -> int:
    """The id of one vocabulary piece (e.g. "▁positive" or "<extra_id_0>"); unk_id if absent."""
    if piece in self._extra_to_id:
      return self._extra_to_id[piece]
    return self._sp.piece_to_id(piece)

  def id_to_piece(self, token_id: int) -> str:
    """The piece of one id; sentinels give their "<extra_id_N>" text."""
    token_id = int(token_id)
    if token_id in self._id_to_extra:
      return self._id_to_extra[token_id]
    if not 0 <= token_id < self._num_pieces:
      raise ValueError(f"token id {token_id} is outside the vocabulary [0, {self.vocab_size})")
    return self._sp.id_to_piece(token_id)

  def encode(self, text: str, add_eos: bool = True) -> list[int]:
    """Token ids of `text`, with sentinels written in it mapped to their ids, then EOS."""
    segments = self._sentinel_re.split(text) if self._sentinel_re else [text]
    ids = []
    # re.split with one capturing group alternates text, sentinel, text, ...; each text segment is
    # encoded on its own, as Hugging Face does, so a word after a sentinel starts with "▁".
    for i, segment in enumerate(segments):
      if i % 2:
        ids.append(self._extra_to_id[segment])
      elif segment:
        ids.extend(self._sp.encode(segment))
    if add_eos:
      ids.append(self.eos_id)
    return ids

  def encode_batch(self, texts: Iterable[str], add_eos: bool = True) -> list[list[int]]:
    """`encode` of each text."""
    return [self.encode(text, add_eos) for text in texts]

  def decode(self, ids: Iterable[int]) -> str:
    """Text of `ids` up to the first EOS, skipping padding; sentinels appear as "<extra_id_N>"."""
    pieces = []
    for token_id in ids:
      token_id = int(token_id)
      if token_id == self.eos_id:
        break
      if token_id != self.pad_id:
        pieces.append(self.id_to_piece(token_id))
    # SentencePiece writes a piece it does not know (a sentinel) through as is, and still turns
    # the "▁" of the pieces around it into spaces.
    return self._sp.decode_pieces(pieces)


def resolve_spiece_model(
    source: str | os.PathLike, cache_dir: str | os.PathLike | None = None
) -> Path:
  """The local path of the spiece.model that `source` (a file, a model directory or a Hub id) names."""
  path = Path(source).expanduser()
  if path.is_file():
    return path
  if path.is_dir():
    if not (path / SPIECE_FILENAME).is_file():
      raise FileNotFoundError(f"The directory {str(source)!r} has no {SPIECE_FILENAME} (T5's vocabulary)")
    return path / SPIECE_FILENAME
  if not _HUB_ID.fullmatch(str(source)) or path.suffix == ".model":
    raise FileNotFoundError(
        f"No such file or directory: {str(source)!r}; expected a {SPIECE_FILENAME} file, a directory"
        " containing one, or a Hugging Face Hub model id such as 'google/flan-t5-xxl'"
    )
  try:
    return Path(huggingface_hub.hf_hub_download(str(source), SPIECE_FILENAME, cache_dir=cache_dir))
  except (OSError, ValueError, EntryNotFoundError) as e:
    offline = " (HF_HUB_OFFLINE is set)" if hub_constants.is_offline_mode() else ""
    raise FileNotFoundError(
        f"Could not get {SPIECE_FILENAME} of the Hugging Face Hub model {str(source)!r} from the Hub"
        f" or the cache at {cache_dir or hub_constants.HF_HUB_CACHE}{offline}: {e}"
    ) from e


def load_t5_tokenizer(
    source: str | os.PathLike, cache_dir: str | os.PathLike | None = None
) -> SentencePieceTokenizer:
  """The T5 tokenizer (100 extra ids) from a spiece.model file, a model directory or a Hub id."""
  return SentencePieceTokenizer(resolve_spiece_model(source, cache_dir))
