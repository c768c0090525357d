"""Cloze patterns: syntax and its errors, PET's segmenting and truncation, LM-BFF's templates tokenized as LM-BFF does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tokenizers
import transformers

from jaxprompt.tasks.cloze_presets import LM_BFF_PRESETS
from jaxprompt.tasks.lm_bff_templates import parse_lm_bff
from jaxprompt.tasks.patterns import ClozeTokens, Mask, Slot, Special, Text, VocabToken, parse_pattern, parse_slot
from jaxprompt.tasks.records import DataError, Record
from jaxprompt.weights.hf_tokenizer import HFTokenizer, load_hf_tokenizer


class WordTokens:
  """One id per whitespace-separated word, so truncation can be read off as words."""

  SPECIAL = {1: "[CLS]", 2: "[SEP]", 3: "[MASK]"}

  def __init__(self):
    self.vocab: dict[str, int] = {}
    self.tokens = ClozeTokens(self.encode, "", 3, (1,), (2,), (2,), second_type_id=1)

  def encode(self, text: str) -> list[int]:
    return [self.vocab.setdefault(w, 100 + len(self.vocab)) for w in text.split()]

  def words(self, ids) -> list[str]:
    names = {**self.SPECIAL, **{i: w for w, i in self.vocab.items()}}
    return [names[i] for i in ids]


def train_byte_level(folder: Path, texts: list[str]) -> tuple[HFTokenizer, transformers.PreTrainedTokenizerBase]:
  """A RoBERTa-style vocabulary (byte-level BPE, <mask> swallowing the space before it) trained on
  `texts`, as ours and as transformers' RobertaTokenizer (there is no real RoBERTa vocabulary offline)."""
  tok = tokenizers.Tokenizer(tokenizers.models.BPE())
  tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
  trainer = tokenizers.trainers.BpeTrainer(
      vocab_size=3000, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
      initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
  )
  tok.train_from_iterator(texts, trainer)
  folder.mkdir(parents=True, exist_ok=True)
  tok.model.save(str(folder))
  special = lambda content, lstrip=False: dict(content=content, lstrip=lstrip, normalized=False, rstrip=False,
                                               single_word=False, special=True)
  config = {  # as roberta-base's tokenizer_config.json
      "tokenizer_class": "RobertaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>",
      "cls_token": "<s>", "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>",
      "add_prefix_space": False, "trim_offsets": True,
      "added_tokens_decoder": {"0": special("<s>"), "1": special("<pad>"), "2": special("</s>"),
                               "3": special("<unk>"), "4": special("<mask>", lstrip=True)},
  }
  (folder / "tokenizer_config.json").write_text(json.dumps(config))
  return load_hf_tokenizer(folder), transformers.RobertaTokenizer.from_pretrained(str(folder))


def superglue_texts(shared_data: Path, lines: int = 60) -> list[str]:
  """Text fields of the first records of every SuperGLUE val file (what the byte-level vocabulary learns)."""
  texts = []
  for path in sorted((shared_data / "superglue").glob("*/val.jsonl")):
    for line in path.read_text().splitlines()[:lines]:
      texts += [v for v in json.loads(line).values() if isinstance(v, str)]
  return texts + [line.split("\t")[0] for line in (shared_data / "sst2" / "dev.tsv").read_text().splitlines()[1:200]]


@pytest.fixture(scope="module")
def roberta(shared_data, tmp_path_factory):
  return train_byte_level(tmp_path_factory.mktemp("bpe"), superglue_texts(shared_data))


# ---------------------------------------------------------------------------------------------
# Syntax


def test_segments_follow_whitespace_and_glue():
  pattern = parse_pattern("{~passage} . Question:{_} {q|lower_first} ? Answer: [MASK]. || {~a}{_}{~b}")
  a, b = pattern.sequences
  assert a == (
      Text((Slot("passage", (), True),), shortenable=True), Text((". Question:", " ")),
      Text((Slot("q", ("lower_first",)),)), Text(("? Answer:",)), Mask(), Text((".",), spaced=False),
  )
  assert b == (Text((Slot("a", (), True), " ", Slot("b", (), True)), shortenable=True),)
  assert [str(s) for s in pattern.slots] == ["{~passage}", "{q|lower_first}", "{~a}", "{~b}"]
  assert parse_pattern("'*{t.span2_text}*' refers to{{x}} [MASK]").sequences[0][0] == Text(
      ("'*", Slot("t.span2_text"), "*' refers to", "{", "x", "}"))


@pytest.mark.parametrize("text, message", [
    ("{~a} no mask", "has 0 \\[MASK\\] blocks"),
    ("[MASK] {a} [MASK]", "has 2 \\[MASK\\] blocks"),
    ("[MASK][MASK]", "has 2 \\[MASK\\] blocks"),
    ("[MASK] || {a} || {b}", "more than one ' \\|\\| '"),
    ("[MASK] || ", "empty sequence"),
    ("{a [MASK]", "Unbalanced '{'"),
    ("[MASK] {a|shout}", "Unknown slot transform.*'shout'.*known: \\['backslash_to_space'"),
    ("[MASK] {a b}", "'a b' .* is not a field name"),
    ("[MASK] {}", "Bad slot \\{\\}"),
    ("[MASK] {~passage}.", "glued to '\\.'"),
    ("[MASK] {~a}{b}", "glued to \\{b\\}"),
])
def test_bad_patterns_fail_at_construction_naming_the_pattern(text, message):
  with pytest.raises(ValueError, match=message) as e:
    parse_pattern(text)
  assert repr(text) in str(e.value)


def test_slot_transforms_and_errors():
  record = {"c": "The toilet filled.", "q": "effect", "n": 3, "t": {"x": ["a"]}}
  assert parse_slot("c|lower_first|rstrip_punct").text(record, "w") == "the toilet filled"
  assert parse_slot("q|because_or_so").text(record, "w") == ", so"
  assert parse_slot("n").text(record, "w") == "3"
  assert parse_slot("c|drop_last_char|upper_first").text({"c": "ab "}, "w") == "Ab"
  assert parse_slot("c|escaped_newline_to_space|backslash_to_space").text({"c": "a\\nb\\c"}, "w") == "a b c"
  with pytest.raises(DataError, match="f.jsonl:4: field 'q' .*expected a COPA question \\['cause', 'effect'\\]"):
    parse_slot("q|because_or_so").text({"q": "why"}, "f.jsonl:4")
  with pytest.raises(DataError, match="f:2: missing field 'x'"):
    parse_slot("x").text(record, "f:2")
  with pytest.raises(DataError, match="f:2: field 't.x' .* is a list"):
    parse_slot("t.x").text(record, "f:2")


# ---------------------------------------------------------------------------------------------
# Truncation (PET's pvp.py truncate), hand-worked with one token per word


@pytest.mark.parametrize("max_len, expected", [
    (9, "[CLS] a1 a2 a3 x b1 b2 [MASK] [SEP]"),
    (8, "[CLS] a1 a2 a3 x b1 [MASK] [SEP]"),  # the last shortenable segment loses its last token
    (7, "[CLS] a1 a2 a3 x [MASK] [SEP]"),
    (6, "[CLS] a1 a2 x [MASK] [SEP]"),  # then the one before it
    (4, "[CLS] x [MASK] [SEP]"),
])
def test_one_sequence_cuts_the_last_shortenable_segment_first(max_len, expected):
  words = WordTokens()
  encoded = parse_pattern("{~a} x {~b} [MASK]").encode(Record({"a": "a1 a2 a3", "b": "b1 b2"}, "f:1"), words.tokens, 1, max_len)
  assert " ".join(words.words(encoded.ids)) == expected
  assert encoded.truncated == (max_len < 9)
  assert encoded.mask_positions == (expected.split().index("[MASK]"),)


@pytest.mark.parametrize("a, b, max_len, expected_a, expected_b", [
    (5, 2, 10, 2, 1),  # A longer: cut A to 2; then a tie (2, 2) cuts B
    (2, 5, 11, 2, 2),  # B longer: cut B
    (3, 3, 12, 3, 2),  # a tie cuts B
    (4, 0, 10, 3, 0),
])
def test_two_sequences_cut_the_one_with_more_shortenable_tokens(a, b, max_len, expected_a, expected_b):
  words = WordTokens()
  record = Record({"a": " ".join(f"a{i}" for i in range(a)), "b": " ".join(f"b{i}" for i in range(b)), "q": "q1 q2"}, "f:1")
  encoded = parse_pattern("{~a} ? || [MASK] {q} {~b}").encode(record, words.tokens, 1, max_len)
  seq_a = [f"a{i}" for i in range(expected_a)]
  seq_b = ["[MASK]", "q1", "q2"] + [f"b{i}" for i in range(expected_b)]
  assert words.words(encoded.ids) == ["[CLS]", *seq_a, "?", "[SEP]", *seq_b, "[SEP]"]
  assert encoded.token_types == (0,) * (len(seq_a) + 3) + (1,) * (len(seq_b) + 1)
  assert len(encoded.ids) == max_len and encoded.truncated


def test_mask_block_and_fixed_text_are_never_cut():
  words = WordTokens()
  pattern = parse_pattern("{q} {~a} , so [MASK] .")
  record = Record({"q": "q1 q2", "a": "a1 a2"}, "copa/val.jsonl:7")
  encoded = pattern.encode(record, words.tokens, 3, 10)
  assert words.words(encoded.ids) == ["[CLS]", "q1", "q2", ",", "so", "[MASK]", "[MASK]", "[MASK]", ".", "[SEP]"]
  assert encoded.mask_positions == (5, 6, 7)
  with pytest.raises(DataError) as e:
    pattern.encode(record, words.tokens, 3, 9)
  assert "copa/val.jsonl:7" in str(e.value) and "max_len=9" in str(e.value) and "needs 10 tokens" in str(e.value)
  with pytest.raises(ValueError, match="num_masks must be at least 1"):
    pattern.encode(record, words.tokens, 0, 10)


def test_empty_values_are_dropped_and_the_next_shortenable_segment_is_cut():
  words = WordTokens()
  encoded = parse_pattern("{~a} {~b} [MASK]").encode(Record({"a": "a1 a2", "b": ""}, "f:1"), words.tokens, 1, 4)
  assert words.words(encoded.ids) == ["[CLS]", "a1", "[MASK]", "[SEP]"]
  # PET drops an empty segment before encoding: an empty sequence B is no sequence B; a blank one stays.
  pattern = parse_pattern("Just [MASK] ! || {~t}")
  single = pattern.encode(Record({"t": ""}, "f:1"), words.tokens, 1, 10)
  assert words.words(single.ids) == ["[CLS]", "Just", "[MASK]", "!", "[SEP]"] and single.token_types == (0,) * 5
  blank = pattern.encode(Record({"t": " "}, "f:1"), words.tokens, 1, 10)
  assert words.words(blank.ids) == ["[CLS]", "Just", "[MASK]", "!", "[SEP]", "[SEP]"]
  assert blank.token_types == (0,) * 5 + (1,)


# ---------------------------------------------------------------------------------------------
# Tokenizers: the special-token layout, and what each segment becomes


def test_cloze_tokens_from_hf_match_transformers_pair_layout(bert, roberta):
  for ours, ref in (bert, roberta):
    tokens = ClozeTokens.from_hf(ours)
    pair = ref("it was fine", "a pair", return_token_type_ids=True)
    a, b = ours.encode("it was fine"), ours.encode("a pair")
    assert pair["input_ids"] == [*tokens.start_ids, *a, *tokens.middle_ids, *b, *tokens.end_ids]
    first = len(tokens.start_ids) + len(a) + len(tokens.middle_ids)
    assert pair["token_type_ids"] == [0] * first + [tokens.second_type_id] * (len(b) + len(tokens.end_ids))
    assert tokens.mask_id == ref.mask_token_id
  bert_tokens, roberta_tokens = ClozeTokens.from_hf(bert[0]), ClozeTokens.from_hf(roberta[0])
  assert (bert_tokens.start_ids, bert_tokens.middle_ids, bert_tokens.end_ids, bert_tokens.second_type_id) == ((101,), (102,), (102,), 1)
  assert (roberta_tokens.middle_ids, roberta_tokens.second_type_id, roberta_tokens.word_prefix) == ((2, 2), 0, " ")


def test_byte_level_segments_keep_pet_spaces(roberta):
  """PET encodes " " + segment (transformers 3.0.2's add_prefix_space): edge spaces become tokens."""
  ours, ref = roberta
  tokens = ClozeTokens.from_hf(ours)
  record = Record({"p": "The sky is blue.", "q": "is it blue"}, "f:1")
  encoded = parse_pattern("{~p} . Question:{_} {~q} ? Answer:{_} [MASK] .").encode(record, tokens, 1, 100)
  segments = ["The sky is blue.", ". Question: ", "is it blue", "? Answer: ", "<mask>", "."]
  expected = [0] + [i for s in segments for i in ref.encode(" " + s, add_special_tokens=False)] + [2]
  assert list(encoded.ids) == expected
  space = ref.convert_tokens_to_ids("Ġ")
  assert ref.encode(" . Question: ", add_special_tokens=False)[-1] == space  # the lone space token PET gets
  # Text glued to the mask block has no leading space (PET's WSC segment "<mask><mask>.").
  glued = parse_pattern("refers to [MASK].").encode(record, tokens, 2, 100)
  assert list(glued.ids) == [0, *ref.encode(" refers to", add_special_tokens=False), *ref.encode(" <mask><mask>.", add_special_tokens=False), 2]
  assert ref.encode(".", add_special_tokens=False) != ref.encode(" .", add_special_tokens=False)


# ---------------------------------------------------------------------------------------------
# LM-BFF templates


def lm_bff_reference(template: str, texts: list[str], ref, first: int | None, other: int | None,
                     label_word_ids: list[int] = ()) -> tuple[list[int], list[int]]:
  """LM-BFF's tokenize_multipart_input (prompt=True, before padding and truncation); `label_word_ids`
  for the label_i pieces of demonstrations."""
  enc = lambda text: ref.encode(text, add_special_tokens=False)
  ids, types, segment = [], [], 0
  for part in template.split("*"):
    new, plus = [], False
    if part in ("cls", "mask", "sep", "sep+"):
      new = [{"cls": ref.cls_token_id, "mask": ref.mask_token_id}.get(part, ref.sep_token_id)]
      plus = part == "sep+"
    elif part[:6] == "label_":
      new = [label_word_ids[int(part.split("_")[1])]]
    elif part[:4] == "sent" or part[1:5] == "sent":
      text = texts[int(part.split("_")[1])]
      kind = part.split("_")[0].lstrip("+")[len("sent"):]  # "", "-", "l", "l-" or "u"
      text = text[:1].lower() + text[1:] if "l" in kind else text[:1].upper() + text[1:] if "u" in kind else text
      text = text[:-1] if kind.endswith("-") else text
      new = enc(" " + text if part[0] == "+" else text)
      limit = first if int(part.split("_")[1]) == 0 else other
      new = new[:limit] if limit is not None else new
    else:
      part = part.replace("_", " ")
      new = [ref.convert_tokens_to_ids(part)] if len(part) == 1 else enc(part)
    ids += new
    types += [segment] * len(new)
    segment += plus
  return ids, types


@pytest.mark.parametrize("name", sorted(LM_BFF_PRESETS))
def test_lm_bff_presets_tokenize_as_lm_bff(name, bert, roberta, shared_data):
  preset = LM_BFF_PRESETS[name]
  fields = [s.path for s in preset.pattern.slots]
  sst2 = (shared_data / "sst2" / "dev.tsv").read_text().splitlines()[1:4]
  rte = [json.loads(line) for line in (shared_data / "superglue" / "RTE" / "val.jsonl").read_text().splitlines()[:3]]
  limits = {0: None, 1: None}
  for segment in preset.pattern.sequences[0]:
    if isinstance(segment, Text) and segment.shortenable:
      limits[fields.index(segment.pieces[-1].path)] = segment.limit
  for ours, ref in (bert, roberta):
    tokens = ClozeTokens.from_hf(ours)
    for i in range(3):
      texts = [sst2[i].split("\t")[0]] if len(fields) == 1 else [rte[i]["premise"], rte[i]["hypothesis"]]
      encoded = preset.pattern.encode(Record(dict(zip(fields, texts)), f"x:{i}"), tokens, 1, 1000)
      ids, types = lm_bff_reference(preset.pattern.text, texts, ref, limits[0], limits[1])
      assert list(encoded.ids) == ids
      assert list(encoded.token_types) == (types if ours is bert[0] else [0] * len(ids))
      assert encoded.mask_positions == (ids.index(ref.mask_token_id),)


def test_lm_bff_parse_pieces_and_limits():
  pattern = parse_lm_bff("*cls**sent-_0*?*mask*,*+sentl_1**sep+*", ("premise", "hypothesis"), 240, 7)
  assert pattern.with_specials and pattern.sequences == ((
      Special(end=False), Text((Slot("premise", ("drop_last_char",), True),), False, True, 240), VocabToken("?"),
      Mask(), VocabToken(","), Text((" ", Slot("hypothesis", ("lower_first",), True)), False, True, 7),
      Special(end=True, next_type=True),
  ),)
  assert parse_lm_bff("*sentl-_0**+sentu_0*_It_was*mask*", ("s",)).sequences[0][:3] == (
      Text((Slot("s", ("lower_first", "drop_last_char"), True),), False, True),
      Text((" ", Slot("s", ("upper_first",), True)), False, True), Text((" It was",), False))


@pytest.mark.parametrize("template, message", [
    ("*cls**sent_0*_It_was.*sep+*", "has 0 \\[MASK\\] blocks"),
    ("*cls**sent_1**mask*", "uses sentence 1, but only 1 sentence fields"),
    ("*cls**sentx_0**mask*", "Unknown sentence piece \\*sentx_0\\*"),
    ("*cls**sent_0**mask**label_0*", "demonstrations are not supported"),
])
def test_lm_bff_errors(template, message):
  with pytest.raises(ValueError, match=message):
    parse_lm_bff(template, ("sentence",))


def test_lm_bff_one_character_literal_is_a_vocabulary_lookup(bert):
  """LM-BFF looks one-character pieces up as tokens: uncased BERT has no "A", so it is [UNK]."""
  tokens = ClozeTokens.from_hf(bert[0])
  encoded = parse_lm_bff("*cls**sent_0*A*mask*__A*sep*", ("s",)).encode(Record({"s": "fine"}, "f:1"), tokens, 1, 20)
  assert list(encoded.ids) == [101, *bert[0].encode("fine"), 100, 103, *bert[0].encode("  A"), 102]


def test_lm_bff_sentences_are_shortenable_and_capped(bert):
  tokens = ClozeTokens.from_hf(bert[0])
  pattern = parse_lm_bff("*cls**sent_0*_It_was*mask*.*sep+*", ("s",), first_sent_limit=3)
  record = Record({"s": "one two three four five"}, "sst2/dev.tsv:2")
  capped = pattern.encode(record, tokens, 1, 100)
  assert capped.truncated and bert[0].decode(capped.ids[1:4]) == "one two three"
  cut = pattern.encode(record, tokens, 1, 7)  # 9 tokens after the cap: the sentence loses two more
  enc = bert[0].encode
  assert list(cut.ids) == [101, *enc("one"), *enc(" It was"), 103, *enc("."), 102]
  with pytest.raises(DataError, match="sst2/dev.tsv:2: .*needs 6 tokens.*max_len=5"):
    pattern.encode(record, tokens, 1, 5)
