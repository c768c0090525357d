"""LM-BFF's demonstrations (Gao et al. 2021, §6): after the query, one filled-in example per class.

The query's pattern is followed by one copy of itself per class, in class order: without its
start token (*cls*), its sentences read from that class's demonstration record, its mask replaced
by the class's label word (the first, where a class has several), as LM-BFF's run.py rewrites its
template (each of its templates ends in *sep+*, so each copy is a segment of its own). The
demonstrations' sentences are capped like the pattern's other sentences (other_sent_limit), and
when the whole input is still too long they lose tokens first, the last demonstration's first
(PET's truncation, patterns.py): the query, its mask and the template text are never cut (LM-BFF
cuts the input's tail, which can drop the mask, LM-BFF#10).

On T5 and decoders (no [MASK] token) the demonstrations come before the query instead, as text:
each the filled pattern with its class's label word at the mask, then `separator`.

Sampling: one demonstration per class drawn uniformly from the training records of that class
(a regression's two halves: above the middle of its bounds or not, LM-BFF's median 2.5 for STS-B); in training
never the query itself, and drawn anew every time an example is drawn (`train_feature(i, draw)`,
seeded by the draw, so a resumed run draws the same); at evaluation `eval_sets` independent sets
per example, whose class scores are averaged (LM-BFF: 16; 4 for MNLI, SNLI, QQP). With `similar`
(LM-BFF's demo_filter), each query draws only from the candidates most similar to it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from jaxprompt.tasks import cloze
from jaxprompt.tasks import features as features_lib
from jaxprompt.tasks.codec import TextCodec
from jaxprompt.tasks.patterns import ClozePattern, Mask, Segment, Slot, Special, Text
from jaxprompt.tasks.records import DataError, Record
from jaxprompt.tasks.task_spec import TaskSpec

_FIELD = "__demonstration_{}"  # where demonstration c's fields sit in the combined record
# (query position, class) -> the indices of the training records that query may draw for that class.
Candidates = Callable[[int, int], np.ndarray]


def _renamed(segment: Segment, c: int, label_word: str, limit: int | None) -> Segment:
  """A segment of the pattern as it appears in demonstration c."""
  if isinstance(segment, Mask):
    return Text((label_word,))  # spaced like a label word: its ids are the verbalizer's
  if not isinstance(segment, Text):
    return segment
  pieces = tuple(dataclasses.replace(p, path=f"{_FIELD.format(c)}.{p.path}") if isinstance(p, Slot) else p
                 for p in segment.pieces)
  has_slot = any(isinstance(p, Slot) for p in pieces)
  # LM-BFF numbers the demonstrations' sentences after the query's: other_sent_limit caps them all.
  return dataclasses.replace(segment, pieces=pieces, limit=limit if has_slot else segment.limit)


def with_demonstrations(pattern: ClozePattern, label_words: Sequence[str], other_limit: int | None) -> ClozePattern:
  """The pattern followed by one copy per class (class c's copy reads demonstration c's fields)."""
  if len(pattern.sequences) != 1:
    raise ValueError(f"The pattern {pattern.text!r} has a second sequence; demonstrations follow one-sequence"
                     " patterns (LM-BFF's templates, or a PET pattern without '||')")
  query = pattern.sequences[0]
  copies: list[Segment] = []
  for c, word in enumerate(label_words):
    body = [s for s in query if not (pattern.with_specials and s == Special(end=False))]
    copies += [_renamed(s, c, word, other_limit) for s in body]
  # The query's own segments come first, so truncation (from the end) cuts demonstrations first.
  return dataclasses.replace(pattern, text=f"{pattern.text} + {len(label_words)} demonstrations",
                             sequences=(tuple(query) + tuple(copies),))


@dataclasses.dataclass
class Demonstrations:
  """A task's training records as demonstrations, and its inputs with them."""

  spec: TaskSpec
  pool: Sequence[Record]  # the training records
  codec: TextCodec
  max_input_len: int
  multi_token: bool
  seed: int
  eval_sets: int = 16
  similar: Candidates | None = None  # LM-BFF's filter: the candidates training query i may draw for class c
  max_target_len: int = 1  # T5 and decoders: their targets' length
  separator: str = "\n\n"  # T5 and decoders: after each demonstration

  def __post_init__(self):
    if not self.spec.pattern or self.spec.candidates:
      raise ValueError(f"Task {self.spec.name!r}: demonstrations need a cloze pattern with a verbalizer")
    words = [words[0] for words in self.spec.label_words]
    if self.codec.cloze is not None:
      limits = tuple(self.spec.sentence_limits) + (0, 0)
      self.pattern = with_demonstrations(cloze.pattern_of(self.spec), words, limits[1] or None)
      self.num_masks = features_lib.cloze_mask_count(self.spec, self.codec, self.multi_token)
    else:
      cloze.check_text_family(self.spec, self.codec)
    self.classes_N = np.array([self._class_of(r) for r in self.pool])
    empty = [c for c in range(len(words)) if not (self.classes_N == c).any()]
    if empty:
      raise ValueError(f"Task {self.spec.name!r}: no training record of class {empty} to draw demonstrations from")

  def sentence_text(self, record: Record) -> str:
    """What the demo filter embeds: the pattern's sentences joined by spaces (LM-BFF: "s1 s2")."""
    paths = self.spec.pattern_fields or tuple(dict.fromkeys(s.path for s in cloze.pattern_of(self.spec).slots))
    return " ".join(Slot(path).text(record.fields, record.where) for path in paths)

  def _class_of(self, record: Record) -> int:
    raw = record.fields.get(self.spec.label_field)
    if self.spec.bounds:  # LM-BFF's two pseudo-classes of a regression, split at the median of its range
      low, high = self.spec.bounds
      return int(float(raw) > (low + high) / 2)
    if raw is None:
      raise DataError(f"{record.where}: a demonstration needs a label ({self.spec.label_field!r})")
    return features_lib.label_index(raw, self.spec, record.where)

  def _draw(self, rng: np.random.Generator, candidates: Callable[[int], np.ndarray],
            exclude: int | None = None) -> list[Record]:
    """One record per class from `candidates(c)`, never `exclude` (the training query itself)."""
    chosen = []
    for c in range(len(self.spec.label_names)):
      pool = candidates(c)
      pool = pool[pool != exclude] if exclude is not None else pool
      if not len(pool):
        raise ValueError(f"Task {self.spec.name!r}: class {c} has no demonstration other than the query itself")
      chosen.append(self.pool[int(rng.choice(pool))])
    return chosen

  def _of_class(self, c: int) -> np.ndarray:
    return np.flatnonzero(self.classes_N == c)

  def _feature(self, record: Record, position: int, demos: Sequence[Record]) -> features_lib.Feature:
    if self.codec.cloze is None:
      return self._text_feature(record, position, demos)
    fields = {**record.fields, **{_FIELD.format(c): d.fields for c, d in enumerate(demos)}}
    combined = Record(fields, record.where)
    feature, _ = features_lib.cloze_feature(combined, self.spec, self.codec, self.num_masks, self.max_input_len,
                                            position, self.pattern)
    # Each *sep+* starts the next token type; BERT has two. LM-BFF grows BERT's table to 10 types,
    # the new ones random and trained; here the demonstrations share the last type the model has.
    last_type = self.codec.cloze.second_type_id
    return dataclasses.replace(feature, token_types=[min(t, last_type) for t in feature.token_types])

  def _text_feature(self, record: Record, position: int, demos: Sequence[Record]) -> features_lib.Feature:
    """On T5 and decoders, the demonstrations come first (a decoder's answer must end its input),
    each its pattern's text with the class's label word at the mask; the codec cuts the oldest first."""
    filled = []
    for words, demo in zip(self.spec.label_words, demos, strict=True):
      before, after = cloze.text_before_and_after_mask(demo, self.spec)
      filled.append(f"{before} {words[0]}{after}{self.separator}")
    prefix = "".join(filled)
    feats, _ = features_lib.featurize([record], self.spec, self.codec, self.max_input_len, self.max_target_len,
                                      input_prefix=lambda _: prefix)
    return dataclasses.replace(feats[0], group=position)

  def train_feature(self, index: int, draw: int) -> features_lib.Feature:
    """Training record `index` with the demonstrations of draw `draw` (every draw its own)."""
    rng = np.random.default_rng((self.seed, 0, index, draw))
    candidates = (lambda c: self.similar(index, c)) if self.similar is not None else self._of_class
    return self._feature(self.pool[index], index, self._draw(rng, candidates, exclude=index))

  def eval_features(self, records: Sequence[Record], similar: Candidates | None = None) -> list[features_lib.Feature]:
    """`eval_sets` features per record (group: the record's position), each set its own draw;
    `similar(position, c)`: the candidates record `position` may draw (LM-BFF's filter)."""
    out = []
    for position, record in enumerate(records):
      candidates = (lambda c, p=position: similar(p, c)) if similar is not None else self._of_class
      for s in range(self.eval_sets):
        rng = np.random.default_rng((self.seed, 1, position, s))
        out.append(self._feature(record, position, self._draw(rng, candidates)))
    return out
