"""`python -m jaxprompt.infer`: greedy decoding of texts with a frozen backbone and an exported prompt."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxprompt.infer import decode_texts
from jaxprompt.models.prompt import Prompt
from jaxprompt.models.t5 import T5
from jaxprompt.models.t5_decoding import greedy_decode
from jaxprompt.weights.t5_loader import load_t5
from jaxprompt.weights.tokenizer import load_t5_tokenizer
from tests.conftest import SHARED_DATA

CHECKPOINT = str(SHARED_DATA / "t5x_tiny" / "test_t5_tiny.checkpoint_0")
TEXTS = ["sst2 sentence: a gripping, beautifully acted film.", "cb premise: It rained. hypothesis: wet."]


@pytest.fixture(scope="module")
def tokenizer():
  return load_t5_tokenizer(SHARED_DATA / "t5_vocab" / "spiece.model")


def test_decoding_with_a_prompt_equals_the_model_with_that_prompt(tokenizer):
  prompt = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32)
  texts = decode_texts(CHECKPOINT, tokenizer, TEXTS, 6, 4, "float32", prompt)
  config, params = load_t5(CHECKPOINT, param_dtype="float32", dtype="float32")
  ids = np.zeros((2, 32), np.int32)
  for row, tokens in enumerate(tokenizer.encode_batch(TEXTS)):
    ids[row, : len(tokens)] = tokens
  tokens = greedy_decode(T5(config), params, ids, ids > 0, 6, Prompt(embeddings_BxPxD=prompt[None]))
  assert texts == [tokenizer.decode(row) for row in np.asarray(tokens)]
  assert texts != decode_texts(CHECKPOINT, tokenizer, TEXTS, 6, 4, "float32")  # the prompt matters


def test_a_prompt_of_the_wrong_width_is_refused(tokenizer):
  with pytest.raises(ValueError, match=r"prompt of shape \(4, 16\) does not fit the backbone: it needs \[P, 8\]"):
    decode_texts(CHECKPOINT, tokenizer, TEXTS, 6, 4, "float32", np.zeros((4, 16), np.float32))


def test_the_command_line_prints_one_line_per_text(tmp_path):
  out = subprocess.run(
      [sys.executable, "-m", "jaxprompt.infer", f"--checkpoint={CHECKPOINT}",
       f"--tokenizer={SHARED_DATA / 't5_vocab' / 'spiece.model'}", *[f"--text={t}" for t in TEXTS]],
      cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=300, check=True,
  ).stdout.splitlines()
  assert [line.split("\t=> ")[0] for line in out] == TEXTS
