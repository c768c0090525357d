"""Prompt ensembling in one forward pass (Lester et al. 2021, §6): N prompts trained for one task
answer every example together. Each example is repeated once per prompt in the same mixed batch
(the bank gathers each copy's prompt), and the N answers are combined: `vote` is the paper's
majority vote (ties go to the label with the higher mean score), `mean` averages each label's
scores (log-probabilities on T5 and decoders, logits for heads and masked LMs).

An `Ensemble` names its members and reduction, so that a server serves it by name like a prompt
(`python -m jaxprompt.serve`: a bank file's "ensembles").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxprompt.serving.bank import PromptBank
from jaxprompt.serving.requests import Request, Response, serve

REDUCTIONS = ("vote", "mean")


@dataclasses.dataclass(frozen=True)
class EnsembleAnswer:
  label: str
  scores: dict[str, float]  # per label, the members' mean score
  votes: dict[str, int]  # per label, how many members chose it
  members: dict[str, str]  # per member prompt, its own label


@dataclasses.dataclass(frozen=True)
class Ensemble:
  """Prompts of one label set answering together under one name."""

  name: str
  members: tuple[str, ...]
  reduction: str = "vote"

  def labels(self, bank: PromptBank) -> tuple[str, ...]:
    """The members' shared label names; an error names what does not fit `bank`."""
    if self.reduction not in REDUCTIONS:
      raise ValueError(f"ensemble {self.name!r}: reduction {self.reduction!r} is not one of {REDUCTIONS}")
    specs = [bank.prompts[bank.prompt_id(name)].spec for name in self.members]
    labels = specs[0].label_names if specs else ()
    if not labels or any(spec.label_names != labels for spec in specs):
      raise ValueError(f"ensemble {self.name!r}: its prompts must classify into the same labels; {list(self.members)}"
                       f" have {[spec.label_names for spec in specs]}")
    return labels

  def requests(self, records: Sequence[Mapping[str, Any]]) -> list[Request]:
    """Every record once per member, the copies side by side (one pass serves them all)."""
    return [Request(name, record) for record in records for name in self.members]

  def combine(self, labels: Sequence[str], responses: Sequence[Response]) -> list[EnsembleAnswer]:
    """The answers of `requests(records)`'s responses, one per record."""
    m = len(self.members)
    return [self._answer(labels, responses[i : i + m]) for i in range(0, len(responses), m)]

  def _answer(self, labels: Sequence[str], own: Sequence[Response]) -> EnsembleAnswer:
    scores_MxC = np.array([[r.scores[label] for label in labels] for r in own])
    mean_C = scores_MxC.mean(axis=0)
    votes_C = np.bincount(scores_MxC.argmax(axis=1), minlength=len(labels))
    # np.lexsort's last key is the primary one: most votes first, then the higher mean score.
    best = int(np.lexsort((mean_C, votes_C))[-1]) if self.reduction == "vote" else int(mean_C.argmax())
    return EnsembleAnswer(labels[best], dict(zip(labels, map(float, mean_C))), dict(zip(labels, map(int, votes_C))),
                          {name: r.label for name, r in zip(self.members, own, strict=True)})


def ensemble_classify(bank: PromptBank, members: Sequence[str], records: Sequence[Mapping[str, Any]],
                      reduction: str = "vote") -> list[EnsembleAnswer]:
  """Each record classified by every prompt in `members` in one serving pass, then combined."""
  ensemble = Ensemble("ensemble", tuple(members), reduction)
  labels = ensemble.labels(bank)
  return ensemble.combine(labels, serve(bank, ensemble.requests(records)))
