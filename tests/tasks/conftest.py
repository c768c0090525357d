"""Fixtures for the data tests: the real T5 vocabulary."""

from pathlib import Path

import pytest

from jaxprompt.tasks.codec import TextCodec, t5_codec
from jaxprompt.weights.tokenizer import SentencePieceTokenizer, load_t5_tokenizer


@pytest.fixture(scope="session")
def tokenizer(shared_data: Path) -> SentencePieceTokenizer:
  """The genuine T5 SentencePiece vocabulary."""
  return load_t5_tokenizer(shared_data / "t5_vocab" / "spiece.model")


@pytest.fixture(scope="session")
def codec(tokenizer: SentencePieceTokenizer) -> TextCodec:
  """T5's text-to-ids conventions over the real vocabulary."""
  return t5_codec(tokenizer)
