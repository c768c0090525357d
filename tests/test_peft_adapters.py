"""PEFT adapters: our exported prompts load with `peft.PeftModel.from_pretrained` and give our
logits on the transformers model of the same weights; adapters PEFT saved give PEFT's logits here."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np
import peft
import pytest
import torch
import transformers

from jaxprompt import experiment, peft_adapters
from jaxprompt.backbones import FAMILIES, Backbone
from jaxprompt.checkpoint import load_export
from jaxprompt.evaluation import load_prompt_params
from jaxprompt.models.bert_config import BertConfig
from jaxprompt.models.llama import Llama
from jaxprompt.models.llama_config import LlamaConfig
from jaxprompt.models.t5 import T5
from jaxprompt.models.t5_config import T5Config
from jaxprompt.prompts import initializers
from jaxprompt.prompts.p_tuning import PromptEncoder
from jaxprompt.prompts.prefix_tuning import AttentionShape, PrefixTuning
from jaxprompt.prompts.soft_prompt import SoftPrompt
from jaxprompt.training import train_and_evaluate
from jaxprompt.weights.hf_export import export_hf
from jaxprompt.weights.llama_loader import load_llama
from jaxprompt.weights.t5_loader import load_t5
from tests.models import llama_reference, t5_reference
from tests.run_configs import cli_overrides, tiny_config

REPO = Path(__file__).resolve().parents[1]
P, PREFIX_HIDDEN = 5, 12


@dataclasses.dataclass
class Reference:
  """A random transformers model, the same weights as our backbone, and inputs for both."""

  hf_model: transformers.PreTrainedModel
  backbone: Backbone
  inputs: dict[str, np.ndarray]


def _t5_inputs() -> dict[str, np.ndarray]:
  rng = np.random.default_rng(0)
  ids, mask = t5_reference.padded_batch(rng, [9, 6, 3], 9)
  dec, dec_mask = t5_reference.padded_batch(rng, [4, 2, 3], 4)
  dec[:, 0] = 0  # the decoder start token
  return {"input_ids": ids, "attention_mask": mask, "decoder_input_ids": dec, "decoder_attention_mask": dec_mask}


def _t5(tmp_path: Path, variant: t5_reference.Variant = t5_reference.V1_0) -> Reference:
  """v1.0's 3 decoder layers by default: PEFT hands decoder layer j the stored prefix 2j mod 3, a
  permutation; with v1.1's 2 layers, both layers get stored prefix 0."""
  hf_model = t5_reference.make_hf_t5(variant)
  config, frozen = load_t5(str(t5_reference.save_hf(hf_model, tmp_path / "hf")), param_dtype="float32", dtype="float32")
  return Reference(hf_model, Backbone(FAMILIES["t5"], config, frozen, None, None), _t5_inputs())


def _llama(tmp_path: Path) -> Reference:
  hf_model = llama_reference.make_hf_llama()
  hf_model.save_pretrained(tmp_path / "hf")
  config, frozen = load_llama(str(tmp_path / "hf"), param_dtype="float32", dtype="float32")
  # Right padding: PEFT passes no position ids, and transformers numbers every slot.
  ids, mask = t5_reference.padded_batch(np.random.default_rng(0), [8, 5, 3], 8, low=3)
  inputs = {"input_ids": ids, "attention_mask": mask}
  return Reference(hf_model, Backbone(FAMILIES["llama"], config, frozen, None, None), inputs)


REFERENCES = {"t5": _t5, "t5-even": lambda tmp_path: _t5(tmp_path, t5_reference.V1_1), "llama": _llama}


def _ours(ref: Reference, method: nn.Module, params) -> np.ndarray:
  """Our logits at the positions PEFT returns (a decoder's soft tokens dropped)."""
  x, config = ref.inputs, ref.backbone.config
  prompt = method.apply({"params": params}, {"input_mask": x["attention_mask"]})
  if isinstance(config, T5Config):
    return np.asarray(T5(config).apply(ref.backbone.frozen, x["input_ids"], x["attention_mask"], x["decoder_input_ids"],
                                       x["decoder_attention_mask"], prompt=prompt))
  logits = Llama(config).apply(ref.backbone.frozen, x["input_ids"], x["attention_mask"], prompt,
                               method=Llama.forward_logits)
  return np.asarray(logits)[:, -x["input_ids"].shape[1]:]


def _peft(model, ref: Reference) -> np.ndarray:
  """PEFT's logits at the token positions (a decoder's prompt tuning returns the soft tokens' too)."""
  with torch.no_grad():
    logits = model(**{k: torch.tensor(v, dtype=torch.long) for k, v in ref.inputs.items()}).logits.numpy()
  return logits[:, -_scored(ref).shape[1]:]


def _scored(ref: Reference) -> np.ndarray:
  """Which positions' logits are compared: the decoder's tokens on T5, the input's on a decoder."""
  return ref.inputs.get("decoder_attention_mask", ref.inputs["attention_mask"]).astype(bool)


def _assert_same_logits(ours: np.ndarray, theirs: np.ndarray, ref: Reference) -> None:
  """Equal where a token is (padded slots differ in what they attend, and nothing reads them)."""
  valid = _scored(ref)
  assert ours.shape == theirs.shape
  np.testing.assert_allclose(ours[valid], theirs[valid], atol=1e-4, rtol=1e-4)


def _init(method: nn.Module, seed: int = 0):
  """Random params of a method (the batch holds the keys a method's init reads)."""
  batch = {"input_mask": np.ones((1, 4), bool), "soft_positions": np.full((1, 4), -1, np.int32)}
  return nn.meta.unbox(method.init(jax.random.key(seed), batch)["params"])


def _soft_prompt(ref: Reference) -> SoftPrompt:
  return SoftPrompt(P, ref.backbone.embed_dim, initializers.uniform(0.5))


def _prefix(ref: Reference, reparam: int = 0, kinds: tuple[str, ...] | None = None) -> PrefixTuning:
  """Prefixes where PEFT puts them on this backbone, unless `kinds` says otherwise."""
  kinds = kinds or (peft_adapters.placement_of(ref.backbone).prefix_kind,)
  return PrefixTuning(P, ref.backbone.attention_shapes(kinds, "kinds"), ref.backbone.embed_dim, reparam)


@pytest.mark.parametrize("family", ["t5", "llama"])
def test_exported_prompt_tuning_gives_our_logits_in_peft(tmp_path, family):
  ref = REFERENCES[family](tmp_path)
  method = _soft_prompt(ref)
  params = _init(method)
  config = peft_adapters.export_adapter(method, params, ref.backbone, tmp_path / "adapter", "some/base")
  assert config["base_model_name_or_path"] == "some/base"
  model = peft.PeftModel.from_pretrained(ref.hf_model, tmp_path / "adapter").eval()
  assert model.peft_config["default"].peft_type == peft.PeftType.PROMPT_TUNING
  _assert_same_logits(_ours(ref, method, params), _peft(model, ref), ref)


@pytest.mark.parametrize("family,reparam", [("llama", 0), ("llama", PREFIX_HIDDEN), ("t5", 0), ("t5", PREFIX_HIDDEN)],
                         ids=["llama-plain", "llama-mlp", "t5-plain", "t5-mlp"])
def test_exported_prefix_tuning_gives_our_logits_in_peft(tmp_path, family, reparam):
  """Reparameterised prefixes are exported collapsed; our logits come from the MLP itself. On T5
  PEFT's prefixes are decoder self-attention prefixes: cross-attention ones would change the logits."""
  ref = REFERENCES[family](tmp_path)
  method = _prefix(ref, reparam)
  params = _init(method)
  config = peft_adapters.export_adapter(method, params, ref.backbone, tmp_path / "adapter")
  assert config["prefix_projection"] is False
  model = peft.PeftModel.from_pretrained(ref.hf_model, tmp_path / "adapter").eval()
  theirs = _peft(model, ref)
  _assert_same_logits(_ours(ref, method, params), theirs, ref)
  if family == "t5":  # the same prefixes in cross-attention too are not what PEFT runs
    both = _prefix(ref, reparam, ("decoder_self", "decoder_cross"))
    both_params = {**_init(both, seed=1), "decoder_self": params["decoder_self"]}
    assert np.abs(_ours(ref, both, both_params) - theirs).max() > 1e-2


@pytest.mark.parametrize("family,peft_config", [
    ("t5", peft.PromptTuningConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=P)),  # 2P rows, PEFT's default
    ("llama", peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=P)),
    ("llama", peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=P, prefix_projection=True,
                                      encoder_hidden_size=PREFIX_HIDDEN)),
    ("t5-even", peft.PrefixTuningConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=P)),  # PEFT's default layers
    ("llama", peft.PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=P, encoder_hidden_size=PREFIX_HIDDEN)),
], ids=["t5-prompt", "llama-prompt", "llama-prefix-mlp", "t5-prefix", "llama-p-tuning"])
def test_adapter_saved_by_peft_gives_peft_logits_here(tmp_path, family, peft_config):
  ref = REFERENCES[family](tmp_path)
  model = peft.get_peft_model(ref.hf_model, peft_config).eval()
  model.save_pretrained(tmp_path / "adapter")
  method_name, arrays = peft_adapters.import_adapter(tmp_path / "adapter", ref.backbone)
  method = _soft_prompt(ref) if method_name == "prompt_tuning" else _prefix(ref)
  _assert_same_logits(_ours(ref, method, method.params_from_export(arrays)), _peft(model, ref), ref)


def _t5_backbone(**changes) -> Backbone:
  config = T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_heads=4, num_encoder_layers=2,
                    num_decoder_layers=3, dtype="float32", param_dtype="float32").replace(**changes)
  return Backbone(FAMILIES["t5"], config, {}, None, None)


def _llama_backbone(**changes) -> Backbone:
  config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                       num_kv_heads=2, head_dim=8).replace(**changes)
  return Backbone(FAMILIES["llama"], config, {}, None, None)


@pytest.mark.parametrize("make_backbone,method", [
    (_t5_backbone, SoftPrompt(P, 32, initializers.uniform(0.5))),
    (_llama_backbone, SoftPrompt(P, 32, initializers.uniform(0.5))),
    (_t5_backbone, PrefixTuning(P, (AttentionShape("decoder_self", 3, 4, 8),), 32, PREFIX_HIDDEN)),
    (_llama_backbone, PrefixTuning(P, (AttentionShape("encoder_self", 2, 2, 8),), 32)),
], ids=["t5-prompt", "llama-prompt", "t5-prefix-mlp", "llama-prefix"])
def test_export_then_import_is_exact(tmp_path, make_backbone, method):
  params = _init(method)
  peft_adapters.export_adapter(method, params, make_backbone(), tmp_path)
  name, arrays = peft_adapters.import_adapter(tmp_path, make_backbone())
  assert name == ("prompt_tuning" if isinstance(method, SoftPrompt) else "prefix_tuning")
  want = method.export(params)
  assert sorted(arrays) == sorted(want)
  for key, value in want.items():
    assert arrays[key].dtype == np.float32 and arrays[key].tobytes() == value.tobytes()


def test_import_names_the_file_and_both_shapes(tmp_path):
  prompt = SoftPrompt(P, 32, initializers.uniform(0.5))
  peft_adapters.export_adapter(prompt, _init(prompt), _t5_backbone(), tmp_path / "pt")
  with pytest.raises(ValueError, match=r"adapter_model\.safetensors.*\(5, 32\).*\(5, 48\)"):
    peft_adapters.import_adapter(tmp_path / "pt", _t5_backbone(d_model=48))

  prefix = PrefixTuning(P, (AttentionShape("encoder_self", 2, 2, 8),), 32)
  peft_adapters.export_adapter(prefix, _init(prefix), _llama_backbone(), tmp_path / "pre")
  with pytest.raises(ValueError, match=r"adapter_config\.json.*\(2, 2, 16\).*\(3, 2, 16\)"):
    peft_adapters.import_adapter(tmp_path / "pre", _llama_backbone(num_layers=3))
  with pytest.raises(ValueError, match=r"task_type 'CAUSAL_LM'.*'SEQ_2_SEQ_LM'"):
    peft_adapters.import_adapter(tmp_path / "pre", _t5_backbone())

  config = json.loads((tmp_path / "pt" / "adapter_config.json").read_text())
  (tmp_path / "pt" / "adapter_config.json").write_text(json.dumps({**config, "peft_type": "LORA"}))
  with pytest.raises(ValueError, match=r"adapter_config\.json: peft_type 'LORA'"):
    peft_adapters.import_adapter(tmp_path / "pt", _t5_backbone())


def test_what_peft_cannot_represent_is_refused(tmp_path):
  def refused(method, backbone, match):
    with pytest.raises(ValueError, match=match):
      peft_adapters.export_adapter(method, _init(method), backbone, tmp_path)

  refused(SoftPrompt(P, 32, initializers.uniform(0.5), "after_bos"), _llama_backbone(), "placement 'after_bos'")
  refused(PrefixTuning(P, (AttentionShape("encoder_self", 2, 4, 8),), 32), _t5_backbone(),
          r"\('encoder_self',\).*'decoder_self' only")
  refused(PrefixTuning(P, (AttentionShape("decoder_self", 3, 4, 8), AttentionShape("decoder_cross", 3, 4, 8)), 32),
          _t5_backbone(), "decoder_cross")
  even = PrefixTuning(P, (AttentionShape("decoder_self", 2, 4, 8),), 32)  # layers 0 and 1 would share a prefix
  refused(even, _t5_backbone(num_decoder_layers=2), r"PEFT gives layers 0 and 1 \(of 2\) one stored prefix")
  refused(PromptEncoder(P, 32, "mlp"), _t5_backbone(), r"p_tuning places its pseudo tokens at the template's \[Pi\]")
  with pytest.raises(ValueError, match="the run trains no prompt"):
    peft_adapters.export_adapter(None, {}, _t5_backbone(), tmp_path)
  bert = Backbone(FAMILIES["bert"], BertConfig(hidden_size=32, num_heads=4, num_layers=2), {}, None, None)
  refused(SoftPrompt(P, 32, initializers.uniform(0.5)), bert, "no PEFT adapter for a bert backbone")
  assert not list(tmp_path.iterdir())  # nothing written


def test_cli_exports_a_trained_workdir_that_peft_loads(tmp_path):
  # One step of the tiny T5 recipe, otherwise as tests/test_train.py runs it (its compiled steps are cached).
  config = tiny_config(num_steps=1, eval_every=1, checkpoint_every=1)
  train_and_evaluate(config, str(tmp_path / "run"))
  flags = cli_overrides(config, ["model.tokenizer", "mesh.data", "mesh.fsdp"])  # what building the run reads
  command = [sys.executable, "-m", "jaxprompt.peft_export",
             "--config=configs/t5_prompt.py:size=tiny,task=sst2,data=local", *flags,
             f"--prompt={tmp_path / 'run'}", f"--out={tmp_path / 'adapter'}"]
  result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert json.loads(result.stdout)["adapter"] == str(tmp_path / "adapter")

  exp = experiment.build(config)
  method, params, _, _ = load_prompt_params(exp, str(tmp_path / "run"))
  export_hf(exp.backbone.config, exp.frozen, tmp_path / "hf")
  model = peft.PeftModel.from_pretrained(transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / "hf"),
                                         tmp_path / "adapter").eval()
  ref = Reference(model, exp.backbone, _t5_inputs())
  _assert_same_logits(_ours(ref, method, jax.device_get(params)), _peft(model, ref), ref)

  # And back: the adapter as an exported prompt, which evaluate takes with the overrides printed.
  imported = peft_adapters.import_run(config, str(tmp_path / "adapter"), str(tmp_path / "imported"))
  assert f"--config.prompt.length={config.prompt.length}" in imported["config"]
  best = load_export(tmp_path / "run" / "prompts" / "best.npy")["embeddings"]
  assert load_export(imported["prompt"])["embeddings"].tobytes() == best.tobytes()
  load_prompt_params(exp, imported["prompt"])  # fits the run
