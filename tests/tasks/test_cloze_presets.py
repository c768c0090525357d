"""Every PET and LM-BFF preset: PET's own segment lists and truncation give the same ids on real records,
real records encode with exactly k masks after truncation, and label names are the data's."""

from __future__ import annotations

import re
import string
from pathlib import Path

import pytest
import transformers

from jaxprompt.tasks.cloze_presets import LM_BFF_PRESETS, PET_PATTERNS, mark_wsc_pronoun
from jaxprompt.tasks.patterns import ClozeTokens
from jaxprompt.tasks.readers import flatten_multirc, read_delimited, read_jsonl
from jaxprompt.tasks.records import DataError, Record
from jaxprompt.weights.hf_tokenizer import load_hf_tokenizer
from tests.assets import minilm_dir
from tests.tasks.test_patterns import superglue_texts, train_byte_level

SUPERGLUE = {"boolq": "BoolQ", "cb": "CB", "copa": "COPA", "rte": "RTE", "wic": "WiC", "wsc": "WSC", "multirc": "MultiRC"}


def _records(shared_data: Path, task: str, n: int = 4) -> list[Record]:
  """The first `n` real records for a task; tasks without local data borrow real text under their field names."""
  if task in SUPERGLUE:
    records = list(read_jsonl(str(shared_data / "superglue" / SUPERGLUE[task] / "val.jsonl")))
    if task == "copa":  # both questions: "cause" reads "because", "effect" ", so"
      return [r for q in ("cause", "effect") for r in [r for r in records if r.fields["question"] == q][: max(n // 2, 1)]]
    return (flatten_multirc(records[:1]) if task == "multirc" else records)[:n]
  if task in ("mnli", "lm_bff_pair"):
    rte = _records(shared_data, "rte", n)
    key = "gold_label" if task == "mnli" else "label"
    return [Record({"sentence1": r.fields["premise"], "sentence2": r.fields["hypothesis"], key: r.fields["label"]}, r.where) for r in rte]
  if task == "sst2":
    return list(read_delimited(str(shared_data / "sst2" / "dev.tsv"), "\t"))[:n]
  ag = list(read_delimited(str(shared_data / "agnews" / "test.tsv"), "\t", ("description", "label")))[: n + 1]
  # The local AG News file has no titles: the description's first words stand in for one.
  ag = [Record({**r.fields, "title": " ".join(r.fields["description"].split()[:6])}, r.where) for r in ag]
  if task == "agnews":
    return ag[:n]
  if task == "agnews_text":  # the file as it is: PET's patterns with an empty title
    return [Record({"text": r.fields["description"], "label": r.fields["label"]}, r.where) for r in ag[:n]]
  if task == "yahoo":  # with the csv's escaped line breaks, which PET's reader removes
    return [Record({"question_title": a.fields["title"] + "\\n?", "question_content": a.fields["description"],
                    "best_answer": b.fields["description"], "topic": 3}, a.where) for a, b in zip(ag, ag[1:])]
  return [Record({"text": r.fields["description"] + "\\nGreat\\\\place!", "label": 1}, r.where) for r in ag[:n]]


# ---------------------------------------------------------------------------------------------
# PET's get_parts (pet/pvp.py) and processors (pet/tasks.py), transcribed as the reference.


def _pet_wsc_text(e: dict) -> str:
  words, i, pronoun = e["text"].split(), e["target"]["span2_index"], e["target"]["span2_text"]
  if words[i] != pronoun:
    for offset in (-1, 1):
      if words[i + offset] == pronoun:
        i += offset
    if words[i] != pronoun and words[i].startswith(pronoun):
      words = words[:i] + [words[i][: len(pronoun)], words[i][len(pronoun) :]] + words[i + 1 :]
  words[i] = "*" + words[i] + "*"
  return " ".join(words)


def _pet_parts(task: str, i: int, e: dict, m: str) -> tuple[list, list]:
  """(parts_a, parts_b) as PET's PVPs build them: strings, and (string, True) for shortenable ones."""
  rp, lf, S = (lambda s: s.rstrip(string.punctuation)), (lambda s: s[0].lower() + s[1:]), (lambda s: (s, True))
  if task in ("agnews", "agnews_text", "yahoo"):
    if task == "agnews":
      a, b = S(e["title"].replace("\\", " ")), S(e["description"].replace("\\", " "))
    elif task == "agnews_text":
      a, b = S(""), S(e["text"].replace("\\", " "))
    else:
      clean = lambda t: t.replace("\\n", " ").replace("\\", " ")
      a = S(" ".join([clean(e["question_title"]), clean(e["question_content"])]))
      b = S(clean(e["best_answer"]))
    word = "Question:" if task == "yahoo" else "News:"
    return [[m, ":", a, b], [m, word, a, b], [a, "(", m, ")", b], [a, b, "(", m, ")"], ["[ Category:", m, "]", a, b],
            [m, "-", a, b]][i], []
  if task.startswith("yelp"):
    t = S(e["text"].replace("\\n", " ").replace("\\", " "))
    return [(["It was", m, ".", t], []), ([t, ". All in all, it was", m, "."], []), (["Just", m, "!"], [t]),
            ([t], ["In summary, the restaurant is", m, "."])][i]
  if task == "mnli":
    a, b = S(rp(e["sentence1"])), S(e["sentence2"])
    return (['"', a, '" ?'], [m, ', "', b, '"']) if i in (0, 2) else ([a, "?"], [m, ",", b])
  if task in ("rte", "cb"):
    a, b = S(e["premise"]), S(rp(e["hypothesis"]))
    if i == 4:
      tail = " True or False? answer:" if task == "rte" else " true, false or neither? answer:"
      return [a, " question: ", S(e["hypothesis"]), tail, m], []
    return [(['"', b, '" ?'], [m, ', "', a, '"']), ([b, "?"], [m, ",", a]), (['"', b, '" ?'], [m, '. "', a, '"']),
            ([b, "?"], [m, ".", a])][i]
  if task == "boolq":
    p, q = S(e["passage"]), S(e["question"])
    return [[p, ". Question: ", q, "? Answer: ", m, "."], [p, ". Based on the previous passage, ", q, "?", m, "."],
            ["Based on the following passage, ", q, "?", m, ".", p]][i // 2], []
  if task == "multirc":
    p, q, ans = S(e["paragraph"]), e["question"], e["answer"]
    return [[p, ". Question: ", q, "? Is it ", ans, "?", m, "."],
            [p, ". Question: ", q, '? Is the correct answer "', ans, '"?', m, "."],
            [p, ". Based on the previous passage, ", q, '? Is "', ans, '" a correct answer?', m, "."],
            [p, q, "- [", m, "]", ans]][i], []
  if task == "wic":
    a, b, w = S(e["sentence1"]), S(e["sentence2"]), e["word"]
    return [['"', a, '" / "', b, '" Similar sense of "' + w + '"?', m, "."],
            [a, b, "Does " + w + " have the same meaning in both sentences?", m],
            [w, ' . Sense (1) (a) "', a, '" (', m, ') "', b, '"']][i], []
  if task == "copa":
    premise, c1, c2 = S(rp(e["premise"])), rp(lf(e["choice1"])), rp(lf(e["choice2"]))
    joiner = "because" if e["question"] == "cause" else ", so"
    return [['"', c1, '" or "', c2, '"?', premise, joiner, m, "."], [c1, "or", c2, "?", premise, joiner, m, "."]][i], []
  assert task == "wsc"
  text, pronoun = S(_pet_wsc_text(e)), e["target"]["span2_text"]
  return [[text, "The pronoun '*" + pronoun + "*' refers to", m + "."],
          [text, "In the previous sentence, the pronoun '*" + pronoun + "*' refers to", m + "."],
          [text, "Question: In the passage above, what does the pronoun '*" + pronoun + "*' refer to? Answer: ", m + "."]][i], []


def _pet_encode(parts_a: list, parts_b: list, enc, layout: tuple, max_len: int) -> tuple[list[int], list[int]]:
  """PET's PVP.encode and truncate with `enc` as its tokenizer.encode; layout = (start, middle, end, type of B)."""
  start, middle, end, second = layout
  norm = lambda parts: [(enc(x), s) for x, s in (p if isinstance(p, tuple) else (p, False) for p in parts) if x]
  a, b = norm(parts_a), norm(parts_b)
  length = lambda parts, only_short=False: sum(len(x) for x, s in parts if s or not only_short)
  for _ in range(length(a) + length(b) + len(start) + len(end) + (len(middle) if b else 0) - max_len):
    cut = a if length(a, True) > length(b, True) else b
    last = max(j for j, (x, s) in enumerate(cut) if s and x)  # ValueError when nothing is left to cut
    cut[last] = (cut[last][0][:-1], True)
  ta, tb = [t for x, _ in a for t in x], [t for x, _ in b for t in x]
  if not b:
    return start + ta + end, [0] * (len(ta) + len(start) + len(end))
  return start + ta + middle + tb + end, [0] * (len(start) + len(ta) + len(middle)) + [second] * (len(tb) + len(end))


@pytest.fixture(scope="module")
def families(shared_data, tmp_path_factory):
  """(ours, PET's encode of a segment, PET's special-token layout) for BERT WordPiece and RoBERTa-style BPE."""
  bert_ref = transformers.AutoTokenizer.from_pretrained(str(minilm_dir()))
  roberta, roberta_ref = train_byte_level(tmp_path_factory.mktemp("bpe"), superglue_texts(shared_data))
  cls, sep = roberta_ref.cls_token_id, roberta_ref.sep_token_id
  return {
      "bert": (load_hf_tokenizer(minilm_dir()), lambda x: bert_ref.encode(x, add_special_tokens=False),
               ([bert_ref.cls_token_id], [bert_ref.sep_token_id], [bert_ref.sep_token_id], 1), bert_ref.mask_token),
      # transformers 3.0.2's GPT2Tokenizer prepends add_prefix_space's " " even to text that starts with one.
      "roberta": (roberta, lambda x: roberta_ref.encode(" " + x, add_special_tokens=False), ([cls], [sep, sep], [sep], 0),
                  roberta_ref.mask_token),
  }


@pytest.mark.parametrize("family", ["bert", "roberta"])
@pytest.mark.parametrize("key", sorted(PET_PATTERNS), ids=lambda k: f"{k[0]}-{k[1]}")
def test_pet_presets_give_pets_ids_and_truncation(key, family, families, shared_data):
  task, pattern_id = key
  ours, enc, layout, mask = families[family]
  preset, tokens = PET_PATTERNS[key], ClozeTokens.from_hf(ours)
  for record in _records(shared_data, task):
    candidates = preset.candidate_ids(record, tokens)
    k = 1 if not candidates else max(map(len, candidates)) + (task == "wsc")
    if task == "copa":  # PET's candidates: the transformed choices, encoded as segments
      choices = [record.fields[c][0].lower() + record.fields[c][1:] for c in ("choice1", "choice2")]
      assert list(candidates) == [enc(c.rstrip(string.punctuation)) for c in choices]
    parts = _pet_parts(task, pattern_id, record.fields, mask * k)
    for max_len in (512, 48, 20):
      try:
        expected = _pet_encode(*parts, enc, layout, max_len)
      except ValueError:  # PET fails: its fixed parts do not fit
        with pytest.raises(DataError, match=f"{re.escape(record.where)}: .*max_len={max_len}"):
          preset.encode(record, tokens, k, max_len)
        continue
      encoded = preset.encode(record, tokens, k, max_len)
      assert (list(encoded.ids), list(encoded.token_types)) == expected, (record.where, max_len)
      assert [encoded.ids[p] for p in encoded.mask_positions] == [tokens.mask_id] * k
      assert encoded.ids.count(tokens.mask_id) == k


def test_every_preset_encodes_a_real_record_with_k_masks_after_truncation(families, shared_data):
  ours = families["bert"][0]
  tokens = ClozeTokens.from_hf(ours)
  presets = {**{f"{t}-{i}": (p, t) for (t, i), p in PET_PATTERNS.items()},
             **{f"lm_bff-{t}": (p, "sst2" if len(p.pattern.slots) == 1 else "lm_bff_pair") for t, p in LM_BFF_PRESETS.items()}}
  cut = set()
  for name, (preset, task) in presets.items():
    fields = {s.path for s in preset.pattern.slots}
    for record in _records(shared_data, task, 2):
      if name.startswith("lm_bff") and fields - set(record.fields):  # e.g. QNLI's question / sentence
        record = Record(dict(zip(sorted(fields), [record.fields["sentence1"], record.fields["sentence2"]])), record.where)
      k = max(map(len, preset.candidate_ids(record, tokens)), default=0) + (task == "wsc") or 1
      full = preset.encode(record, tokens, k)
      encoded = preset.encode(record, tokens, k, max_len=40)
      assert len(full.ids) <= preset.max_len and len(encoded.ids) <= 40, name
      assert encoded.ids.count(tokens.mask_id) == k and len(encoded.mask_positions) == k, name
      assert [encoded.ids[p] for p in encoded.mask_positions] == [tokens.mask_id] * k, name
      assert encoded.truncated == (len(full.ids) > 40 or full.truncated), name
      cut.update([name] if encoded.truncated else [])
  assert {"boolq-0", "multirc-0", "wsc-2", "agnews-0", "cb-4", "lm_bff-rte"} <= cut


def test_label_names_are_the_datas(shared_data):
  for task, folder in SUPERGLUE.items():
    presets = [p for (t, _), p in PET_PATTERNS.items() if t == task]
    records = _records(shared_data, task, 10_000)
    labels = {r.fields["label"] for r in records}
    for preset in presets:
      names = preset.label_names
      if all(isinstance(v, bool) for v in labels):
        assert names == ("False", "True"), task  # a bool is its class index, and str(bool) its name
      elif all(isinstance(v, int) for v in labels):
        assert labels == set(range(len(names))), task
      else:
        assert labels == set(names), task
  sst2 = {r.fields["label"] for r in read_delimited(str(shared_data / "sst2" / "dev.tsv"), "\t")}
  assert sst2 == set(LM_BFF_PRESETS["sst2"].label_names)
  ag = {r.fields["label"] for r in read_delimited(str(shared_data / "agnews" / "test.tsv"), "\t", ("text", "label"))}
  assert ag == set(PET_PATTERNS["agnews", 0].label_names)


def test_label_words_are_single_tokens(families):
  tokens = ClozeTokens.from_hf(families["bert"][0])
  for preset in [*PET_PATTERNS.values(), *LM_BFF_PRESETS.values()]:
    ids = preset.label_word_ids(tokens)
    assert len(ids) == len(preset.verbalizer) and all(len(i) == len(w) for i, w in zip(ids, preset.verbalizer))
  assert PET_PATTERNS["agnews", 0].label_word_ids(tokens)[3] == tuple(families["bert"][0].encode("tech"))
  with pytest.raises(ValueError, match="Label word 'Society' .* is \\[\\d+, .*\\], not one token"):
    PET_PATTERNS["yahoo", 0].label_word_ids(ClozeTokens.from_hf(families["roberta"][0]))


def test_wsc_marks_the_pronoun_as_pet_does(shared_data):
  records = list(read_jsonl(str(shared_data / "superglue" / "WSC" / "val.jsonl")))
  for record in records:
    assert mark_wsc_pronoun(record).fields["marked_text"] == _pet_wsc_text(record.fields), record.where
  assert mark_wsc_pronoun(records[0]).fields["marked_text"].endswith("take his claim away from *him* .")
  glued = Record({"text": "He saw him. Then", "target": {"span2_index": 2, "span2_text": "him"}}, "wsc:3")
  assert mark_wsc_pronoun(glued).fields["marked_text"] == "He saw *him* . Then"  # "him." split
  shifted = Record({"text": "He saw  him there", "target": {"span2_index": 3, "span2_text": "him"}}, "wsc:4")
  assert mark_wsc_pronoun(shifted).fields["marked_text"] == "He saw *him* there"  # one word to the left
  with pytest.raises(DataError, match="wsc:9: WSC pronoun 'her' is not at word 0"):
    mark_wsc_pronoun(Record({"text": "He saw him", "target": {"span2_index": 0, "span2_text": "her"}}, "wsc:9"))
