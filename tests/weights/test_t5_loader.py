"""Loading T5 checkpoints: every HF format and the Hub give the same params; bad checkpoints fail whole."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import torch
from transformers.models.t5.modeling_t5 import T5LayerNorm

from jaxprompt.models.t5_config import T5Config
from jaxprompt.weights import placement
from jaxprompt.weights.t5_loader import load_t5
from tests.models import t5_reference as ref


@pytest.fixture(scope="module")
def hf_model():
  return ref.make_hf_t5(ref.V1_1)


@pytest.fixture(scope="module")
def safetensors_dir(hf_model, tmp_path_factory):
  return ref.save_hf(hf_model, tmp_path_factory.mktemp("safetensors"))


@pytest.fixture(scope="module")
def reference_params(safetensors_dir):
  return load_t5(str(safetensors_dir), param_dtype="float32")[1]


def _assert_same_params(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


def _write_config(model, directory: Path) -> Path:
  directory.mkdir(parents=True, exist_ok=True)
  model.config.to_json_file(directory / "config.json")
  return directory


def _split_in_two(state: dict, directory: Path, stem: str, ext: str, save) -> None:
  """Two shards and a HF index (`*.index.json`), as transformers writes for large models."""
  names = list(state)
  halves = {f"{stem}-00001-of-00002.{ext}": names[: len(names) // 2], f"{stem}-00002-of-00002.{ext}": names[len(names) // 2 :]}
  for filename, keys in halves.items():
    save({k: state[k] for k in keys}, directory / filename)
  weight_map = {k: filename for filename, keys in halves.items() for k in keys}
  (directory / f"{stem}.{ext}.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def _hf_flax_state(model) -> dict:
  """HF's PyTorch -> Flax convention: Linear weight -> transposed `kernel`, Embedding -> `embedding`."""
  flat = {}
  for module_name, module in model.named_modules():
    path = tuple(module_name.split("."))
    if isinstance(module, torch.nn.Linear):
      flat[path + ("kernel",)] = module.weight.detach().numpy().T
    elif isinstance(module, torch.nn.Embedding) and "embed_tokens" not in module_name:
      flat[path + ("embedding",)] = module.weight.detach().numpy()
    elif isinstance(module, T5LayerNorm):
      flat[path + ("weight",)] = module.weight.detach().numpy()
  return flax.traverse_util.unflatten_dict(flat)


def test_sharded_safetensors_equal_single_file(hf_model, reference_params, tmp_path):
  hf_model.save_pretrained(tmp_path, max_shard_size="100KB")
  assert (tmp_path / "model.safetensors.index.json").is_file()
  _assert_same_params(load_t5(str(tmp_path), param_dtype="float32")[1], reference_params)


@pytest.mark.parametrize("sharded", [False, True], ids=["single", "sharded"])
def test_pytorch_bin_equals_safetensors(hf_model, reference_params, tmp_path, sharded):
  directory = _write_config(hf_model, tmp_path)
  state = {k: v.contiguous() for k, v in hf_model.state_dict().items()}
  if sharded:
    _split_in_two(state, directory, "pytorch_model", "bin", lambda d, p: torch.save(d, p))
  else:
    torch.save(state, directory / "pytorch_model.bin")
  _assert_same_params(load_t5(str(directory), param_dtype="float32")[1], reference_params)


@pytest.mark.parametrize("sharded", [False, True], ids=["single", "sharded"])
def test_hf_flax_msgpack_equals_safetensors(hf_model, reference_params, tmp_path, sharded):
  directory = _write_config(hf_model, tmp_path)
  state = _hf_flax_state(hf_model)
  if sharded:
    flat = flax.traverse_util.flatten_dict(state, sep="/")
    save = lambda d, p: p.write_bytes(flax.serialization.msgpack_serialize(flax.traverse_util.unflatten_dict(d, sep="/")))
    _split_in_two(flat, directory, "flax_model", "msgpack", save)
  else:
    (directory / "flax_model.msgpack").write_bytes(flax.serialization.msgpack_serialize(state))
  _assert_same_params(load_t5(str(directory), param_dtype="float32")[1], reference_params)


def test_hub_id_loads_offline_from_the_hf_cache(safetensors_dir, reference_params, tmp_path):
  commit = "0123456789abcdef0123456789abcdef01234567"
  repo = tmp_path / "models--google--t5-tiny-test"
  snapshot = repo / "snapshots" / commit
  snapshot.mkdir(parents=True)
  for name in ("config.json", "model.safetensors"):
    shutil.copy(safetensors_dir / name, snapshot / name)
  (repo / "refs").mkdir()
  (repo / "refs" / "main").write_text(commit)
  _, params = load_t5("google/t5-tiny-test", param_dtype="float32", cache_dir=str(tmp_path))
  _assert_same_params(params, reference_params)


def test_params_are_cast_to_the_requested_dtype(safetensors_dir, reference_params):
  config, params = load_t5(str(safetensors_dir))  # bf16 by default: frozen weights
  assert config.param_dtype == "bfloat16"
  assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype(jnp.bfloat16)}
  np.testing.assert_array_equal(
      params["params"]["token_embedder"]["embedding"],
      reference_params["params"]["token_embedder"]["embedding"].astype(jnp.bfloat16),
  )


def test_host_memory_stays_near_one_tensor(tmp_path):
  """Streaming: numpy never holds more than about one param's data, not the checkpoint."""
  rng = np.random.default_rng(0)
  config = T5Config(vocab_size=8192, d_model=256, d_kv=32, d_ff=1024, num_heads=8,
                    num_encoder_layers=4, num_decoder_layers=4)
  hf = {"model_type": "t5", "vocab_size": 8192, "d_model": 256, "d_kv": 32, "d_ff": 1024, "num_heads": 8,
        "num_layers": 4, "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False}
  (tmp_path / "config.json").write_text(json.dumps(hf))
  from jaxprompt.weights.t5_names import t5_param_sources
  from jaxprompt.sharding import param_targets
  from jaxprompt.weights.t5_loader import abstract_t5_params

  targets = param_targets(abstract_t5_params(config), None)
  tensors = {}
  for path, src in t5_param_sources(config, "hf").items():
    for name in src.names:
      tensors[name] = rng.standard_normal(src.file_shape(targets[path].shape), dtype=np.float32)
  safetensors.numpy.save_file(tensors, tmp_path / "model.safetensors")
  total = sum(t.nbytes for t in tensors.values())
  largest = max(t.nbytes for t in tensors.values())
  del tensors

  # Measured in a fresh process: tracemalloc counts every thread's allocations, and this one may
  # still run other tests' data-prefetch threads.
  measure = (
      "import tracemalloc, sys; from jaxprompt.weights.t5_loader import load_t5; tracemalloc.start(); "
      "load_t5(sys.argv[1], param_dtype='bfloat16'); print(tracemalloc.get_traced_memory()[1])"
  )
  result = subprocess.run([sys.executable, "-c", measure, str(tmp_path)], capture_output=True, text=True, check=True)
  peak = int(result.stdout.split()[-1])
  # Reading the checkpoint whole would be >= total; building the bf16 model whole in numpy >= total/2.
  # What streaming holds is about one param (<= 8.4 MB here) plus fixed tracing overhead (~7 MB).
  assert total > 50e6 and largest < 0.2 * total
  assert peak < 0.4 * total, (peak, largest, total)


def _corrupt(safetensors_dir: Path, tmp_path: Path, edit) -> Path:
  shutil.copy(safetensors_dir / "config.json", tmp_path / "config.json")
  tensors = safetensors.numpy.load_file(safetensors_dir / "model.safetensors")
  edit(tensors)
  safetensors.numpy.save_file(tensors, tmp_path / "model.safetensors")
  return tmp_path


def test_shape_mismatch_names_the_tensor_and_both_shapes(safetensors_dir, tmp_path, monkeypatch):
  name = "decoder.block.1.layer.2.DenseReluDense.wi_1.weight"
  directory = _corrupt(safetensors_dir, tmp_path, lambda t: t.update({name: np.zeros((48, 32), np.float32)}))
  monkeypatch.setattr(placement, "build_param", _never_called)  # nothing partial is loaded
  with pytest.raises(placement.CheckpointMismatchError) as e:
    load_t5(str(directory))
  message = str(e.value)
  assert f"tensor '{name}' has shape (48, 32)" in message
  assert "decoder/layers/mlp/wi_1/kernel of shape (2, 32, 64) needs (64, 32)" in message


def test_missing_tensor_is_named(safetensors_dir, tmp_path, monkeypatch):
  directory = _corrupt(safetensors_dir, tmp_path, lambda t: t.pop("lm_head.weight"))
  (directory / "config.json").write_text(
      json.dumps({**json.loads((directory / "config.json").read_text()), "tie_word_embeddings": False})
      .replace('"scale_decoder_outputs": false,', "")
  )
  monkeypatch.setattr(placement, "build_param", _never_called)
  with pytest.raises(placement.CheckpointMismatchError, match=r"missing tensor 'lm_head.weight' \(for param decoder/logits_dense/kernel\)"):
    load_t5(str(directory))


def test_unknown_architecture_says_what_is_supported(safetensors_dir, tmp_path):
  shutil.copy(safetensors_dir / "model.safetensors", tmp_path / "model.safetensors")
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
  with pytest.raises(ValueError, match=r"model_type='llama'.*LlamaForCausalLM.*supported: \('t5', 'mt5'\)"):
    load_t5(str(tmp_path))


def test_missing_checkpoint_errors_are_clear(tmp_path):
  with pytest.raises(FileNotFoundError, match="no weights found in .*model.safetensors"):
    load_t5(str(tmp_path))
  with pytest.raises(FileNotFoundError, match="could not get weights for 'google/no-such-model'"):
    load_t5("google/no-such-model", cache_dir=str(tmp_path))


def _never_called(*args, **kwargs):
  raise AssertionError("a param was loaded before the checkpoint was checked")
