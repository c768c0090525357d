"""`python -m jaxprompt.infer`: inference with a frozen backbone and trained prompts.

With a prompt bank (any family, any prompt method; jaxprompt/serving/): a jsonl file of requests,
each naming one of the bank's prompts, in one jsonl file of answers out, prompts mixed in every
batch (file_inference.py says what a line holds):

    python -m jaxprompt.infer --bank=bank.json --input=requests.jsonl --output=answers.jsonl [--skip_bad_lines]

Plain texts, greedily decoded by a T5 with at most one exported soft prompt:

    python -m jaxprompt.infer --checkpoint=google/flan-t5-small \
        --text="translate English to German: The house is wonderful."
    python -m jaxprompt.infer --checkpoint=google/t5-xxl-lm-adapt --prompt=workdir/prompts/best.npy \
        --input=questions.txt

`--checkpoint` is a Hub id, a Hugging Face directory or file, or a T5X checkpoint; `--tokenizer`
defaults to the checkpoint (a Hub id or a directory holding spiece.model).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np
import tqdm
from absl import app, flags

from jaxprompt.models.prompt import Prompt
from jaxprompt.models.t5 import T5
from jaxprompt.models.t5_decoding import greedy_decode
from jaxprompt.serving.bank_file import load_bank_file
from jaxprompt.serving.file_inference import infer_file
from jaxprompt.weights.t5_loader import load_t5
from jaxprompt.weights.tokenizer import SentencePieceTokenizer, load_t5_tokenizer

_CHECKPOINT = flags.DEFINE_string("checkpoint", "google/flan-t5-small", "Hub id, HF directory/file or T5X checkpoint.")
_TOKENIZER = flags.DEFINE_string("tokenizer", None, "spiece.model, a directory holding it, or a Hub id (default: --checkpoint).")
_TEXT = flags.DEFINE_multi_string("text", [], "An input text; repeat for several.")
_INPUT = flags.DEFINE_string("input", None, "A file with one input text per line.")
_PROMPT = flags.DEFINE_string("prompt", None, "An exported soft prompt (.npy, [P, d_model]) placed before each input.")
_BANK = flags.DEFINE_string("bank", None, "A prompt bank's JSON file (serving/bank_file.py): --input is then jsonl.")
_OUTPUT = flags.DEFINE_string("output", None, "With --bank: the jsonl file of answers, one per served line.")
_SKIP_BAD_LINES = flags.DEFINE_bool("skip_bad_lines", False, "With --bank: report bad lines and go on (default: stop).")
_CHUNK = flags.DEFINE_integer("chunk_size", 1024, "With --bank: lines read, sorted by length and served together.")
_MAX_DECODE_LEN = flags.DEFINE_integer("max_decode_len", 32, "Most tokens generated per input.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 16, "Inputs decoded together.")
_DTYPE = flags.DEFINE_enum(
    "dtype", None, ["float32", "bfloat16"], "Compute and weight dtype (default: bfloat16, float32 on CPU)."
)


def decode_texts(
    checkpoint: str,
    tokenizer: SentencePieceTokenizer,
    texts: Sequence[str],
    max_decode_len: int,
    batch_size: int,
    dtype: str,
    prompt_PxD: np.ndarray | None = None,
) -> list[str]:
  """The greedy continuation of each text, with the soft prompt (if any) before it."""
  config, params = load_t5(checkpoint, param_dtype=dtype, dtype=dtype)
  prompt = None
  if prompt_PxD is not None:
    if prompt_PxD.ndim != 2 or prompt_PxD.shape[1] != config.d_model:
      raise ValueError(f"prompt of shape {prompt_PxD.shape} does not fit the backbone: it needs [P, {config.d_model}]")
    prompt = Prompt(embeddings_BxPxD=jax.numpy.asarray(prompt_PxD, jax.numpy.float32)[None])
  decode = jax.jit(functools.partial(greedy_decode, T5(config), max_decode_len=max_decode_len))
  outputs = []
  for start in range(0, len(texts), batch_size):
    encoded = tokenizer.encode_batch(texts[start : start + batch_size])
    # Pad to a power of two so that varied batches reuse a few compiled shapes.
    length = 1 << max(3, (max(map(len, encoded)) - 1).bit_length())
    ids = np.zeros((batch_size, length), np.int32)
    for row, tokens in enumerate(encoded):
      ids[row, : len(tokens)] = tokens
    tokens = np.asarray(decode(params, ids, ids != config.pad_token_id, prompt=prompt))
    outputs += [tokenizer.decode(row) for row in tokens[: len(encoded)]]
  return outputs


def infer_with_bank() -> None:
  if not (_INPUT.value and _OUTPUT.value):
    raise app.UsageError("--bank needs --input (jsonl requests) and --output (jsonl answers)")
  bank = load_bank_file(_BANK.value)
  with tqdm.tqdm(desc="lines", unit=" lines") as bar:
    summary = infer_file(bank, _INPUT.value, _OUTPUT.value, _SKIP_BAD_LINES.value, _CHUNK.value, bar.update)
  for problem in summary.problems:
    print(f"skipped {problem}", file=sys.stderr)
  print(f"{summary.served} lines served to {_OUTPUT.value}, {summary.skipped} skipped", file=sys.stderr)


def main(argv: Sequence[str]) -> None:
  del argv
  if _BANK.value:
    infer_with_bank()
    return
  texts = list(_TEXT.value)
  if _INPUT.value:
    texts += Path(_INPUT.value).read_text(encoding="utf-8").splitlines()
  if not texts:
    raise app.UsageError("give at least one --text or an --input file")
  tokenizer = load_t5_tokenizer(_TOKENIZER.value or _CHECKPOINT.value)
  dtype = _DTYPE.value or ("float32" if jax.default_backend() == "cpu" else "bfloat16")
  prompt = np.load(_PROMPT.value) if _PROMPT.value else None
  outputs = decode_texts(_CHECKPOINT.value, tokenizer, texts, _MAX_DECODE_LEN.value, _BATCH_SIZE.value, dtype, prompt)
  for text, output in zip(texts, outputs):
    print(f"{text}\t=> {output}")


if __name__ == "__main__":
  app.run(main)
