"""The bare backbone served by name beside the bank's prompts (config.serving.backbone_name): a
request's text continued by the frozen model with no prompt at all, in mixed batches too."""

from __future__ import annotations

import numpy as np
import pytest

from jaxprompt.models.llama_decoding import greedy_generate
from jaxprompt.models.t5_decoding import greedy_decode
from jaxprompt.serving.requests import Request, render, serve
from tests.run_configs import apply_overrides, tiny_config
from tests.serving.conftest import BARE
from tests.serving.saved_prompts import saved_bank

TEXTS = ["the film is a gem", "a slow and tedious"]


def _unprompted(bank, texts):
  """Greedy tokens of the backbone alone on the bank's rendering of `texts`: the reference."""
  backbone, n = bank.exp.backbone, bank.exp.config.max_decode_len
  ids = [f.inputs for f in render(bank, [Request(BARE, {"text": t}) for t in texts])]
  width = max(map(len, ids))
  pad, left = backbone.codec.pad_id, backbone.codec.pad_inputs_left
  rows = np.array([([pad] * (width - len(i)) + list(i)) if left else (list(i) + [pad] * (width - len(i))) for i in ids])
  if left:  # a decoder
    return np.asarray(greedy_generate(backbone.model, backbone.frozen, rows, rows != pad, n, None,
                                      backbone.codec.eos_id, pad))
  return np.asarray(greedy_decode(backbone.model, backbone.frozen, rows, rows != pad, n))


def _check(bank, prompted: str):
  mixed = serve(bank, [Request(BARE, {"text": TEXTS[0]}), Request(prompted, {"sentence": TEXTS[0]}),
                       Request(BARE, {"text": TEXTS[1]})])
  tokenizer, eos = bank.exp.backbone.tokenizer, bank.exp.backbone.codec.eos_id
  for response, tokens in zip([mixed[0], mixed[2]], _unprompted(bank, TEXTS), strict=True):
    ids = [int(t) for t in tokens]
    assert response.text == tokenizer.decode(ids[: ids.index(eos)] if eos in ids else ids)
    assert response.label is None and response.scores == {}
  assert mixed[1].label is not None  # the prompted request beside them is classified as usual


def test_bare_decoder_continues_the_text_as_the_model_alone(llama_bank):
  bank, _ = llama_bank
  assert [p.name for p in bank.prompts] == ["prompt4", "prefix3", BARE]
  _check(bank, "prefix3")


def test_bare_t5_decodes_the_text_as_the_model_alone(sst2_bank):
  _check(sst2_bank[0], "sst2-a")


def test_a_prompt_named_as_the_backbone_is_refused(tmp_path):
  config = tiny_config("sst2", **{"prompt.length": 3})
  with pytest.raises(ValueError, match="distinct names"):
    saved_bank(tmp_path, apply_overrides(config, **{"serving.backbone_name": "sst2"}), {"sst2": config})
