"""Token labelling: each word's tag on its first sub-token (BERT WordPiece, SmolLM2 byte-level BPE), -1 elsewhere."""

import pytest

from jaxprompt.tasks.catalog import TAGGING_TASKS
from jaxprompt.tasks.codec import bert_codec, decoder_codec
from jaxprompt.tasks.features import featurize
from jaxprompt.tasks.readers import read_records
from jaxprompt.tasks.records import DataError, Record
from jaxprompt.tasks.task_spec import DataSource

NER = TAGGING_TASKS["conll2003"]  # O B-PER I-PER B-ORG I-ORG B-LOC I-LOC B-MISC I-MISC
O, B_PER, I_PER, B_LOC = 0, 1, 2, 5
SENTENCE = """Peter B-PER
Blackburn I-PER
met O
Kournikova B-PER
in O
Ljubljana B-LOC
. O
"""


@pytest.fixture
def records(tmp_path):
  path = tmp_path / "dev.txt"
  path.write_text("-DOCSTART- O\n\n" + SENTENCE + "\nEU B-ORG\n", encoding="utf-8")
  return read_records(DataSource("conll", (str(path),)))


def test_bert_wordpiece_alignment(records, bert_tokenizer):
  features, stats = featurize(records, NER, bert_codec(bert_tokenizer), 64, 1)
  first = features[0]
  # [CLS] peter blackburn met ko ##urn ##iko ##va in ljubljana . [SEP]
  assert first.inputs == [101, 2848, 13934, 2777, 12849, 14287, 12676, 3567, 1999, 21588, 1012, 102]
  assert first.token_labels == [-1, B_PER, I_PER, O, B_PER, -1, -1, -1, O, B_LOC, O, -1]
  assert (first.targets, first.label, first.soft_positions, first.group) == ([], -1, [], 0)
  assert features[1].inputs == [101, 7327, 102] and features[1].token_labels == [-1, 3, -1]
  assert (stats.kept, stats.unlabeled, stats.longest_target, stats.words_without_tokens) == (2, 0, 0, 0)


def test_byte_level_bpe_alignment(records, smollm_tokenizer):
  codec = decoder_codec(smollm_tokenizer, add_bos=True)
  (first, _), _ = featurize(records, NER, codec, 64, 1)
  words = SENTENCE.split()[::2]
  # Words after the first are encoded with their space, so the ids are the sentence's own ids.
  assert first.inputs == [smollm_tokenizer.bos_id] + smollm_tokenizer.encode(" ".join(words))
  assert first.inputs[1:] == [29300, 4290, 11302, 1278, 659, 461, 21599, 13997, 281, 450, 90, 611, 92, 90, 3231, 1673]
  # Peter | Ġbl ackburn | Ġmet | ĠK our nik ova | Ġin | ĠL j ub l j ana | Ġ.
  assert first.token_labels == [-1, B_PER, I_PER, -1, O, B_PER, -1, -1, -1, O, B_LOC, -1, -1, -1, -1, -1, O]


def test_truncation_keeps_alignment(records, bert_tokenizer, smollm_tokenizer):
  (first, _), stats = featurize(records, NER, bert_codec(bert_tokenizer), 6, 1)
  assert first.inputs == [101, 2848, 13934, 2777, 12849, 102]  # the start and [SEP]
  assert first.token_labels == [-1, B_PER, I_PER, O, B_PER, -1] and stats.truncated_inputs == 1
  (first, _), _ = featurize(records, NER, decoder_codec(smollm_tokenizer, add_bos=True), 8, 1)
  assert first.inputs == [281, 450, 90, 611, 92, 90, 3231, 1673]  # decoders cut the start: Ġin ĠL j ub l j ana Ġ.
  assert first.token_labels == [O, B_LOC, -1, -1, -1, -1, -1, O]


def test_unknown_tag_names_file_line_and_known_tags(tmp_path, bert_tokenizer):
  path = tmp_path / "bad.txt"
  path.write_text("EU B-ORG\n\nPeter B-PER\nBlackburn I-PERSON\n", encoding="utf-8")
  records = read_records(DataSource("conll", (str(path),)))
  with pytest.raises(DataError) as e:
    featurize(records, NER, bert_codec(bert_tokenizer), 16, 1)
  message = str(e.value)
  assert message.startswith(f"{path}:3: unknown tag 'I-PERSON' of word 1 ('Blackburn')")
  assert str(list(NER.token_label_names)) in message
  features, stats = featurize(records, NER, bert_codec(bert_tokenizer), 16, 1, skip_bad_examples=True)
  assert len(features) == stats.kept == 1 and stats.skipped == 1


def test_other_records(bert_tokenizer):
  codec = bert_codec(bert_tokenizer)
  good = [
      Record({"tokens": ["EU", "rejects"], "tags": [3, 0]}, "x.jsonl:1"),  # Hugging Face's integer ner_tags
      Record({"tokens": ["EU", "\u200b", "rejects"], "tags": ["B-ORG", "O", "O"]}, "x.jsonl:2"),
      Record({"tokens": ["EU"]}, "x.jsonl:3"),  # no tags: unlabeled
  ]
  features, stats = featurize(good, NER, codec, 16, 1)
  assert [f.token_labels for f in features] == [[-1, 3, 0, -1], [-1, 3, 0, -1], [-1, -1, -1]]
  assert stats.unlabeled == 1 and stats.words_without_tokens == 1 and "1 words encode to no tokens" in stats.summary()
  bad = [
      (Record({"tokens": ["EU", "rejects"], "tags": ["B-ORG"]}, "x:4"), "x:4: field 'tags' must hold one tag per word"),
      (Record({"tokens": "EU rejects", "tags": ["O"]}, "x:5"), "x:5: field 'tokens' must be a list of words"),
      (Record({"tokens": [], "tags": []}, "x:6"), "x:6: empty input"),
      (Record({"tokens": ["EU"], "tags": [9]}, "x:7"), r"x:7: unknown tag 9 of word 0 \('EU'\)"),
      (Record({"tokens": ["EU"], "tags": [True]}, "x:8"), "x:8: unknown tag True"),
      (Record({"words": ["EU"]}, "x:9"), "x:9: missing field 'tokens'"),
  ]
  for record, match in bad:
    with pytest.raises(DataError, match=match):
      featurize([record], NER, codec, 16, 1)
  with pytest.raises(ValueError, match="in-context demonstrations"):
    featurize(good, NER, codec, 16, 1, input_prefix=lambda i: "x")
