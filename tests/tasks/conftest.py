"""Fixtures for the data tests: the real T5, BERT (WordPiece) and SmolLM2 (byte-level BPE) vocabularies."""

from pathlib import Path

import pytest

from jaxprompt.tasks.codec import TextCodec, t5_codec
from jaxprompt.weights.gguf_tokenizer import gguf_tokenizer
from jaxprompt.weights.hf_tokenizer import HFTokenizer, load_hf_tokenizer
from jaxprompt.weights.tokenizer import SentencePieceTokenizer, load_t5_tokenizer
from tests.assets import minilm_dir, smollm2_gguf


@pytest.fixture(scope="session")
def tokenizer(shared_data: Path) -> SentencePieceTokenizer:
  """The genuine T5 SentencePiece vocabulary."""
  return load_t5_tokenizer(shared_data / "t5_vocab" / "spiece.model")


@pytest.fixture(scope="session")
def codec(tokenizer: SentencePieceTokenizer) -> TextCodec:
  """T5's text-to-ids conventions over the real vocabulary."""
  return t5_codec(tokenizer)


@pytest.fixture(scope="session")
def bert_tokenizer() -> HFTokenizer:
  """all-MiniLM-L6-v2's uncased BERT WordPiece vocabulary."""
  return load_hf_tokenizer(minilm_dir())


@pytest.fixture(scope="session")
def bert() -> tuple:
  """MiniLM's WordPiece vocabulary: ours, and transformers' reading of the same files (the reference)."""
  import transformers  # noqa: PLC0415 - only the tests that compare against it pay its import

  return load_hf_tokenizer(minilm_dir()), transformers.AutoTokenizer.from_pretrained(str(minilm_dir()))


@pytest.fixture(scope="session")
def smollm_tokenizer() -> HFTokenizer:
  """SmolLM2-135M's byte-level BPE vocabulary, from its GGUF file."""
  return gguf_tokenizer(smollm2_gguf())
