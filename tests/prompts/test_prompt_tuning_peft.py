"""Prompt tuning's loss and prompt gradient equal Hugging Face PEFT's `PromptTuning` on the same T5."""

from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np
import peft
import pytest
import torch

from jaxprompt.models.t5 import T5
from jaxprompt.objectives import seq2seq
from jaxprompt.prompts import initializers
from jaxprompt.prompts.soft_prompt import SoftPrompt
from jaxprompt.weights.t5_loader import load_t5
from tests.models import t5_reference as ref

PROMPT_LEN = 6


@pytest.mark.parametrize("variant", [ref.V1_0, ref.V1_1], ids=lambda v: v.name)
def test_loss_and_prompt_gradient_match_peft(tmp_path, variant):
  hf_model = ref.make_hf_t5(variant)
  config, frozen = load_t5(str(ref.save_hf(hf_model, tmp_path)), param_dtype="float32", dtype="float32")
  rng = np.random.default_rng(0)
  prompt = rng.normal(size=(PROMPT_LEN, 32)).astype(np.float32)
  ids, mask = ref.padded_batch(rng, [20, 13, 7], 20)
  targets, target_mask = ref.padded_batch(rng, [4, 2, 3], 4)

  # PEFT, prompting the encoder only (num_transformer_submodules=1), as Lester et al. do.
  peft_config = peft.PromptTuningConfig(
      task_type=peft.TaskType.SEQ_2_SEQ_LM, num_virtual_tokens=PROMPT_LEN, num_transformer_submodules=1
  )
  peft_model = peft.get_peft_model(hf_model, peft_config)
  embedding = peft_model.prompt_encoder["default"].embedding
  with torch.no_grad():
    embedding.weight.copy_(torch.from_numpy(prompt))
  labels = torch.tensor(np.where(target_mask, targets, -100), dtype=torch.long)
  out = peft_model(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask, dtype=torch.long),
                   labels=labels)
  out.loss.backward()

  method = SoftPrompt(PROMPT_LEN, 32, initializers.from_file(_save(tmp_path, prompt)))
  params = nn.meta.unbox(method.init(jax.random.key(0), {"input_mask": mask})["params"])
  batch = {"inputs": ids, "input_mask": mask, "targets": targets, "target_mask": target_mask,
           "example_mask": np.ones(3, bool)}

  def mean_loss(p):
    total, count = seq2seq.loss_sum(p, frozen, batch, jax.random.key(0), model=T5(config), method=method)
    return total / count

  loss, grads = jax.value_and_grad(mean_loss)(params)
  np.testing.assert_allclose(loss, out.loss.item(), atol=1e-4, rtol=0)
  np.testing.assert_allclose(grads["embeddings"], embedding.weight.grad.numpy(), atol=1e-4, rtol=0)
  assert np.abs(grads["embeddings"]).max() > 1e-3  # a real gradient, not two zeros


def _save(tmp_path, prompt):
  path = tmp_path / "prompt.npy"
  np.save(path, prompt)
  return path
