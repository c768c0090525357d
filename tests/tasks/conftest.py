"""Fixtures for the data tests: the real T5 vocabulary."""

from pathlib import Path

import pytest

from jaxprompt.weights.tokenizer import SentencePieceTokenizer, load_t5_tokenizer


@pytest.fixture(scope="session")
def tokenizer(shared_data: Path) -> SentencePieceTokenizer:
  """The genuine T5 SentencePiece vocabulary."""
  return load_t5_tokenizer(shared_data / "t5_vocab" / "spiece.model")
