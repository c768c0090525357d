"""Prompt ensembling in one forward pass (Lester et al. 2021, §6): N prompts trained for one task
answer every example together. Each example is repeated once per prompt in the same mixed batch
(the bank gathers each copy's prompt), and the N answers are combined: `vote` is the paper's
majority vote (ties go to the label with the higher mean score), `mean` averages each label's
scores (log-probabilities on T5 and decoders, logits for heads and masked LMs).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxprompt.serving.bank import PromptBank
from jaxprompt.serving.requests import Request, serve

REDUCTIONS = ("vote", "mean")


@dataclasses.dataclass(frozen=True)
class EnsembleAnswer:
  label: str
  scores: dict[str, float]  # per label, the members' mean score
  votes: dict[str, int]  # per label, how many members chose it
  members: dict[str, str]  # per member prompt, its own label


def ensemble_classify(bank: PromptBank, members: Sequence[str], records: Sequence[Mapping[str, Any]],
                      reduction: str = "vote") -> list[EnsembleAnswer]:
  """Each record classified by every prompt in `members` in one serving pass, then combined."""
  if reduction not in REDUCTIONS:
    raise ValueError(f"ensemble reduction {reduction!r} is not one of {REDUCTIONS}")
  specs = [bank.prompts[bank.prompt_id(name)].spec for name in members]
  labels = specs[0].label_names
  if not members or not labels or any(spec.label_names != labels for spec in specs):
    raise ValueError(f"an ensemble's prompts must classify into the same labels; {list(members)} have "
                     f"{[spec.label_names for spec in specs]}")
  requests = [Request(name, record) for record in records for name in members]  # copies side by side
  responses = serve(bank, requests)
  answers = []
  for i in range(len(records)):
    own = responses[i * len(members) : (i + 1) * len(members)]
    scores_MxC = np.array([[r.scores[label] for label in labels] for r in own])
    mean_C = scores_MxC.mean(axis=0)
    votes_C = np.bincount(scores_MxC.argmax(axis=1), minlength=len(labels))
    # np.lexsort's last key is the primary one: most votes first, then the higher mean score.
    best = int(np.lexsort((mean_C, votes_C))[-1]) if reduction == "vote" else int(mean_C.argmax())
    answers.append(EnsembleAnswer(labels[best], dict(zip(labels, map(float, mean_C))),
                                  dict(zip(labels, map(int, votes_C))),
                                  {name: r.label for name, r in zip(members, own, strict=True)}))
  return answers
