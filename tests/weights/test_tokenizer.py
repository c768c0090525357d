"""The T5 tokenizer agrees with Hugging Face's on the real T5 vocabulary and loads from every source."""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
import transformers

from jaxprompt.weights import tokenizer as tokenizer_lib
from tests.conftest import SHARED_DATA

VOCAB = SHARED_DATA / "t5_vocab" / "spiece.model"
HUB_ID = "google/flan-t5-xxl"
COMMIT = "0123456789abcdef0123456789abcdef01234567"

# Text that T5's vocabulary covers, so that decoding gives it back.
COVERED_TEXTS = [
    "",
    " ",
    "Hello, world! 123 4.5% -- (really?) [yes]; a/b \"quoted\" 'single'",
    "Prices rose 3.75% to $1,234.56 on 2024-01-31 at 09:30.",
    "  multiple   spaces\tand a tab\nand a newline  ",
    "café résumé Ünicödé Straße",
    "e\u0301 combining accent, \u00a0no-break space, \u3000ideographic space",
    "ﬁ ligature ① ＦＵＬＬ ｗｉｄｔｈ",  # NFKC-normalised by both
    "don't won't it's",
    "<extra_id_0>",
    "a<extra_id_0>b",
    "a <extra_id_0> b",
    "x  <extra_id_3>  y",
    "<extra_id_99> middle <extra_id_1>",
    "<extra_id_0><extra_id_1>",
    "The capital of France is<extra_id_0>.<extra_id_1> Paris",
]
# Text with characters outside the vocabulary (they become unk), and sentinel look-alikes.
UNCOVERED_TEXTS = [
    "naïve Ångström 日本語 and emoji 😀",
    "{braces} <angle> ~tilde `backtick`",
    "<extra_id_100> and <extra_id_07> are plain text",
]
VARIED_TEXTS = COVERED_TEXTS + UNCOVERED_TEXTS


def read_sst2_dev_sentences() -> list[str]:
  """Every sentence of the GLUE SST-2 dev set (sentence<TAB>label, header row)."""
  lines = (SHARED_DATA / "sst2" / "dev.tsv").read_text(encoding="utf-8").splitlines()
  assert lines[0] == "sentence\tlabel"
  return [line.split("\t")[0] for line in lines[1:]]


@pytest.fixture(scope="module")
def tok() -> tokenizer_lib.SentencePieceTokenizer:
  return tokenizer_lib.load_t5_tokenizer(VOCAB)


@pytest.fixture(scope="module")
def hf_tok(tmp_path_factory: pytest.TempPathFactory) -> transformers.T5Tokenizer:
  # transformers 5 has only the `tokenizers`-backed T5Tokenizer. `T5Tokenizer(vocab_file=...)`
  # ignores the file and builds a 104-token placeholder vocabulary; from_pretrained on a directory
  # converts spiece.model (pieces, scores and its normalizer) properly.
  model_dir = tmp_path_factory.mktemp("hf_t5")
  shutil.copy(VOCAB, model_dir / "spiece.model")
  hf_tok = transformers.T5Tokenizer.from_pretrained(model_dir)
  assert len(hf_tok) == 32100
  return hf_tok


@pytest.fixture(scope="module")
def sst2_dev() -> list[str]:
  return read_sst2_dev_sentences()


def test_special_ids_and_vocab_size(tok: tokenizer_lib.SentencePieceTokenizer):
  assert tok.vocab_size == 32100
  assert (tok.pad_id, tok.eos_id, tok.unk_id) == (0, 1, 2)
  assert [tok.id_to_piece(i) for i in range(3)] == ["<pad>", "</s>", "<unk>"]


def test_extra_ids_match_hugging_face(tok, hf_tok):
  assert tok.extra_id(0) == 32099
  assert tok.extra_id(99) == 32000
  for n in range(100):
    token = tokenizer_lib.extra_id_token(n)
    assert tok.piece_to_id(token) == hf_tok.convert_tokens_to_ids(token) == 32099 - n
    assert tok.id_to_piece(32099 - n) == token
  assert tok.id_to_piece(31999) == hf_tok.convert_ids_to_tokens(31999)  # the last ordinary piece


def test_out_of_range_ids_raise(tok):
  with pytest.raises(ValueError, match="extra id 100 is out of range"):
    tok.extra_id(100)
  with pytest.raises(ValueError, match=r"token id 32100 is outside the vocabulary \[0, 32100\)"):
    tok.id_to_piece(32100)
  with pytest.raises(ValueError, match="token id -1"):
    tok.decode([5, -1])


@pytest.mark.parametrize("text", VARIED_TEXTS)
def test_encode_matches_hugging_face(tok, hf_tok, text: str):
  assert tok.encode(text) == hf_tok(text).input_ids
  assert tok.encode(text, add_eos=False) == hf_tok(text, add_special_tokens=False).input_ids


def test_encode_sst2_dev_matches_hugging_face(tok, hf_tok, sst2_dev):
  # The whole dev set (872 rows) costs well under a second. Hugging Face's Unigram breaks exact score
  # ties differently from SentencePiece (e.g. "xxx" in SST-2 train); none occurs in dev.
  ours = tok.encode_batch(sst2_dev)
  theirs = hf_tok(sst2_dev).input_ids
  mismatches = [(text, a, b) for text, a, b in zip(sst2_dev, ours, theirs) if a != b]
  assert not mismatches, mismatches[:3]


def test_label_words(tok, hf_tok):
  for word in ["positive", "negative", "great", "terrible", "yes", "no", "entailment"]:
    ids = tok.encode(word, add_eos=False)
    assert ids == hf_tok(word, add_special_tokens=False).input_ids
    assert ids[-1] != tok.eos_id
  # Both common label words are single pieces, "▁" + the word.
  assert tok.encode("positive", add_eos=False) == [tok.piece_to_id("▁positive")]
  assert tok.encode("negative", add_eos=False) == [tok.piece_to_id("▁negative")]


def test_encode_batch_equals_encode(tok):
  expected = [tok.encode(text, add_eos=False) for text in VARIED_TEXTS]
  assert tok.encode_batch(VARIED_TEXTS, add_eos=False) == expected
  assert tok.encode_batch([]) == []


def test_decode_round_trips_sst2_dev(tok, sst2_dev):
  round_trips = 0
  for text in sst2_dev:
    ids = tok.encode(text)
    if tok.unk_id in ids:  # e.g. the backtick, which T5's vocabulary lacks
      continue
    # SentencePiece's normaliser collapses and strips whitespace; nothing else changes for this text.
    assert tok.decode(ids) == " ".join(text.split())
    round_trips += 1
  assert round_trips > 700


@pytest.mark.parametrize("text", COVERED_TEXTS)
def test_decode_matches_hugging_face(tok, hf_tok, text: str):
  ids = tok.encode(text)
  assert tok.unk_id not in ids
  # Hugging Face prints EOS; ours stops at it.
  assert tok.decode(ids) == hf_tok.decode(ids[:-1])


def test_decode_stops_at_eos_and_drops_padding(tok):
  hello = tok.encode("Hello world")
  assert tok.decode(hello + [0, 0, 0]) == "Hello world"
  assert tok.decode([0] + hello[:-1] + [0]) == "Hello world"
  assert tok.decode(hello + tok.encode("never shown")) == "Hello world"
  assert tok.decode(np.asarray(hello + [0, 0], np.int32)) == "Hello world"
  assert tok.decode([tok.eos_id]) == ""
  assert tok.decode([]) == ""


def test_decode_sentinels(tok):
  ids = [tok.extra_id(0)] + tok.encode("Paris", add_eos=False) + [tok.extra_id(1), tok.eos_id]
  assert tok.decode(ids) == "<extra_id_0> Paris<extra_id_1>"


def test_decode_unknown_is_sentencepiece_surface(tok):
  # SentencePiece (and so seqio) writes unk as " ⁇ "; Hugging Face writes "<unk>".
  assert tok.decode(tok.encode("a `quote'")) == "a  ⁇ quote'"


def test_pickle_round_trip(tok):
  copy = pickle.loads(pickle.dumps(tok))
  assert copy.vocab_size == tok.vocab_size
  assert copy.encode_batch(VARIED_TEXTS) == tok.encode_batch(VARIED_TEXTS)


def test_load_from_file_and_directory(tmp_path: Path, tok):
  model_dir = tmp_path / "flan-t5-small"
  model_dir.mkdir()
  shutil.copy(VOCAB, model_dir / "spiece.model")
  for source in [model_dir, str(model_dir), model_dir / "spiece.model"]:
    loaded = tokenizer_lib.load_t5_tokenizer(source)
    assert loaded.model_file == str(model_dir / "spiece.model")
    assert loaded.encode_batch(VARIED_TEXTS) == tok.encode_batch(VARIED_TEXTS)


def test_missing_sources_name_what_was_looked_for(tmp_path: Path):
  missing_file = tmp_path / "nowhere" / "spiece.model"
  with pytest.raises(FileNotFoundError, match="No such file or directory") as info:
    tokenizer_lib.load_t5_tokenizer(missing_file)
  assert str(missing_file) in str(info.value)
  with pytest.raises(FileNotFoundError, match="No such file or directory: 'spiece.model'"):
    tokenizer_lib.load_t5_tokenizer("spiece.model")  # a relative file, never a Hub id
  empty_dir = tmp_path / "empty_model_dir"
  empty_dir.mkdir()
  with pytest.raises(FileNotFoundError) as info:
    tokenizer_lib.load_t5_tokenizer(empty_dir)
  assert f"The directory '{empty_dir}' has no spiece.model" in str(info.value)


def make_hub_cache(cache_dir: Path, repo_id: str) -> Path:
  """Puts `repo_id`'s spiece.model in a hub cache in the real layout; returns the snapshot path."""
  repo_dir = cache_dir / ("models--" + repo_id.replace("/", "--"))
  blob = repo_dir / "blobs" / hashlib.sha256(VOCAB.read_bytes()).hexdigest()
  blob.parent.mkdir(parents=True)
  shutil.copy(VOCAB, blob)
  snapshot = repo_dir / "snapshots" / COMMIT / "spiece.model"
  snapshot.parent.mkdir(parents=True)
  snapshot.symlink_to(os.path.relpath(blob, snapshot.parent))
  (repo_dir / "refs").mkdir()
  (repo_dir / "refs" / "main").write_text(COMMIT)
  return snapshot


@pytest.fixture
def offline_hub(monkeypatch: pytest.MonkeyPatch) -> None:
  # huggingface_hub reads HF_HUB_OFFLINE once, at import; the module constant is what it consults.
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_load_hub_id_from_cache_dir_offline(tmp_path: Path, tok, offline_hub):
  snapshot = make_hub_cache(tmp_path / "hub", HUB_ID)
  loaded = tokenizer_lib.load_t5_tokenizer(HUB_ID, cache_dir=tmp_path / "hub")
  assert loaded.model_file == str(snapshot)
  assert loaded.encode_batch(VARIED_TEXTS) == tok.encode_batch(VARIED_TEXTS)


def test_hub_id_missing_from_cache_names_repo_and_file(tmp_path: Path, offline_hub):
  make_hub_cache(tmp_path / "hub", HUB_ID)
  with pytest.raises(FileNotFoundError) as info:
    tokenizer_lib.load_t5_tokenizer("google/t5-v1_1-small", cache_dir=tmp_path / "hub")
  message = str(info.value)
  assert "spiece.model" in message
  assert "'google/t5-v1_1-small'" in message
  assert str(tmp_path / "hub") in message
  assert "HF_HUB_OFFLINE is set" in message
  assert isinstance(info.value.__cause__, huggingface_hub.errors.LocalEntryNotFoundError)


def test_load_hub_id_with_env_vars_in_fresh_process(tmp_path: Path):
  # The real way users configure the cache: env vars, read when huggingface_hub is imported.
  snapshot = make_hub_cache(tmp_path / "home" / "hub", HUB_ID)
  env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
  env.update(HF_HOME=str(tmp_path / "home"), HF_HUB_OFFLINE="1")
  code = (
      "from jaxprompt.weights.tokenizer import load_t5_tokenizer;"
      f"t = load_t5_tokenizer({HUB_ID!r}); print(t.model_file); print(t.encode('<extra_id_0> Hello'))"
  )
  command = [sys.executable, "-c", code]
  result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
  assert result.returncode == 0, result.stderr
  assert result.stdout.splitlines() == [str(snapshot), "[32099, 8774, 1]"]
