"""PET's pattern-verbalizer pairs (pet/pvp.py) and LM-BFF's manual templates (run_experiment.sh), as data.

    preset = PET_PATTERNS["boolq", 0]          # keyed (task, PET's pattern id)
    preset = LM_BFF_PRESETS["sst2"]            # keyed by task
    encoded = preset.encode(record, ClozeTokens.from_hf(tokenizer))

`label_names[i]` is class i's label as the data writes it (SuperGLUE jsonl; GLUE tsv; TFDS
ag_news_subset / yelp_polarity_reviews, whose ClassLabel ints are the class indices; Hugging Face's
yelp_review_full / yahoo_answers_topics, which TFDS lacks) and `verbalizer[i]` its label words (PET
averages the logits of several). COPA and WSC score per-example `candidates` instead (PET's
multi-mask tasks). PET's patterns read SuperGLUE's RTE (premise / hypothesis), LM-BFF's GLUE's
(sentence1 / sentence2); MNLI reads GLUE's tsv (sentence1, sentence2, gold_label), since TFDS's glue/mnli
numbers its classes in another order. MRPC's tsv header ("#1 String") is read as sentence1 / sentence2.
LM-BFF's `--double_demo` (twice max_len with demonstrations) is not applied: there are none here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from jaxprompt.tasks.lm_bff_templates import parse_lm_bff
from jaxprompt.tasks.patterns import ClozePattern, ClozeTokens, EncodedCloze, Slot, parse_pattern, parse_slot
from jaxprompt.tasks.records import DataError, Record
from jaxprompt.tasks.task_spec import TaskSpec


@dataclasses.dataclass(frozen=True)
class ClozePreset:
  """A parsed pattern, the task's labels and label words, and what encoding it needs."""

  pattern: ClozePattern
  label_names: tuple[str, ...]
  verbalizer: tuple[tuple[str, ...], ...]  # label words per class, in label_names order
  label_field: str = "label"
  candidates: tuple[Slot, ...] = ()  # per-example answers filling the mask block (COPA, WSC)
  max_len: int = 256  # PET's --pet_max_seq_length default; LM-BFF's --max_seq_length (128 unless raised)
  flatten: str | None = None  # "multirc": one record per answer option (readers.flatten_multirc)
  prepare: Callable[[Record], Record] | None = None  # fields derived before filling (WSC's marked pronoun)
  bounds: tuple[float, float] | None = None  # regression (STS-B): the label is a score; the classes its poles
  # LM-BFF templates: the fields sent_0, sent_1, ... read, and first_sent_limit / other_sent_limit.
  pattern_fields: tuple[str, ...] = ()
  sentence_limits: tuple[int, ...] = ()
  mirror_choices: bool = False  # PET's COPA: training records doubled with their two choices swapped

  def __post_init__(self):
    if not self.candidates and len(self.verbalizer) != len(self.label_names):
      raise ValueError(
          f"{self.pattern.text!r}: {len(self.label_names)} labels but {len(self.verbalizer)} verbalizer entries")

  def encode(self, record: Record, tokens: ClozeTokens, num_masks: int = 1, max_len: int | None = None) -> EncodedCloze:
    """The record's cloze input (after `prepare`), cut to `max_len` (default: the preset's)."""
    record = self.prepare(record) if self.prepare else record
    return self.pattern.encode(record, tokens, num_masks, self.max_len if max_len is None else max_len)

  def candidate_ids(self, record: Record, tokens: ClozeTokens) -> tuple[list[int], ...]:
    """Each candidate's ids as a pattern segment; PET's mask block has as many masks as the longest."""
    return tuple(tokens.word_ids(slot.text(record.fields, record.where)) for slot in self.candidates)

  def label_word_ids(self, tokens: ClozeTokens) -> tuple[tuple[int, ...], ...]:
    """The token id of every label word, per class; a word must be one token (as PET and LM-BFF assert)."""
    ids = []
    for words in self.verbalizer:
      for word in words:
        if len(tokens.word_ids(word)) != 1:
          raise ValueError(f"Label word {word!r} of {self.pattern.text!r} is {tokens.word_ids(word)}, not one token")
      ids.append(tuple(tokens.word_ids(word)[0] for word in words))
    return tuple(ids)


  def task_spec(self, name: str, metric: str | None = None) -> TaskSpec:
    """The preset as a run's task (config.task): the pattern's text and its labels, words and options."""
    # One candidate for two labels (WSC's referent, labels False / True): PET generates it.
    generate = len(self.candidates) == 1 and len(self.label_names) == 2
    prepare = {mark_wsc_pronoun: "wsc_pronoun"}.get(self.prepare, "") if self.prepare else ""
    metric = metric or ("pearson" if self.bounds else "accuracy")
    return TaskSpec(name=name, template="", pattern=self.pattern.text, label_names=self.label_names,
                    verbalizer=tuple(w[0] if len(w) == 1 else w for w in self.verbalizer), label_field=self.label_field,
                    metric=metric, flatten=self.flatten, pattern_fields=self.pattern_fields,
                    sentence_limits=self.sentence_limits, candidates=tuple(str(c)[1:-1] for c in self.candidates),
                    prepare=prepare, bounds=self.bounds or (), mirror_choices=self.mirror_choices, generate=generate)


def mark_wsc_pronoun(record: Record) -> Record:
  """Adds `marked_text`: WSC's text with the pronoun at target.span2_index in asterisks, as PET writes it."""
  # PET's reader (pet/tasks.py) splits the text at whitespace, moves span2_index one word where it
  # misses the pronoun, splits a word that starts with it ("him." -> "him", "."), and re-joins with spaces.
  fields, where = record.fields, record.where
  target = fields.get("target")
  has_span = isinstance(target, dict) and {"span2_index", "span2_text"} <= set(target)
  if not (has_span and isinstance(fields.get("text"), str)):
    raise DataError(f"{where}: WSC needs a text and a target (span2_index, span2_text), got fields {sorted(fields)}")
  words, pronoun, i = fields["text"].split(), target["span2_text"], target["span2_index"]
  at = lambda j: words[j] if 0 <= j < len(words) else None
  if at(i) != pronoun:
    for offset in (-1, 1):
      i += offset if at(i + offset) == pronoun else 0
    if at(i) is not None and at(i) != pronoun and at(i).startswith(pronoun):
      words[i : i + 1] = [pronoun, words[i][len(pronoun) :]]
  if at(i) != pronoun:
    raise DataError(
        f"{where}: WSC pronoun {pronoun!r} is not at word {target['span2_index']} (or next to it) of"
        f" {fields['text']!r:.120}"
    )
  words[i] = f"*{pronoun}*"
  return Record({**fields, "marked_text": " ".join(words)}, where)


def _words(*words: str) -> tuple[tuple[str, ...], ...]:
  return tuple((word,) for word in words)


def _pet(task: str, patterns: dict[int, str], labels: tuple[str, ...], verbalizers: dict[int, tuple], **kw) -> dict:
  return {(task, i): ClozePreset(parse_pattern(p), labels, verbalizers[i], **kw) for i, p in patterns.items()}


def _news(a: str, b: str, p1_word: str) -> dict[int, str]:
  """AG News's and Yahoo's six patterns over a (title; may be empty: left out) and b (body)."""
  ab = " ".join(filter(None, (a, b)))
  return {0: f"[MASK] : {ab}", 1: f"[MASK] {p1_word} {ab}", 2: " ".join(filter(None, (a, "( [MASK] )", b))),
          3: f"{ab} ( [MASK] )", 4: f"[ Category: [MASK] ] {ab}", 5: f"[MASK] - {ab}"}


def _all(words: tuple, ids: range) -> dict[int, tuple]:
  return dict.fromkeys(ids, words)


_CSV_TEXT = "escaped_newline_to_space|backslash_to_space"
_YELP = "{~text|" + _CSV_TEXT + "}"
_YELP_PATTERNS = {0: f"It was [MASK] . {_YELP}", 1: f"{_YELP} . All in all, it was [MASK] .",
                  2: f"Just [MASK] ! || {_YELP}", 3: f"{_YELP} || In summary, the restaurant is [MASK] ."}
_YAHOO_A = f"{{~question_title|{_CSV_TEXT}}}{{_}}{{~question_content|{_CSV_TEXT}}}"
_RTE = {  # PET's RTE and CB patterns 0-3: the hypothesis, final punctuation stripped, comes first
    0: '" {~hypothesis|rstrip_punct} " ? || [MASK] , " {~premise} "',
    1: "{~hypothesis|rstrip_punct} ? || [MASK] , {~premise}",
    2: '" {~hypothesis|rstrip_punct} " ? || [MASK] . " {~premise} "',
    3: "{~hypothesis|rstrip_punct} ? || [MASK] . {~premise}",
}
_BOOL = ("False", "True")
_NO_YES = _words("No", "Yes")

# `{_}` marks the spaces PET writes inside its segments ('. Question: '); see patterns.py.
PET_PATTERNS: dict[tuple[str, int], ClozePreset] = {
    **_pet("agnews", _news("{~title|backslash_to_space}", "{~description|backslash_to_space}", "News:"),
           ("World", "Sports", "Business", "Sci/Tech"), _all(_words("World", "Sports", "Business", "Tech"), range(6))),
    # The same without titles, for AG News files of `text` alone (../shared/data/agnews/test.tsv).
    **_pet("agnews_text", _news("", "{~text|backslash_to_space}", "News:"),
           ("World", "Sports", "Business", "Sci/Tech"), _all(_words("World", "Sports", "Business", "Tech"), range(6))),
    **_pet("yahoo", _news(_YAHOO_A, f"{{~best_answer|{_CSV_TEXT}}}", "Question:"), tuple(map(str, range(1, 11))),
           _all(_words("Society", "Science", "Health", "Education", "Computer", "Sports", "Business",
                       "Entertainment", "Relationship", "Politics"), range(6)), label_field="topic"),
    **_pet("yelp_polarity", _YELP_PATTERNS, ("1", "2"), _all(_words("bad", "good"), range(4))),
    **_pet("yelp_full", _YELP_PATTERNS, ("1", "2", "3", "4", "5"),
           _all(_words("terrible", "bad", "okay", "good", "great"), range(4))),
    **_pet("mnli", {0: '" {~sentence1|rstrip_punct} " ? || [MASK] , " {~sentence2} "',
                    1: "{~sentence1|rstrip_punct} ? || [MASK] , {~sentence2}",
                    2: '" {~sentence1|rstrip_punct} " ? || [MASK] , " {~sentence2} "',
                    3: "{~sentence1|rstrip_punct} ? || [MASK] , {~sentence2}"},
           ("contradiction", "entailment", "neutral"),
           {**_all(_words("Wrong", "Right", "Maybe"), range(2)), **_all(_words("No", "Yes", "Maybe"), range(2, 4))},
           label_field="gold_label"),
    **_pet("boolq", {0: "{~passage} . Question:{_} {~question} ? Answer:{_} [MASK] .",
                     1: "{~passage} . Question:{_} {~question} ? Answer:{_} [MASK] .",
                     2: "{~passage} . Based on the previous passage,{_} {~question} ? [MASK] .",
                     3: "{~passage} . Based on the previous passage,{_} {~question} ? [MASK] .",
                     4: "Based on the following passage,{_} {~question} ? [MASK] . {~passage}",
                     5: "Based on the following passage,{_} {~question} ? [MASK] . {~passage}"},
           _BOOL, {i: _NO_YES if i % 2 == 0 else _words("false", "true") for i in range(6)}),
    **_pet("rte", {**_RTE, 4: "{~premise} {_}question:{_} {~hypothesis} {_}True or False? answer: [MASK]"},
           ("entailment", "not_entailment"), {**_all(_words("Yes", "No"), range(4)), 4: _words("true", "false")}),
    **_pet("cb", {**_RTE, 4: "{~premise} {_}question:{_} {~hypothesis} {_}true, false or neither? answer: [MASK]"},
           ("entailment", "contradiction", "neutral"),
           {**_all(_words("Yes", "No", "Maybe"), range(4)), 4: _words("true", "false", "neither")}),
    # PET glues the word into its text segments ('Does ' + word + ' have ...').
    **_pet("wic", {0: '" {~sentence1} " / " {~sentence2} " Similar sense of "{word}"? [MASK] .',
                   1: "{~sentence1} {~sentence2} Does{_}{word}{_}have the same meaning in both sentences? [MASK]",
                   2: '{word} {_}. Sense (1) (a) " {~sentence1} " ( [MASK] ) " {~sentence2} "'},
           _BOOL, {**_all(_NO_YES, range(2)), 2: _words("2", "b")}),
    **_pet("multirc", {0: "{~paragraph} . Question:{_} {question} ? Is it{_} {answer} ? [MASK] .",
                       1: '{~paragraph} . Question:{_} {question} ? Is the correct answer " {answer} "? [MASK] .',
                       2: "{~paragraph} . Based on the previous passage,{_} {question} ?"
                          ' Is " {answer} " a correct answer? [MASK] .',
                       3: "{~paragraph} {question} - [ [MASK] ] {answer}"},
           ("0", "1"), {**_all(_NO_YES, range(3)), 3: _words("False", "True")}, flatten="multirc"),
    # The mask block holds a candidate: as many masks as the longer choice has tokens.
    **_pet("copa", {0: '" {choice1|lower_first|rstrip_punct} " or " {choice2|lower_first|rstrip_punct} "?'
                       " {~premise|rstrip_punct} {question|because_or_so} [MASK] .",
                    1: "{choice1|lower_first|rstrip_punct} or {choice2|lower_first|rstrip_punct} ?"
                       " {~premise|rstrip_punct} {question|because_or_so} [MASK] ."},
           ("0", "1"), _all((), range(2)),
           candidates=(parse_slot("choice1|lower_first|rstrip_punct"), parse_slot("choice2|lower_first|rstrip_punct")),
           mirror_choices=True),
    # The mask block holds the referent (span1), plus PET's padding masks; "." follows it unspaced.
    **_pet("wsc", {0: "{~marked_text} The pronoun '*{target.span2_text}*' refers to [MASK].",
                   1: "{~marked_text} In the previous sentence, the pronoun '*{target.span2_text}*' refers to [MASK].",
                   2: "{~marked_text} Question: In the passage above, what does the pronoun '*{target.span2_text}*'"
                      " refer to? Answer:{_} [MASK]."},
           _BOOL, _all((), range(3)), candidates=(parse_slot("target.span1_text"),), prepare=mark_wsc_pronoun),
}


def _bff(template: str, fields: tuple[str, ...], labels: tuple[str, ...], words: tuple[str, ...],
         first: int | None = None, other: int | None = None, max_len: int = 128, **kw) -> ClozePreset:
  """LM-BFF's template with its first_sent_limit / other_sent_limit and --max_seq_length."""
  limits = (first or 0, other or 0) if first or other else ()
  return ClozePreset(parse_lm_bff(template, fields, first, other), labels, _words(*words), max_len=max_len,
                     pattern_fields=fields, sentence_limits=limits, **kw)


_IT_WAS = "*cls**sent_0*_It_was*mask*.*sep+*"
_THIS_IS = "*cls**sent_0*_This_is*mask*.*sep+*"
_NLI = "*cls**sent-_0*?*mask*,*+sentl_1**sep+*"
_PARAPHRASE = "*cls**sent_0**mask*,*+sentl_1**sep+*"
_S = ("sentence",)
_PAIR = ("sentence1", "sentence2")
_01 = ("0", "1")
_NLI3 = ("contradiction", "entailment", "neutral")

LM_BFF_PRESETS: dict[str, ClozePreset] = {
    "sst2": _bff(_IT_WAS, _S, _01, ("terrible", "great")),
    "sst5": _bff(_IT_WAS, _S, ("0", "1", "2", "3", "4"), ("terrible", "bad", "okay", "good", "great"), 110, 20),
    "mr": _bff(_IT_WAS, _S, _01, ("terrible", "great"), 110, 50),
    "cr": _bff(_IT_WAS, _S, _01, ("terrible", "great"), 110, 50),
    "mpqa": _bff(_IT_WAS, _S, _01, ("terrible", "great"), 110),
    "subj": _bff(_THIS_IS, _S, _01, ("subjective", "objective"), 110, 50),
    "trec": _bff("*cls**mask*:*+sent_0**sep+*", _S, ("0", "1", "2", "3", "4", "5"),
                 ("Description", "Entity", "Expression", "Human", "Location", "Number"), 110),
    "cola": _bff(_THIS_IS, _S, _01, ("incorrect", "correct")),
    "mnli": _bff(_NLI, _PAIR, _NLI3, ("No", "Yes", "Maybe"), label_field="gold_label", max_len=256),
    "snli": _bff(_NLI, _PAIR, _NLI3, ("No", "Yes", "Maybe"), label_field="gold_label", max_len=256),
    "qnli": _bff(_NLI, ("question", "sentence"), ("entailment", "not_entailment"), ("Yes", "No")),
    "rte": _bff(_NLI, _PAIR, ("entailment", "not_entailment"), ("Yes", "No"), 240, max_len=256),
    "mrpc": _bff(_PARAPHRASE, _PAIR, _01, ("No", "Yes")),
    "qqp": _bff(_PARAPHRASE, ("question1", "question2"), _01, ("No", "Yes"), label_field="is_duplicate"),
    "stsb": _bff(_PARAPHRASE, _PAIR, _01, ("No", "Yes"), label_field="score", bounds=(0.0, 5.0)),
}
