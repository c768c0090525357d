"""`scan_layers="auto"`: unrolled at CPU sizes, scanned at pod sizes; what the run config accepts."""

from __future__ import annotations

import pytest
from absl import flags
from flax import traverse_util
from ml_collections import config_flags

from jaxprompt import experiment
from jaxprompt.checkpoint import CheckpointMismatchError, backbone_fingerprint, check_compatible
from jaxprompt.backbones.base import run_fields
from jaxprompt.models.albert_config import AlbertConfig
from jaxprompt.models.bert_config import BertConfig
from jaxprompt.models.llama_config import LlamaConfig
from jaxprompt.models.t5_config import T5Config
from jaxprompt.weights.t5_loader import load_t5
from tests.models import t5_reference
from tests.run_configs import tiny_config


@pytest.mark.parametrize("size,scanned", [("small", False), ("base", False), ("large", True), ("xl", True), ("xxl", True)])
def test_auto_unrolls_t5_up_to_base_and_scans_from_large(size, scanned):
  assert T5Config.preset(size, scan_layers="auto").scan_layers is scanned


def test_auto_counts_each_family_s_own_layer_weights():
  smollm2_135m = LlamaConfig(scan_layers="auto")  # the defaults: 30 layers, 576 wide
  llama_7b = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_layers=32, num_heads=32, num_kv_heads=32,
                         head_dim=128, scan_layers="auto")
  assert (smollm2_135m.scan_layers, llama_7b.scan_layers) == (False, True)
  assert round(llama_7b.stack_weights / 1e9, 2) == 6.48  # Llama-2-7B's 6.74B less its two embedding tables
  assert BertConfig(hidden_size=1024, intermediate_size=4096, num_layers=24, num_heads=16, scan_layers="auto").scan_layers is False
  # ALBERT-xxlarge shares one layer's weights, but the scan's cost is per application: 12 of 0.2B.
  albert_xxl = AlbertConfig(hidden_size=4096, intermediate_size=16384, num_layers=12, num_heads=64, scan_layers="auto")
  assert albert_xxl.scan_layers is True


def test_an_explicit_choice_is_kept_and_replace_resolves_auto_again():
  assert T5Config.preset("xxl", scan_layers=False).scan_layers is False
  assert T5Config.preset("small", scan_layers=True).scan_layers is True
  assert T5Config.preset("small", scan_layers=True).replace(scan_layers="auto").scan_layers is False


def test_a_bad_value_names_the_config_key():
  config = tiny_config()
  config.model.scan_layers = "yes"
  with pytest.raises(ValueError, match=r"config.model.scan_layers='yes': use True .* False .* 'auto'"):
    run_fields(config.model)
  with pytest.raises(ValueError, match=r"T5Config.scan_layers='sometimes'"):
    T5Config(scan_layers="sometimes")


def test_the_run_config_takes_a_bool_in_python_and_on_the_command_line():
  config = tiny_config()
  assert config.model.scan_layers == "auto"
  config.model.scan_layers = False  # a bool into the "auto" default: no type error
  assert config.model.scan_layers is False
  flag_values = flags.FlagValues()
  argv = ["prog", "--config=configs/t5_prompt.py", "--config.model.scan_layers=True"]
  config_flags.DEFINE_config_file("config", flag_values=flag_values, sys_argv=argv)
  flag_values(argv)
  assert flag_values.config.model.scan_layers is True


def _has_layer_axis(exp) -> bool:
  paths = traverse_util.flatten_dict(exp.frozen["params"], sep="/")
  return any("/layers/" in path for path in paths)


def test_a_run_s_weights_take_the_layout_auto_chose():
  auto = experiment.build(tiny_config())
  assert auto.backbone.config.scan_layers is False and not _has_layer_axis(auto)
  config = tiny_config()
  config.model.scan_layers = True
  scanned = experiment.build(config)
  assert scanned.backbone.config.scan_layers is True and _has_layer_axis(scanned)


def test_a_prompt_s_backbone_check_passes_across_layouts_and_still_catches_other_weights(tmp_path):
  """Prompts saved on one layout restore onto the other (what "auto" changed for saved runs): the
  fingerprint names a scanned stack's layers as the unrolled layout does; other weights still fail."""
  directory = t5_reference.save_hf(t5_reference.make_hf_t5(t5_reference.V1_1), tmp_path / "hf")
  other = t5_reference.save_hf(t5_reference.make_hf_t5(t5_reference.V1_1, seed=1), tmp_path / "other")
  meta = lambda fingerprint: {"trainable": [], "method": "prompt_tuning", "param_shapes": {}, "fingerprint": fingerprint}
  fingerprint = lambda path, scan: meta(backbone_fingerprint(*load_t5(str(path), scan_layers=scan, dtype="float32", param_dtype="float32")))
  scanned, unrolled = fingerprint(directory, True), fingerprint(directory, False)
  assert scanned["fingerprint"]["tensor_sums"].keys() == unrolled["fingerprint"]["tensor_sums"].keys()
  assert "decoder/layers_1/mlp/wi_0/kernel" in scanned["fingerprint"]["tensor_sums"]
  check_compatible(scanned, unrolled, "a checkpoint")
  check_compatible(unrolled, scanned, "a checkpoint")
  with pytest.raises(CheckpointMismatchError, match="backbone weights differ at"):
    check_compatible(scanned, fingerprint(other, False), "a checkpoint")


def test_trained_weights_of_the_other_layout_say_which_scan_layers_resumes_them():
  saved = {"trainable": ["encoder/layers/mlp/wi_0/kernel"], "method": "none", "param_shapes": {},
           "fingerprint": {"config": {}, "tensor_sums": {}}}
  current = {**saved, "trainable": ["encoder/layers_0/mlp/wi_0/kernel", "encoder/layers_1/mlp/wi_0/kernel"]}
  with pytest.raises(CheckpointMismatchError, match=r"scanned; set config.model.scan_layers=True to resume it"):
    check_compatible(saved, current, "a checkpoint")
