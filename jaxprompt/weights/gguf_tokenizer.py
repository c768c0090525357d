"""The tokenizer a GGUF file describes in its metadata, built with `tokenizers`.

It is what transformers builds for the same file (`AutoTokenizer.from_pretrained(d, gguf_file=f)`,
transformers/integrations/gguf/gguf_tokenizer_mapping.py), so both give the same ids: a byte-level
BPE over the file's tokens and merges; GPT-2's pre-tokenizer regex unless `tokenizer.ggml.pre` names
one of the splits below; tokens the file marks as control (and the bos/eos/unk/pad tokens) added as
special tokens, user-defined ones as plain added tokens; no normaliser, no byte fallback.
One deliberate difference: transformers also adds "<|endoftext|>" (GPT2Tokenizer's default) when the
vocabulary lacks it, an id past the model's embedding; this does not.
"""

from __future__ import annotations

import os

import tokenizers
from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, processors

from jaxprompt.weights import gguf as gguf_lib
from jaxprompt.weights.hf_tokenizer import HFTokenizer, SpecialTokens

# llama.cpp's token types (tokenizer.ggml.token_type).
_CONTROL = 3
_USER_DEFINED = 4

_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_TEKKEN_SPLIT = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# tokenizer.ggml.pre -> the split regex transformers uses for it, for the vocabularies Llama-architecture
# files carry. Every other value (e.g. "smollm", "gpt-2", "default") gets GPT-2's byte-level regex,
# as in transformers -- even where llama.cpp and the model's own tokenizer.json split differently:
# SmolLM splits every digit off first. Its vocabulary has no multi-digit tokens, so only non-ASCII
# numerals after a space (" ½", " ①") come out differently.
PRE_TOKENIZER_SPLITS = {
    **dict.fromkeys(
        ("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2",
         "jina-v5-nano", "dbrx", "smaug-bpe"),
        _LLAMA3_SPLIT,
    ),
    "tekken": _TEKKEN_SPLIT,
}


def _byte_level_spelling(token: str, alphabet: frozenset[str]) -> str:
  """The token in the byte-level alphabet; tokens some converters stored as raw text get respelled."""
  if set(token) <= alphabet:
    return token
  return "".join(_BYTE_TO_CHAR[b] for b in token.encode("utf-8"))


def _bytes_to_unicode() -> dict[int, str]:
  """GPT-2's reversible byte -> printable character map (what ByteLevel spells bytes with)."""
  ranges = (("!", "~"), ("¡", "¬"), ("®", "ÿ"))
  printable = [b for first, last in ranges for b in range(ord(first), ord(last) + 1)]
  chars = list(printable)
  extra = 0
  for b in range(256):
    if b not in printable:
      printable.append(b)
      chars.append(256 + extra)
      extra += 1
  return dict(zip(printable, map(chr, chars)))


_BYTE_TO_CHAR = _bytes_to_unicode()


def gguf_tokenizer(path: str | os.PathLike) -> HFTokenizer:
  """The byte-level BPE tokenizer (`tokenizer.ggml.model = gpt2`) stored in a GGUF file's metadata."""
  reader = gguf_lib.open_reader(path)
  meta = lambda key, *default: gguf_lib.metadata(reader, f"tokenizer.ggml.{key}", path, *default)
  model = meta("model")
  if model != "gpt2":
    raise ValueError(f"{path}: tokenizer.ggml.model={model!r} is not supported; only byte-level BPE ('gpt2') is")
  tokens, merges = meta("tokens"), meta("merges")
  token_types = meta("token_type", [1] * len(tokens))
  alphabet = frozenset(_BYTE_TO_CHAR.values())
  vocab = {_byte_level_spelling(t, alphabet): i for i, t in enumerate(tokens)}
  bpe = models.BPE(
      vocab, [tuple(m.split(" ", 1)) for m in merges], dropout=None, continuing_subword_prefix="",
      end_of_word_suffix="", fuse_unk=False,
  )
  tokenizer = tokenizers.Tokenizer(bpe)
  split = PRE_TOKENIZER_SPLITS.get(meta("pre", None))
  if split is None:
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  else:
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(split), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
  tokenizer.decoder = decoders.ByteLevel()

  # Control tokens spelled outside the byte alphabet are llama.cpp mislabels; transformers skips them.
  tokenizer.add_special_tokens([
      AddedToken(t, normalized=False, special=True)
      for t, token_type in zip(tokens, token_types) if token_type == _CONTROL and set(t) <= alphabet
  ])
  tokenizer.add_tokens([
      AddedToken(t, normalized=False, special=False)
      for t, token_type in zip(tokens, token_types) if token_type == _USER_DEFINED and t in vocab
  ])
  by_id = lambda key: None if (i := meta(key, None)) is None else tokens[i]
  special = SpecialTokens(bos=by_id("bos_token_id"), eos=by_id("eos_token_id"), pad=by_id("padding_token_id"),
                          unk=by_id("unknown_token_id"))
  named = [t for t in (special.bos, special.eos, special.unk, special.pad) if t is not None]
  tokenizer.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in dict.fromkeys(named)])
  tokenizer.post_processor = _template(tokenizer, special, meta("add_bos_token", False), meta("add_eos_token", False))
  return HFTokenizer(tokenizer, special, str(path))


def _template(
    tokenizer: tokenizers.Tokenizer, special: SpecialTokens, add_bos: bool, add_eos: bool
) -> processors.TemplateProcessing:
  """What `encode(..., add_special_tokens=True)` adds: bos/eos as the file's flags say, as transformers does."""
  add_bos, add_eos = add_bos and special.bos is not None, add_eos and special.eos is not None

  def part(sequence: str, type_id: int) -> str:
    bos, eos = [f"{special.bos}:{type_id}"] * add_bos, [f"{special.eos}:{type_id}"] * add_eos
    return " ".join(bos + [f"${sequence}:{type_id}"] + eos)

  specials = [(t, tokenizer.token_to_id(t)) for t, on in ((special.bos, add_bos), (special.eos, add_eos)) if on]
  return processors.TemplateProcessing(single=part("A", 0), pair=f"{part('A', 0)} {part('B', 1)}", special_tokens=specials)
