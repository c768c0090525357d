"""LM-BFF's automatic templates (Gao et al. 2021, tools/generate_template.py): T5 fills in two spans.

    search = search_templates(T5(config), params, tokenizer, LM_BFF_PRESETS["sst2"].task_spec("sst2"), records)
    write_templates(search, workdir / "templates.json")
    task = search.forms[0].templates[0].task      # the best template of the first form, as a cloze task

Every training record becomes a T5 input around its gold label's manual word, in each of its
task's FORMS: a single-sentence task is searched twice (the spans after the sentence, and before
it), a sentence pair once (between the two). One beam search per form decodes the spans for the
whole training set at once (shared_beam_search), and each output becomes a template in LM-BFF's
syntax: sentinel 0 becomes `*cls*` (and the sentence, where it comes first), sentinel 1 `*mask*`,
the end `*sep+*` (after the sentence, where it comes last), and "▁" `_`. Outputs that make no
template are dropped and counted. Scores sum log P_T5(output | input) over the records, the
paper's objective; LM-BFF's code ranks by log-normalised averaged logits instead (LM-BFF#23).
Ranking the templates by fine-tuning on each (tools/sort_template.py) is an ordinary run per template.
"""

from __future__ import annotations

import collections
import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from etils import epath

from jaxprompt.models.t5 import T5
from jaxprompt.models.t5_beam_search import BeamSpec, shared_beam_search
from jaxprompt.tasks.lm_bff_templates import parse_lm_bff
from jaxprompt.tasks.patterns import TRANSFORMS, Slot
from jaxprompt.tasks.records import DataError, Record
from jaxprompt.tasks.task_spec import TaskSpec
from jaxprompt.weights.tokenizer import SentencePieceTokenizer

BEAM_WIDTH = 100
# LM-BFF's decoder input holds 20 positions (max_length = 20) and its loop runs max_length - 2
# steps: an output has at most 18 tokens.
DECODER_LEN = 20
MAX_DECODE_LEN = DECODER_LEN - 2
MAX_INPUT_LEN = 256  # what a single-sentence input keeps of its tokens
CHUNK_SIZE = 32  # inputs per forward pass, LM-BFF's batch
# Ids of the T5 vocabulary that LM-BFF bans: 3 is "▁" (a lone space), 19794 and 22354 are runs of
# 8 and 16 dots; and "." (5) may not follow itself.
BANNED_IDS = (3, 19794, 22354)
DOT_ID = 5
# Input lengths are rounded up to this, so that a task's forms (one token apart) share a compiled search.
_LENGTH_MULTIPLE = 16

_search = jax.jit(shared_beam_search, static_argnames=("model", "spec", "chunk_size"))


@dataclasses.dataclass(frozen=True)
class Sentence:
  """Sentence `index` of a record, transformed (LM-BFF's sentu_i, sent-_i, sentl_i); `+`: a space first."""

  index: int
  transform: str
  space: bool = False


@dataclasses.dataclass(frozen=True)
class Form:
  """How LM-BFF writes a record around T5's two spans, and how the spans come back as a template."""

  name: str
  before: Sentence | str  # before <extra_id_0>: a sentence, or a one-character piece looked up as is
  after: Sentence | None  # after <extra_id_1>
  kept_tokens: tuple[int | None, int | None]  # the slice of the input's ids kept (LM-BFF's truncation)
  span0: str  # what <extra_id_0> becomes in the template
  end: str  # what the end (</s>, or <extra_id_2>) becomes
  keep_share: int  # LM-BFF keeps the best beam_width // keep_share outputs


SENTENCE_THEN_MASK = Form("sentence_then_mask", Sentence(0, "upper_first"), None,
                          (-MAX_INPUT_LEN, None), "*cls**sent_0*", "*sep+*", 2)
# "." alone looked up, not encoded: SentencePiece would write it "▁", ".".
MASK_THEN_SENTENCE = Form("mask_then_sentence", ".", Sentence(0, "upper_first", space=True),
                          (None, MAX_INPUT_LEN), "*cls*", "*+sent_0**sep+*", 2)
PAIR = Form("pair", Sentence(0, "drop_last_char"), Sentence(1, "lower_first", space=True),
            (None, None), "*cls**sent-_0*", "*+sentl_1**sep+*", 1)
FORMS = {1: (SENTENCE_THEN_MASK, MASK_THEN_SENTENCE), 2: (PAIR,)}  # by the task's number of sentences


class MalformedOutput(ValueError):
  """A decoded output that is no template; `reason` is how it is counted."""

  def __init__(self, reason: str, detail: str = ""):
    super().__init__(f"{reason}: {detail}" if detail else reason)
    self.reason = reason


@dataclasses.dataclass(frozen=True)
class FoundTemplate:
  """A template, its summed log-prob over the training set, T5's output ids, and it as a cloze task."""

  template: str
  score: float
  ids: tuple[int, ...]
  task: TaskSpec


@dataclasses.dataclass(frozen=True)
class FormSearch:
  """One form's kept templates, best first, and how many of its kept outputs were dropped, by reason."""

  form: str
  templates: tuple[FoundTemplate, ...]
  dropped: Mapping[str, int]


@dataclasses.dataclass(frozen=True)
class TemplateSearch:
  """A task's search: each of its forms, in LM-BFF's order."""

  task: TaskSpec
  forms: tuple[FormSearch, ...]


def forms_of(task: TaskSpec) -> tuple[Form, ...]:
  """The forms LM-BFF searches for an LM-BFF task: by whether it reads one sentence or two."""
  if not task.pattern.startswith("*") or len(task.pattern_fields) not in FORMS:
    raise ValueError(f"Task {task.name!r}: template search needs an LM-BFF template over one or two"
                     f" sentences, got pattern {task.pattern!r} with pattern_fields {task.pattern_fields}")
  return FORMS[len(task.pattern_fields)]


def gold_word(task: TaskSpec, record: Record) -> str:
  """The manual label word of the record's gold label; a regression's pole on its side of the middle."""
  value = record.fields.get(task.label_field)
  if value is None:
    raise DataError(f"{record.where}: no label field {task.label_field!r} (fields {sorted(record.fields)})")
  if task.bounds:
    # LM-BFF's STS-B: class 0 below 2.5, the middle of the bounds (0, 5).
    index = int(float(value) >= sum(task.bounds) / 2)
  elif str(value) in task.label_names:
    index = task.label_names.index(str(value))
  else:
    raise DataError(f"{record.where}: label {value!r} is not one of {task.label_names}")
  words = task.label_words[index]
  if len(words) != 1:
    raise ValueError(f"Task {task.name!r}: class {index} has label words {words}; the search writes one")
  return words[0]


def t5_input_ids(form: Form, task: TaskSpec, record: Record, tokenizer: SentencePieceTokenizer) -> list[int]:
  """The record's T5 input: its text around `<extra_id_0> gold word <extra_id_1>`, then </s>, cut as LM-BFF cuts it."""
  sentences = tuple(Slot(field).text(record.fields, record.where) for field in task.pattern_fields)
  # Pieces are encoded one by one, as LM-BFF does; the spaces before the word and before a `+`
  # sentence are LM-BFF's, which SentencePiece folds into the first piece's "▁".
  ids = [*_piece_ids(form.before, sentences, tokenizer), tokenizer.extra_id(0),
         *tokenizer.encode(" " + gold_word(task, record), add_eos=False), tokenizer.extra_id(1),
         *_piece_ids(form.after, sentences, tokenizer), tokenizer.eos_id]
  return ids[slice(*form.kept_tokens)]


def _piece_ids(piece: Sentence | str | None, sentences: Sequence[str], tokenizer: SentencePieceTokenizer) -> list[int]:
  if piece is None:
    return []
  if isinstance(piece, str):
    return [tokenizer.piece_to_id(piece)]
  text = TRANSFORMS[piece.transform](sentences[piece.index])
  return tokenizer.encode((" " if piece.space else "") + text, add_eos=False)


def span_ends(tokenizer: SentencePieceTokenizer) -> tuple[tuple[int, ...], ...]:
  """LM-BFF's two spans: the first ends at <extra_id_1> or </s>, the second (and the output) at <extra_id_2> or </s>."""
  return (tokenizer.extra_id(1), tokenizer.eos_id), (tokenizer.extra_id(2), tokenizer.eos_id)


def beam_spec(tokenizer: SentencePieceTokenizer, beam_width: int, max_decode_len: int) -> BeamSpec:
  """LM-BFF's search: its spans, banned ids and no ". .", at a width and a cap."""
  return BeamSpec(beam_width, max_decode_len, banned_ids=BANNED_IDS, no_repeat_id=DOT_ID,
                  part_end_ids=span_ends(tokenizer))


def output_ids(ids: Sequence[int], tokenizer: SentencePieceTokenizer) -> tuple[int, ...]:
  """A decoded sequence up to the end of its second span; MalformedOutput where it runs to the cap first."""
  ends, ended = span_ends(tokenizer), 0
  for t, token in enumerate(map(int, ids)):
    ended += token in ends[ended]
    if ended == len(ends):
      return tuple(map(int, ids[: t + 1]))
  raise MalformedOutput("unfinished")


def template_text(form: Form, ids: Sequence[int], tokenizer: SentencePieceTokenizer) -> str:
  """LM-BFF's template of a decoded sequence (pad after its end); MalformedOutput where it makes none."""
  output = output_ids(ids, tokenizer)
  sentinel0 = tokenizer.extra_id(0)
  if output[0] != sentinel0:
    raise MalformedOutput("text before <extra_id_0>")
  special = {sentinel0: form.span0, tokenizer.extra_id(1): "*mask*", tokenizer.extra_id(2): form.end,
             tokenizer.eos_id: form.end}
  # Besides these: other sentinels, <pad>, <unk>, and ids past the vocabulary (the model pads its table).
  num_pieces = tokenizer.vocab_size - tokenizer.num_extra_ids
  pieces = []
  for token in output:
    if token in special:
      pieces.append(special[token])
    elif token in (tokenizer.pad_id, tokenizer.unk_id) or not 0 <= token < num_pieces:
      raise MalformedOutput("not a text piece", f"id {token}")
    elif "*" in (piece := tokenizer.id_to_piece(token)):
      raise MalformedOutput("'*' in the text", piece)  # it would split the template's pieces
    else:
      pieces.append(piece.replace("▁", "_"))
  return "".join(pieces)


def template_task(task: TaskSpec, template: str, name: str) -> TaskSpec:
  """`task` with the template as its pattern, read by the LM-BFF template reader; MalformedOutput where it fails."""
  masks = template.split("*").count("mask")
  if masks != 1:
    raise MalformedOutput("no mask" if masks == 0 else "several masks", template)
  try:
    pattern = parse_lm_bff(template, task.pattern_fields)
  except ValueError as e:
    raise MalformedOutput("unreadable", str(e)) from None
  if sorted(slot.path for slot in pattern.slots) != sorted(task.pattern_fields):
    raise MalformedOutput("a sentence missing or repeated", template)
  return dataclasses.replace(task, name=name, pattern=template)


def search_form(
    model: T5,
    params: Any,
    tokenizer: SentencePieceTokenizer,
    task: TaskSpec,
    records: Sequence[Record],
    form: Form,
    beam_width: int = BEAM_WIDTH,
    max_decode_len: int = MAX_DECODE_LEN,
    chunk_size: int = CHUNK_SIZE,
) -> FormSearch:
  """One form's search over `records`: the kept outputs that make templates, best first."""
  if not records:
    raise ValueError(f"Task {task.name!r}: template search needs training records, got none")
  inputs = [t5_input_ids(form, task, r, tokenizer) for r in records]
  length = -(-max(map(len, inputs)) // _LENGTH_MULTIPLE) * _LENGTH_MULTIPLE
  ids_NxL = np.full((len(inputs), length), tokenizer.pad_id, np.int32)
  for n, ids in enumerate(inputs):
    ids_NxL[n, : len(ids)] = ids
  mask_NxL = np.arange(length)[None] < np.array([len(ids) for ids in inputs])[:, None]
  spec = beam_spec(tokenizer, beam_width, max_decode_len)
  tokens_WxT, scores_W = _search(model, params, ids_NxL, mask_NxL, spec=spec, chunk_size=min(chunk_size, len(inputs)))
  # LM-BFF keeps its best beam_width // keep_share outputs, whatever they are; here those that
  # make no template, or the same one again, are dropped from them.
  kept = beam_width // form.keep_share
  templates: list[FoundTemplate] = []
  dropped: collections.Counter[str] = collections.Counter()
  for ids_T, score in zip(np.asarray(tokens_WxT)[:kept], np.asarray(scores_W)[:kept]):
    try:
      if not np.isfinite(score):
        raise MalformedOutput("no hypothesis")  # a beam wider than the hypotheses there are
      template = template_text(form, ids_T, tokenizer)
      if any(t.template == template for t in templates):
        raise MalformedOutput("duplicate")
      found = template_task(task, template, f"{task.name}-{form.name}-{len(templates)}")
    except MalformedOutput as e:
      dropped[e.reason] += 1
      continue
    templates.append(FoundTemplate(template, float(score), output_ids(ids_T, tokenizer), found))
  return FormSearch(form.name, tuple(templates), dict(dropped))


def search_templates(
    model: T5,
    params: Any,
    tokenizer: SentencePieceTokenizer,
    task: TaskSpec,
    records: Sequence[Record],
    beam_width: int = BEAM_WIDTH,
    max_decode_len: int = MAX_DECODE_LEN,
    chunk_size: int = CHUNK_SIZE,
) -> TemplateSearch:
  """LM-BFF's template search for `task` over its training `records`, every form of the task."""
  forms = tuple(search_form(model, params, tokenizer, task, records, form, beam_width, max_decode_len, chunk_size)
                for form in forms_of(task))
  return TemplateSearch(task, forms)


def write_templates(search: TemplateSearch, path: str | epath.PathLike) -> None:
  """The search as JSON: per form, its templates best first (template, score, T5's ids) and the drop counts."""
  forms = [{"form": f.form, "dropped": dict(f.dropped),
            "templates": [{"template": t.template, "score": t.score, "ids": list(t.ids)} for t in f.templates]}
           for f in search.forms]
  epath.Path(path).write_text(json.dumps({"task": search.task.name, "forms": forms}, indent=2) + "\n")
