"""A prompt that does not fit the bank's backbone is refused, naming the prompt and both sides."""

from __future__ import annotations

import re

import numpy as np
import pytest

from jaxprompt import experiment
from jaxprompt.checkpoint import CheckpointMismatchError
from jaxprompt.serving.bank import load_bank
from jaxprompt.serving.bank_prompt import bank_prompt
from jaxprompt.serving.loading import PromptSource
from jaxprompt.serving.parts import PromptParts
from tests.method_runs import CLOZE_CASES
from tests.run_configs import apply_overrides, tiny_config
from tests.serving.saved_prompts import save_run


def _saved(config, workdir):
  exp = experiment.build(apply_overrides(config.copy_and_resolve_references(), **{"prompt.method": "none"}))
  return str(save_run(config, exp.backbone, exp.mesh, workdir, seed=0))


def test_a_prompt_of_another_backbone_names_the_prompt_and_both_sides(tmp_path):
  bank_config = tiny_config("sst2", **{"prompt.length": 4})
  other_weights = tiny_config("sst2", **{"prompt.length": 4, "model.init_seed": 1})
  with pytest.raises(CheckpointMismatchError, match=r"(?s)prompt 'reseeded': .*backbone weights differ at .*checkpoint"
                                                    r" sums \[.*\], this run \[.*\]"):
    load_bank(bank_config, [PromptSource("reseeded", other_weights, _saved(other_weights, tmp_path / "reseeded"))])
  # A prompt trained on a 32-wide BERT, restored onto the 16-wide T5.
  wide = CLOZE_CASES["prompt_tuning-bert-cloze"](**{"prompt.length": 4})
  with pytest.raises(CheckpointMismatchError) as error:
    load_bank(bank_config, [PromptSource("bert-prompt", wide, _saved(wide, tmp_path / "bert"))])
  message = str(error.value)
  assert message.startswith("prompt 'bert-prompt': ")
  assert "prompt param embeddings: checkpoint shape [4, 32], this run [4, 16]" in message
  assert re.search(r"backbone hidden_size: checkpoint 32, this run None", message)


def test_an_export_of_the_wrong_width_names_the_prompt_and_both_shapes(tmp_path):
  config = tiny_config("sst2", **{"prompt.length": 4})
  export = tmp_path / "prompts" / "best.npy"
  export.parent.mkdir(parents=True)
  np.save(export, np.zeros((4, 24), np.float32))
  shapes = r"(?s)prompt 'too-wide': prompt .*best\.npy.*embeddings: file \(4, 24\), this run \(4, 16\)"
  with pytest.raises(CheckpointMismatchError, match=shapes):
    load_bank(config, [PromptSource("too-wide", config, str(export))])


def test_prompts_whose_steps_differ_cannot_share_a_bank():
  soft = lambda placement: PromptParts(soft_PxD=np.zeros((2, 8), np.float32), placement=placement)
  head = PromptParts(head_kernel_DxC=np.zeros((8, 2), np.float32), head_bias_C=np.zeros(2, np.float32))
  with pytest.raises(ValueError, match="prompts with a head .* and prompts without cannot share a bank"):
    bank_prompt([soft("prefix"), head], (), 8, 8)
  # Soft tokens at markers and inserted ones alike replace slots of the rows' own inputs: one bank.
  every = bank_prompt([soft("markers"), soft("prefix"), soft("suffix"), PromptParts()], (), 8, 8, spare_rows=2)
  assert (every.rows, every.soft_length) == (6, 2)
