"""Loading BERT checkpoints: every layout and the Hub give the same params; bad checkpoints fail whole."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers

from jaxprompt.weights import placement
from jaxprompt.weights.bert_loader import load_bert
from tests.models import bert_reference as ref


@pytest.fixture(scope="module")
def hf_model():
  return ref.make_hf(ref.BERT)


@pytest.fixture(scope="module")
def safetensors_dir(hf_model, tmp_path_factory):
  return ref.save_hf(hf_model, tmp_path_factory.mktemp("safetensors"))


@pytest.fixture(scope="module")
def reference_params(safetensors_dir):
  return load_bert(str(safetensors_dir), param_dtype="float32")[1]


def _assert_same_params(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


def test_sharded_safetensors_equal_single_file(hf_model, reference_params, tmp_path):
  hf_model.save_pretrained(tmp_path, max_shard_size="20KB")
  assert (tmp_path / "model.safetensors.index.json").is_file()
  _assert_same_params(load_bert(str(tmp_path), param_dtype="float32")[1], reference_params)


def test_pytorch_bin_equals_safetensors(hf_model, reference_params, tmp_path):
  hf_model.config.to_json_file(tmp_path / "config.json")
  torch.save({k: v.contiguous() for k, v in hf_model.state_dict().items()}, tmp_path / "pytorch_model.bin")
  _assert_same_params(load_bert(str(tmp_path), param_dtype="float32")[1], reference_params)


def test_unrolled_layers_read_the_same_tensors(safetensors_dir, reference_params):
  config, params = load_bert(str(safetensors_dir), param_dtype="float32", scan_layers=False)
  assert not config.scan_layers
  scanned = reference_params["params"]["encoder"]["layers"]
  for i in range(2):
    _assert_same_params(params["params"]["encoder"][f"layers_{i}"], jax.tree.map(lambda x: x[i], scanned))


def test_prefixed_checkpoint_equals_bare_and_logs_unused_heads(hf_model, reference_params, tmp_path, caplog):
  """A BertForSequenceClassification ("bert." names) holds the same backbone; its classifier is unused."""
  classifier = transformers.BertForSequenceClassification(hf_model.config)
  classifier.bert.load_state_dict(hf_model.state_dict())
  classifier.save_pretrained(tmp_path)
  with caplog.at_level(logging.WARNING, logger="jaxprompt.weights.bert_loader"):
    config, params = load_bert(str(tmp_path), param_dtype="float32")
  assert config.has_pooler and not config.has_mlm_head
  _assert_same_params(params, reference_params)
  assert "2 tensors not used by the BERT backbone: ['classifier.bias', 'classifier.weight']" in caplog.text


def test_tensorflow_era_gamma_beta_names(safetensors_dir, reference_params, tmp_path):
  tensors = safetensors.numpy.load_file(safetensors_dir / "model.safetensors")
  renamed = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v for k, v in tensors.items()}
  assert renamed.keys() != tensors.keys()
  safetensors.numpy.save_file(renamed, tmp_path / "model.safetensors")
  shutil.copy(safetensors_dir / "config.json", tmp_path / "config.json")
  _assert_same_params(load_bert(str(tmp_path), param_dtype="float32")[1], reference_params)


def test_hub_id_loads_offline_from_the_hf_cache(safetensors_dir, reference_params, tmp_path):
  commit = "0123456789abcdef0123456789abcdef01234567"
  repo = tmp_path / "models--sentence-transformers--bert-tiny-test"
  snapshot = repo / "snapshots" / commit
  snapshot.mkdir(parents=True)
  for name in ("config.json", "model.safetensors"):
    shutil.copy(safetensors_dir / name, snapshot / name)
  (repo / "refs").mkdir()
  (repo / "refs" / "main").write_text(commit)
  _, params = load_bert("sentence-transformers/bert-tiny-test", param_dtype="float32", cache_dir=str(tmp_path))
  _assert_same_params(params, reference_params)


def test_params_are_cast_to_the_requested_dtype(safetensors_dir, reference_params):
  config, params = load_bert(str(safetensors_dir))  # bf16 by default: frozen weights
  assert config.param_dtype == "bfloat16"
  assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype(jnp.bfloat16)}
  np.testing.assert_array_equal(
      params["params"]["token_embedder"]["embedding"],
      reference_params["params"]["token_embedder"]["embedding"].astype(jnp.bfloat16),
  )


def _corrupt(safetensors_dir: Path, tmp_path: Path, edit) -> Path:
  shutil.copy(safetensors_dir / "config.json", tmp_path / "config.json")
  tensors = safetensors.numpy.load_file(safetensors_dir / "model.safetensors")
  edit(tensors)
  safetensors.numpy.save_file(tensors, tmp_path / "model.safetensors")
  return tmp_path


def test_shape_mismatch_names_the_tensor_and_both_shapes(safetensors_dir, tmp_path, monkeypatch):
  name = "encoder.layer.1.attention.self.query.bias"
  directory = _corrupt(safetensors_dir, tmp_path, lambda t: t.update({name: np.zeros((48,), np.float32)}))
  monkeypatch.setattr(placement, "build_param", _never_called)  # nothing partial is loaded
  with pytest.raises(placement.CheckpointMismatchError) as e:
    load_bert(str(directory))
  message = str(e.value)
  assert f"tensor '{name}' has shape (48,)" in message
  assert "encoder/layers/attention/query/bias of shape (2, 4, 8) needs (32,)" in message


def test_missing_tensor_is_named(safetensors_dir, tmp_path, monkeypatch):
  name = "encoder.layer.0.output.LayerNorm.weight"
  directory = _corrupt(safetensors_dir, tmp_path, lambda t: t.pop(name))
  monkeypatch.setattr(placement, "build_param", _never_called)
  with pytest.raises(placement.CheckpointMismatchError, match=rf"missing tensor '{name}' \(for param encoder/layers/mlp_norm/scale\)"):
    load_bert(str(directory))


def test_unknown_architecture_says_what_is_supported(safetensors_dir, tmp_path):
  shutil.copy(safetensors_dir / "model.safetensors", tmp_path / "model.safetensors")
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
  with pytest.raises(ValueError, match=r"model_type='llama'.*LlamaForCausalLM.*supported: \('bert', 'roberta', 'xlm-roberta'\)"):
    load_bert(str(tmp_path))


def test_unsupported_formats_and_missing_files_are_clear(safetensors_dir, tmp_path):
  with pytest.raises(FileNotFoundError, match="no weights found in .*model.safetensors"):
    load_bert(str(tmp_path))
  (tmp_path / "flax_model.msgpack").write_bytes(b"\x80")
  with pytest.raises(ValueError, match="flax_msgpack checkpoint; the BERT loader reads .* safetensors or pytorch_model.bin"):
    load_bert(str(tmp_path))
  weights_only = tmp_path / "weights_only"
  weights_only.mkdir()
  shutil.copy(safetensors_dir / "model.safetensors", weights_only / "model.safetensors")
  with pytest.raises(FileNotFoundError, match="no config.json next to it"):
    load_bert(str(weights_only))


def _never_called(*args, **kwargs):
  raise AssertionError("a param was loaded before the checkpoint was checked")
