"""A bank of prompts of different methods, lengths and tasks on one frozen backbone: a mixed batch
gives each request what its prompt gives alone."""

from __future__ import annotations

import jax
import numpy as np

from configs import p_tuning_v2
from jaxprompt.models.quantized import QuantizedKernel
from jaxprompt.serving.requests import Request, render, serve, step_outputs
from tests.method_runs import CASES, CLOZE_CASES, small, tiny_mlm
from tests.run_configs import small_sst2_files, tiny_config
from tests.serving.saved_prompts import eval_records, saved_bank, served_alone


def _interleaved(per_prompt: dict[str, list[dict]]) -> list[Request]:
  """Requests taking turns between the prompts: a, b, c, a, b, c, ..."""
  rounds = max(len(records) for records in per_prompt.values())
  return [Request(name, records[i]) for i in range(rounds) for name, records in per_prompt.items() if i < len(records)]


def _assert_each_as_alone(bank, requests, per_prompt):
  mixed = step_outputs(bank, requests)
  for name, records in per_prompt.items():
    p = bank.prompt_id(name)
    rows = [i for i, r in enumerate(requests) if r.prompt == name]
    alone = served_alone(bank.prompts[p], records)
    key = next(k for k in ("label_scores", "class_logits") if k in alone)
    np.testing.assert_allclose(mixed[key][rows][:, list(bank.labels.columns[p])], alone[key], rtol=1e-5, atol=1e-5,
                               err_msg=name)
    if "decoded" in alone:
      np.testing.assert_array_equal(mixed["decoded"][rows], alone["decoded"], err_msg=name)


def test_t5_mixed_batch_equals_each_prompt_alone(tmp_path):
  """Prompt tuning of two lengths and prefix tuning (reparameterised, every attention kind) for
  three tasks with different label sets: scores and greedy generations as alone."""
  configs = {
      "sst2-prompt3": tiny_config("sst2", **{"prompt.length": 3}),
      "rte-prefix2": tiny_config("rte", **{"prompt.method": "prefix_tuning", "prompt.length": 2,
                                          "prompt.reparam_hidden": 8}),
      "cb-prompt5": tiny_config("cb", **{"prompt.length": 5, "prompt.init": "vocab"}),
  }
  bank = saved_bank(tmp_path, tiny_config("sst2"), configs)
  per_prompt = {name: eval_records(config, 3) for name, config in configs.items()}
  requests = _interleaved(per_prompt)
  _assert_each_as_alone(bank, requests, per_prompt)
  responses = serve(bank, requests)
  assert [set(r.scores) for r in responses[:3]] == [{"0", "1"}, {"entailment", "not_entailment"},
                                                    {"entailment", "contradiction", "neutral"}]
  assert all(r.label == max(r.scores, key=r.scores.get) and isinstance(r.text, str) for r in responses)


def test_llama_mixed_batch_equals_each_prompt_alone(tmp_path):
  """A decoder (left-padded inputs, cached greedy decoding): soft prompts of two lengths placed
  before and after the input, two verbalizers, and reparameterised prefixes."""
  llama = CASES["prefix_tuning-llama"]
  configs = {
      "prompt4-suffix": llama(**{"prompt.method": "prompt_tuning", "prompt.length": 4, "prompt.placement": "suffix"}),
      "prefix3": llama(**{"prompt.length": 3}),
      "prompt2-good-bad": llama(**{"prompt.method": "prompt_tuning", "prompt.length": 2, "prompt.init": "vocab",
                                   "task.verbalizer": (" bad", " good")}),
  }
  bank = saved_bank(tmp_path, llama(), configs)
  per_prompt = {name: eval_records(config, 3) for name, config in configs.items()}
  assert len(bank.labels.targets_CxT) == 4  # the two verbalizers' texts, each once
  _assert_each_as_alone(bank, _interleaved(per_prompt), per_prompt)


def test_bert_cloze_mixed_batch_equals_each_prompt_alone(tmp_path):
  """A masked LM scoring label words at the pattern's mask: soft prompts of two lengths and
  placements, two verbalizers (one bound union of their words), and prefixes."""
  cloze = CLOZE_CASES["prompt_tuning-bert-cloze"]
  configs = {
      "prompt4": cloze(**{"prompt.length": 4}),
      "prompt2-after-cls-good-bad": cloze(**{"prompt.length": 2, "prompt.placement": "after_bos",
                                             "task.verbalizer": ("bad", "good")}),
      "prefix3": cloze(**{"prompt.method": "prefix_tuning", "prompt.length": 3}),
  }
  bank = saved_bank(tmp_path, cloze(), configs)
  per_prompt = {name: eval_records(config, 3) for name, config in configs.items()}
  assert bank.labels.columns == ((0, 1), (2, 3), (0, 1))
  _assert_each_as_alone(bank, _interleaved(per_prompt), per_prompt)


def test_bert_heads_mixed_batch_equals_each_prompt_alone(tmp_path):
  """P-tuning v2 (deep prompts of two lengths, each with its head) and a classifier head alone, for
  tasks of 2 and 3 classes: each request reads its own head's logits."""
  sst2 = lambda **o: small(tiny_mlm(small_sst2_files(p_tuning_v2.get_config("task=sst2,data=local"))), **o)
  configs = {
      "v2-sst2-len4": sst2(**{"prompt.length": 4}),
      "v2-cb-len2": small(tiny_mlm(p_tuning_v2.get_config("task=cb,data=local")), **{"prompt.length": 2}),
      "classifier-sst2": sst2(**{"prompt.method": "classifier"}),
  }
  bank = saved_bank(tmp_path, sst2(), configs)
  per_prompt = {name: eval_records(config, 3) for name, config in configs.items()}
  assert bank.labels.columns == ((0, 1), (2, 3, 4), (5, 6))
  _assert_each_as_alone(bank, _interleaved(per_prompt), per_prompt)


def test_p_tuning_prompts_mixed_batch_equals_each_prompt_alone(tmp_path):
  """P-tuning v1 on a decoder: prompt encoders collapsed into the embeddings they produce, 5 and 2
  pseudo tokens at their templates' markers, beside a prompt with prefixes only. Loaded from the
  exports and from one checkpoint step."""
  p_tuning = CASES["p_tuning-llama"]
  configs = {
      "p_tuning5": p_tuning(**{"prompt.encoder": "mlp"}),
      "p_tuning2": p_tuning(**{"task.template": "[P0] {sentence} [P1] Sentiment:", "prompt.encoder": "mlp"}),
      "prefix2": CASES["prefix_tuning-llama"](**{"prompt.length": 2}),
  }
  within = {"p_tuning5": "prompts/best.npy", "p_tuning2": "prompts/best.npy", "prefix2": "checkpoints/1"}
  bank = saved_bank(tmp_path, p_tuning(), configs, within)
  assert bank.method.soft_length == 5 and [p.parts.soft_length for p in bank.prompts] == [5, 2, 0]
  assert bank.input_buckets == (32, 64, 128)  # markers sit in the templates: no slots are added
  assert [p.where for p in bank.prompts] == [str(tmp_path / name / path) for name, path in within.items()]
  per_prompt = {name: eval_records(config, 2) for name, config in configs.items()}
  _assert_each_as_alone(bank, _interleaved(per_prompt), per_prompt)


def test_markers_and_inserted_prompts_share_a_bank_and_each_row_is_its_own_prompts_length(tmp_path):
  """P-tuning's pseudo tokens at their markers beside soft prompts inserted before and after the
  input, mixed: each as alone. A row carries its own prompt's soft tokens, not the bank's longest:
  a request for the 2-token prompt runs in a narrower bucket than the same record for the 12."""
  llama = lambda **o: CASES["prefix_tuning-llama"](**{"prompt.method": "prompt_tuning", **o})
  configs = {
      "p_tuning5": CASES["p_tuning-llama"](**{"prompt.encoder": "mlp"}),
      "prompt2": llama(**{"prompt.length": 2}),
      "prompt12-suffix": llama(**{"prompt.length": 12, "prompt.placement": "suffix"}),
  }
  bank = saved_bank(tmp_path, llama(**{"data.bucket_lengths": tuple(range(8, 129, 8))}), configs)
  assert bank.input_buckets == tuple(range(20, 141, 8))  # each widened by the longest inserted prompt
  per_prompt = {name: eval_records(config, 3) for name, config in configs.items()}
  _assert_each_as_alone(bank, _interleaved(per_prompt), per_prompt)
  widths, step = [], bank.eval_step
  bank.eval_step = lambda tables, frozen, batch, *labels: widths.append(batch["inputs"].shape[1]) or step(
      tables, frozen, batch, *labels)
  record = per_prompt["prompt2"][0]
  for name in ("prompt2", "prompt12-suffix"):
    serve(bank, [Request(name, record)])
  (feature,) = render(bank, [Request("prompt2", record)])
  expected = [min(b for b in bank.input_buckets if b >= len(feature.inputs) + slots) for slots in (2, 12)]
  assert widths == expected and widths[0] < widths[1]


def test_quantised_backbone_bank_mixed_batch_equals_each_prompt_alone(tmp_path):
  """A bank on a 4-bit decoder (config.model.quantization=nf4): the bank's backbone keeps its
  kernels quantised, and a mixed batch still gives each prompt what it gives alone."""
  llama = lambda **o: CASES["prefix_tuning-llama"](**{"model.quantization": "nf4", **o})
  configs = {"prompt4": llama(**{"prompt.method": "prompt_tuning", "prompt.length": 4}), "prefix3": llama()}
  bank = saved_bank(tmp_path, llama(), configs)
  schemes = {x.scheme for x in jax.tree.leaves(bank.exp.frozen, is_leaf=lambda x: isinstance(x, QuantizedKernel))
             if isinstance(x, QuantizedKernel)}
  assert schemes == {"nf4"}
  per_prompt = {name: eval_records(config, 3) for name, config in configs.items()}
  _assert_each_as_alone(bank, _interleaved(per_prompt), per_prompt)
