"""Prompt ensembling in one pass: three SST-2 prompts answer every example in one mixed batch, and
their answers combine as a majority vote or a mean of scores."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from jaxprompt.serving.ensemble import ensemble_classify
from jaxprompt.serving.requests import Request, serve
from tests.serving.conftest import MEMBERS


def test_the_one_pass_ensemble_combines_what_each_prompt_gives_alone(sst2_bank):
  bank, _, records = sst2_bank
  alone = {name: serve(bank, [Request(name, r) for r in records]) for name in MEMBERS}
  labels = bank.prompts[0].spec.label_names
  for reduction in ("mean", "vote"):
    answers = ensemble_classify(bank, MEMBERS, records, reduction)
    for i, answer in enumerate(answers):
      scores = np.array([[alone[name][i].scores[label] for label in labels] for name in MEMBERS])
      np.testing.assert_allclose([answer.scores[label] for label in labels], scores.mean(0), rtol=1e-5, atol=1e-5)
      assert answer.members == {name: alone[name][i].label for name in MEMBERS}
      votes = Counter(alone[name][i].label for name in MEMBERS)
      assert answer.votes == {label: votes[label] for label in labels}
      if reduction == "mean":
        assert answer.label == labels[int(scores.mean(0).argmax())]
      else:  # three voters over two labels: the majority always exists
        assert answer.label == votes.most_common(1)[0][0]


def test_an_ensemble_needs_one_label_set_and_a_known_reduction(sst2_bank):
  bank, _, records = sst2_bank
  with pytest.raises(ValueError, match="the same labels"):
    ensemble_classify(bank, ("sst2-a", "rte"), records)
  with pytest.raises(ValueError, match="reduction 'median' is not one of"):
    ensemble_classify(bank, MEMBERS, records, "median")
