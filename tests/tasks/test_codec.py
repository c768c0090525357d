"""Codecs encode inputs whole, in pieces around pseudo tokens, and word by word, with the real vocabularies."""

import pytest

from jaxprompt.tasks.codec import bert_codec, decoder_codec, t5_codec, word_prefix

SENTENCE = "Peter Blackburn met Kournikova in Ljubljana ."


def test_bert_codec_wraps_cls_sep_and_cuts_keeping_sep(bert_tokenizer):
  codec = bert_codec(bert_tokenizer)
  ids = codec.encode_input(SENTENCE)
  # [CLS] peter blackburn met ko ##urn ##iko ##va in ljubljana . [SEP]: the tokenizer's own template.
  assert ids == bert_tokenizer.encode(SENTENCE, add_special_tokens=True)
  assert ids[0] == bert_tokenizer.cls_id == 101 and ids[-1] == bert_tokenizer.sep_id == 102
  assert (codec.pad_id, codec.pad_inputs_left, codec.eos_id, codec.word_prefix) == (0, False, None, "")
  assert codec.truncate_input(ids, 5) == (ids[:4] + [102], True)
  assert codec.truncate_input(ids, len(ids)) == (ids, False)
  assert codec.encode_label("positive") == codec.encode_words("positive") == bert_tokenizer.encode("positive")


def test_bert_codec_needs_cls_and_sep(smollm_tokenizer):
  with pytest.raises(ValueError, match="no \\[CLS\\] / \\[SEP\\]"):
    bert_codec(smollm_tokenizer)


def test_word_prefix_is_probed(bert_tokenizer, smollm_tokenizer):
  assert word_prefix(bert_tokenizer) == "" and word_prefix(smollm_tokenizer) == " "
  assert decoder_codec(smollm_tokenizer, add_bos=False).word_prefix == " "


@pytest.mark.parametrize("name", ["t5", "bert", "smollm"])
def test_words_one_by_one_equal_the_sentence(name, tokenizer, bert_tokenizer, smollm_tokenizer):
  codec = {
      "t5": lambda: t5_codec(tokenizer), "bert": lambda: bert_codec(bert_tokenizer),
      "smollm": lambda: decoder_codec(smollm_tokenizer, add_bos=True),
  }[name]()
  ids, starts = codec.encode_input_words(SENTENCE.split())
  assert ids == codec.encode_input(SENTENCE)  # the same ids as the sentence as one text
  assert [ids[j] for j, w in enumerate(starts) if w >= 0] == [codec.encode_words(w)[0] for w in ["Peter"]] + [
      codec.encode_words(codec.word_prefix + w)[0] for w in SENTENCE.split()[1:]
  ]
  assert [w for w in starts if w >= 0] == list(range(7))


def test_pieces_t5(tokenizer):
  codec = t5_codec(tokenizer)
  ids, soft = codec.encode_input_pieces([0, 1, " It rained. ? ", 2, " It was wet."])
  words = tokenizer.encode("It rained. ?", add_eos=False)
  assert ids == [0, 0] + words + [0] + tokenizer.encode("It was wet.")  # EOS once, at the end
  assert soft == [0, 1] + [-1] * len(words) + [2] + [-1] * (len(ids) - len(words) - 3)
  assert codec.encode_input_pieces(["It rained."]) == (codec.encode_input("It rained."), [-1] * 5)


def test_pieces_decoder_and_bert(smollm_tokenizer, bert_tokenizer):
  codec = decoder_codec(smollm_tokenizer, add_bos=True)
  ids, soft = codec.encode_input_pieces(["Review: great", 0, 1, " Sentiment:"])
  bos, pad = smollm_tokenizer.bos_id, codec.pad_id
  assert ids == [bos] + smollm_tokenizer.encode("Review: great") + [pad, pad] + smollm_tokenizer.encode(" Sentiment:")
  assert soft == [-1] * 4 + [0, 1] + [-1] * 3 and ids[-3:] == smollm_tokenizer.encode(" Sentiment:")
  codec = bert_codec(bert_tokenizer)
  ids, soft = codec.encode_input_pieces([0, "great"])
  assert ids == [101, 0, bert_tokenizer.encode("great")[0], 102] and soft == [-1, 0, -1, -1]


def test_kept_input_positions(tokenizer, smollm_tokenizer):
  t5 = t5_codec(tokenizer)
  assert t5.kept_input_positions([5, 6, 7, 1], 3) == [0, 1, 3]  # EOS kept
  assert t5.kept_input_positions([5, 6, 7, 8], 3) == [0, 1, 2]
  assert t5.kept_input_positions([5, 6, 1], 1) == [2]
  assert t5.truncate_input([5, 6, 7, 1], 1) == ([1], True)  # as before pseudo tokens existed
  decoder = decoder_codec(smollm_tokenizer, add_bos=True)
  assert decoder.kept_input_positions([1, 5, 6, 7], 2) == [2, 3]  # the start goes
