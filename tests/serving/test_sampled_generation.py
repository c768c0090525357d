"""Seeded sampling from a bank, on T5 and a decoder: a sampled request's text depends on its seed
and settings alone (mixed with other prompts and greedy requests, or served alone), temperature 0
is the greedy text, and different seeds give different texts."""

from __future__ import annotations

import pytest

from jaxprompt.serving.requests import GREEDY, Request, SamplingParams, serve

HOT = 3.0  # the tiny random models' logits are flat: a high temperature makes seeds disagree


def _check_sampling(bank, records):
  first, second = bank.prompts[0].name, bank.prompts[1].name
  sampled = [SamplingParams(HOT, 1.0, seed) for seed in (11, 12, 13)]
  requests = [Request(first, r, s) for r, s in zip(records, sampled, strict=True)]
  mixed = requests + [Request(second, r) for r in records] + [Request(first, r, SamplingParams(HOT, 0.5, 5))
                                                             for r in records]
  together = serve(bank, mixed)
  for i, request in enumerate(requests):
    assert serve(bank, [request])[0].text == together[i].text  # its own batch: the same draw
  assert [r.text for r in serve(bank, requests)] == [r.text for r in together[:3]]  # again: seeded
  greedy = serve(bank, [Request(first, r, GREEDY) for r in records])
  cold = serve(bank, [Request(first, r, SamplingParams(0.0, 0.3, 99)) for r in records])
  assert [r.text for r in cold] == [r.text for r in greedy]  # temperature 0 ignores top_p and seed
  reseeded = serve(bank, [Request(first, records[0], SamplingParams(HOT, 1.0, seed)) for seed in range(6)])
  assert len({r.text for r in reseeded}) > 1
  alone = serve(bank, [Request(first, records[0])])[0].scores
  assert together[0].scores == pytest.approx(alone, rel=1e-5, abs=1e-5)  # scoring is not sampled


def test_t5_seeded_sampling(sst2_bank):
  bank, _, records = sst2_bank
  _check_sampling(bank, records[:3])


def test_decoder_seeded_sampling(llama_bank):
  _check_sampling(*llama_bank)


@pytest.mark.parametrize("settings,message", [((-0.1, 1.0, 0), "temperature"), ((float("nan"), 1.0, 0), "temperature"),
                                              ((1.0, 0.0, 0), "top_p"), ((1.0, 1.5, 0), "top_p")])
def test_bad_sampling_settings_are_named(settings, message):
  with pytest.raises(ValueError, match=message):
    SamplingParams(*settings)
