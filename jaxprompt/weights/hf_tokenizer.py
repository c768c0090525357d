"""Hugging Face `tokenizers` tokenizers (BPE, byte-level BPE, WordPiece) behind one small interface.

Decoder and encoder backbones use these; T5 keeps its SentencePiece vocabulary (tokenizer.py).
Special-token ids are None when the vocabulary has no such token. `load_hf_tokenizer` reads a model
folder or a Hub id: tokenizer.json when there is one, else the vocabulary files.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import huggingface_hub
import tokenizers
from huggingface_hub import constants as hub_constants


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



# ---------------------------------------------------------------------------------------------
# Loading from a model folder or the Hub: tokenizer.json when there is one, else the vocabulary
# files of a WordPiece (BERT: vocab.txt) or byte-level BPE (RoBERTa, GPT-2: vocab.json + merges.txt)
# model, built the way transformers builds BertTokenizer / RobertaTokenizer from them.

TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json", "merges.txt",
)
_SPECIAL_FIELDS = {f.name: f"{f.name}_token" for f in dataclasses.fields(SpecialTokens)}
# Used only when a folder has neither tokenizer_config.json nor special_tokens_map.json.
_CONVENTIONAL_SPECIALS = {
    "bos": ("<s>",), "eos": ("</s>",), "pad": ("[PAD]", "<pad>"), "unk": ("[UNK]", "<unk>"),
    "cls": ("[CLS]", "<s>"), "sep": ("[SEP]", "</s>"), "mask": ("[MASK]", "<mask>"),
}
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def _read_json(path: Path) -> dict:
  return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _token_content(value: object) -> str | None:
  """A special token as written in the configs: a string, or an AddedToken dict with "content"."""
  if isinstance(value, dict):
    return value.get("content")
  return value if isinstance(value, str) else None


def _special_tokens(folder: Path, vocab: Mapping[str, int]) -> SpecialTokens:
  """From special_tokens_map.json, then tokenizer_config.json (which wins), else by convention."""
  found: dict[str, str | None] = {}
  configs = [folder / "special_tokens_map.json", folder / "tokenizer_config.json"]
  for config in map(_read_json, configs):
    for field, key in _SPECIAL_FIELDS.items():
      token = _token_content(config.get(key))
      if token is not None:
        found[field] = token
  if not any(c.is_file() for c in configs):
    for field, candidates in _CONVENTIONAL_SPECIALS.items():
      found[field] = next((t for t in candidates if t in vocab), None)
  return SpecialTokens(**found)


def _added_tokens(config: dict, special: SpecialTokens) -> list[tokenizers.AddedToken]:
  """tokenizer_config.json's added tokens with their flags (e.g. RoBERTa's <mask> strips left),
  and every special token it does not list."""
  added = []
  for _, entry in sorted(config.get("added_tokens_decoder", {}).items(), key=lambda kv: int(kv[0])):
    flags = {k: entry[k] for k in ("single_word", "lstrip", "rstrip", "normalized", "special") if k in entry}
    added.append(tokenizers.AddedToken(entry["content"], **flags))
  listed = {t.content for t in added}
  for token in dict.fromkeys(dataclasses.astuple(special)):
    if token is not None and token not in listed:
      added.append(tokenizers.AddedToken(token, special=True, normalized=False))
  return added


def _wordpiece(vocab: dict[str, int], config: dict, special: SpecialTokens) -> tokenizers.Tokenizer:
  """BERT's WordPiece tokenizer, as transformers' BertTokenizer builds it from vocab.txt."""
  tok = tokenizers.Tokenizer(tokenizers.models.WordPiece(vocab, unk_token=special.unk or "[UNK]"))
  tok.normalizer = tokenizers.normalizers.BertNormalizer(
      clean_text=True,
      handle_chinese_chars=config.get("tokenize_chinese_chars", True),
      strip_accents=config.get("strip_accents"),
      lowercase=config.get("do_lower_case", True),
  )
  tok.pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()
  tok.decoder = tokenizers.decoders.WordPiece(prefix="##")
  if special.cls in vocab and special.sep in vocab:  # [CLS] A [SEP] (B [SEP])
    cls, sep = special.cls, special.sep
    tok.post_processor = tokenizers.processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0",
        pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])],
    )
  return tok


def _byte_level_bpe(vocab: dict[str, int], merges: list, config: dict, special: SpecialTokens) -> tokenizers.Tokenizer:
  """RoBERTa's (GPT-2's) byte-level BPE, as transformers' RobertaTokenizer builds it from vocab.json + merges.txt."""
  tok = tokenizers.Tokenizer(
      tokenizers.models.BPE(vocab, merges, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False)
  )
  add_prefix_space = config.get("add_prefix_space", False)
  tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
  tok.decoder = tokenizers.decoders.ByteLevel()
  if special.cls in vocab and special.sep in vocab:  # <s> A </s> (</s> B </s>)
    tok.post_processor = tokenizers.processors.RobertaProcessing(
        (special.sep, vocab[special.sep]), (special.cls, vocab[special.cls]),
        config.get("trim_offsets", True), add_prefix_space,
    )
  return tok


def _from_folder(folder: Path, source: str) -> HFTokenizer:
  config = _read_json(folder / "tokenizer_config.json")
  if (folder / "tokenizer.json").is_file():
    tok = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
    # A tokenizer.json may fix padding and truncation (all-MiniLM-L6-v2 pads everything to 128);
    # transformers overrides both per call, and the data pipeline pads and truncates itself.
    tok.no_padding()
    tok.no_truncation()
    return HFTokenizer(tok, _special_tokens(folder, tok.get_vocab(with_added_tokens=True)), source)
  if (folder / "vocab.txt").is_file():
    vocab = tokenizers.models.WordPiece.read_file(str(folder / "vocab.txt"))
    special = _special_tokens(folder, vocab)
    tok = _wordpiece(vocab, config, special)
  elif (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
    vocab, merges = tokenizers.models.BPE.read_file(str(folder / "vocab.json"), str(folder / "merges.txt"))
    special = _special_tokens(folder, vocab)
    tok = _byte_level_bpe(vocab, merges, config, special)
  else:
    raise FileNotFoundError(
        f"{source}: no tokenizer in {folder}; looked for tokenizer.json, vocab.txt (WordPiece) and "
        "vocab.json + merges.txt (byte-level BPE)"
    )
  added = _added_tokens(config, special)
  tok.add_special_tokens([t for t in added if t.special])
  tok.add_tokens([t for t in added if not t.special])
  return HFTokenizer(tok, special, source)


def load_hf_tokenizer(source: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> HFTokenizer:
  """The tokenizer of a model folder, a tokenizer.json file, or a Hugging Face Hub id (cache first)."""
  path = Path(source).expanduser()
  if path.is_file():
    if path.name != "tokenizer.json":
      raise FileNotFoundError(f"{str(source)!r} is a file but not a tokenizer.json; pass its folder instead")
    return _from_folder(path.parent, str(source))
  if path.is_dir():
    return _from_folder(path, str(source))
  if not _HUB_ID.fullmatch(str(source)):
    raise FileNotFoundError(
        f"No such file or directory: {str(source)!r}; expected a model folder, a tokenizer.json file, or a "
        "Hugging Face Hub model id such as 'sentence-transformers/all-MiniLM-L6-v2'"
    )
  try:
    folder = huggingface_hub.snapshot_download(str(source), allow_patterns=list(TOKENIZER_FILES), cache_dir=cache_dir)
  except Exception as e:  # offline without a cached copy, unknown repo, no network, ...
    offline = " (HF_HUB_OFFLINE is set)" if hub_constants.is_offline_mode() else ""
    raise FileNotFoundError(
        f"Could not get the tokenizer files {TOKENIZER_FILES} of the Hugging Face Hub model {str(source)!r} "
        f"from the Hub or the cache at {cache_dir or hub_constants.HF_HUB_CACHE}{offline}: {type(e).__name__}: {e}"
    ) from e
  return _from_folder(Path(folder), str(source))

