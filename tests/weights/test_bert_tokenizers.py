"""Encoder tokenizers (WordPiece, byte-level BPE) give transformers' ids, from tokenizer.json or vocabulary files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import tokenizers
import transformers

from jaxprompt.weights.hf_tokenizer import SpecialTokens, load_hf_tokenizer
from tests.assets import minilm_dir

# Accents, CJK, upper case, special tokens written in the text, and a word past the WordPiece limit.
HARD = ["Héllo WORLD, [MASK] naïve café 東京! [SEP] x", "The movie was <mask>.", "a" * 120 + " end", ""]


@pytest.fixture(scope="module")
def sentences(shared_data):
  """The first 20 sentences of SST-2's dev set, then some hard cases."""
  lines = (shared_data / "sst2" / "dev.tsv").read_text().splitlines()[1:21]
  return [line.split("\t")[0] for line in lines] + HARD


def _copy(source: Path, target: Path, names: list[str]) -> Path:
  target.mkdir(parents=True, exist_ok=True)
  for name in names:
    shutil.copy(source / name, target / name)
  return target


def test_minilm_tokenizer_json_gives_transformers_ids(sentences):
  folder = minilm_dir()
  ours = load_hf_tokenizer(folder)
  expected = transformers.AutoTokenizer.from_pretrained(str(folder))(sentences)["input_ids"]
  assert ours.encode_batch(sentences, add_special_tokens=True) == expected
  assert ours.encode(sentences[0], add_special_tokens=True) == expected[0]  # no padding to the file's 128
  assert ours.special == SpecialTokens(pad="[PAD]", unk="[UNK]", cls="[CLS]", sep="[SEP]", mask="[MASK]")
  assert (ours.cls_id, ours.sep_id, ours.pad_id, ours.mask_id, ours.bos_id) == (101, 102, 0, 103, None)


@pytest.mark.parametrize("lowercase", [True, False], ids=["uncased", "cased"])
def test_wordpiece_from_vocab_txt_gives_transformers_ids(sentences, tmp_path, lowercase):
  """Without tokenizer.json, WordPiece is built from vocab.txt and do_lower_case."""
  folder = _copy(minilm_dir(), tmp_path, ["vocab.txt", "special_tokens_map.json"])
  config = {**json.loads((minilm_dir() / "tokenizer_config.json").read_text()), "do_lower_case": lowercase}
  (folder / "tokenizer_config.json").write_text(json.dumps(config))
  expected = transformers.BertTokenizer.from_pretrained(str(folder))(sentences)["input_ids"]
  ours = load_hf_tokenizer(folder)
  assert ours.encode_batch(sentences, add_special_tokens=True) == expected
  assert ours.mask_id == 103
  # Uncased, it is the folder's tokenizer.json; cased, "WORLD" and "Héllo" tokenize differently.
  assert (expected == load_hf_tokenizer(minilm_dir()).encode_batch(sentences, add_special_tokens=True)) == lowercase


def _train_byte_level_bpe(texts: list[str], folder: Path) -> None:
  """A small RoBERTa-style vocabulary (vocab.json + merges.txt) trained on the test sentences."""
  tok = tokenizers.Tokenizer(tokenizers.models.BPE())
  tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  trainer = tokenizers.trainers.BpeTrainer(
      vocab_size=400, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
      initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
  )
  tok.train_from_iterator(texts, trainer)
  folder.mkdir(parents=True, exist_ok=True)
  tok.model.save(str(folder))


def test_byte_level_bpe_from_vocab_and_merges_gives_transformers_ids(sentences, tmp_path):
  _train_byte_level_bpe(sentences, tmp_path)
  special = lambda content, lstrip=False: dict(content=content, lstrip=lstrip, normalized=False, rstrip=False, single_word=False, special=True)
  config = {  # as roberta-base's tokenizer_config.json: <mask> swallows the space before it
      "tokenizer_class": "RobertaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>",
      "cls_token": "<s>", "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>",
      "add_prefix_space": False, "trim_offsets": True,
      "added_tokens_decoder": {"0": special("<s>"), "1": special("<pad>"), "2": special("</s>"),
                               "3": special("<unk>"), "4": special("<mask>", lstrip=True)},
  }
  (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
  expected = transformers.RobertaTokenizer.from_pretrained(str(tmp_path))(sentences)["input_ids"]
  ours = load_hf_tokenizer(tmp_path)
  assert ours.encode_batch(sentences, add_special_tokens=True) == expected
  assert (ours.cls_id, ours.sep_id, ours.pad_id, ours.mask_id) == (0, 2, 1, 4)
  assert ours.decode(expected[0]) == sentences[0]


def test_hub_id_loads_offline_from_the_hf_cache(sentences, tmp_path):
  commit = "0123456789abcdef0123456789abcdef01234567"
  repo = tmp_path / "models--sentence-transformers--all-MiniLM-L6-v2"
  _copy(minilm_dir(), repo / "snapshots" / commit, ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"])
  (repo / "refs").mkdir()
  (repo / "refs" / "main").write_text(commit)
  ours = load_hf_tokenizer("sentence-transformers/all-MiniLM-L6-v2", cache_dir=tmp_path)
  assert ours.encode_batch(sentences) == load_hf_tokenizer(minilm_dir()).encode_batch(sentences)


def test_errors_name_what_was_looked_for(tmp_path):
  with pytest.raises(FileNotFoundError, match="looked for tokenizer.json, vocab.txt .* vocab.json \\+ merges.txt"):
    load_hf_tokenizer(tmp_path)
  with pytest.raises(FileNotFoundError, match="tokenizer files .*tokenizer.json.* of the Hugging Face Hub model 'org/no-such-model'.*HF_HUB_OFFLINE"):
    load_hf_tokenizer("org/no-such-model", cache_dir=tmp_path)
  with pytest.raises(FileNotFoundError, match="expected a model folder, a tokenizer.json file, or a Hugging Face Hub model id"):
    load_hf_tokenizer(tmp_path / "missing" / "folder")
