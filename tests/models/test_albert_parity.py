"""Our ALBERT equals transformers' PyTorch ALBERT on the same weights: MLM logits, states, pooled
output, soft prompts as `inputs_embeds`, per-application prefixes; its loader and its sharding."""

from __future__ import annotations

import functools
import logging
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import torch
from jax.sharding import PartitionSpec as P

from jaxprompt import sharding
from jaxprompt.models.albert import Albert
from jaxprompt.models.albert_config import AlbertConfig
from jaxprompt.models.prompt import KVPrefix, Prompt
from jaxprompt.weights import placement
from jaxprompt.weights.albert_loader import load_albert
from tests.models import albert_reference as ref

LENGTHS = [16, 11, 4]
MAX_LEN = 16


@pytest.fixture(scope="module")
def mlm(tmp_path_factory):
  hf_model = ref.make_hf(ref.SHARED_MLM)
  return hf_model, ref.save_hf(hf_model, tmp_path_factory.mktemp("albert-mlm"))


@pytest.fixture(scope="module")
def grouped(tmp_path_factory):
  hf_model = ref.make_hf(ref.GROUPED)
  return hf_model, ref.save_hf(hf_model, tmp_path_factory.mktemp("albert-grouped"))


def _batches(vocab: int = ref.VOCAB):
  """Right- and left-padded batches of the same shape (one compile), with two segments."""
  right = ref.padded_batch(np.random.default_rng(1), LENGTHS, MAX_LEN, vocab)
  return [("right-padded", *right), ("left-padded", *ref.left_padded(LENGTHS, *right))]


def _forward(model: Albert, params, ids, mask, types, prompt=None):
  out = model.apply(params, ids, mask, types, prompt=prompt)
  logits = model.apply(params, out.hidden_BxTxD, method=Albert.mlm_logits) if model.config.has_mlm_head else None
  return out, logits


@pytest.mark.parametrize("scan_layers", [True, False], ids=["scanned", "unrolled"])
def test_mlm_logits_match_transformers(mlm, scan_layers):
  hf_model, directory = mlm
  config, params = load_albert(str(directory), param_dtype="float32", dtype="float32", scan_layers=scan_layers)
  assert (config.has_pooler, config.has_mlm_head, config.activation) == (False, True, "gelu_tanh")  # HF gelu_new
  forward = jax.jit(functools.partial(_forward, Albert(config)))
  for name, ids, mask, types in _batches():
    out, logits = forward(params, ids, mask, types)
    with torch.no_grad():
      expected = ref.hf_outputs(hf_model, ids, mask, types)[0].numpy()
    np.testing.assert_array_equal(out.mask_BxT, mask)
    assert out.pooled_BxD is None
    # Every slot, padding included: padding gets the position (and so the state) Hugging Face gives it.
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0, err_msg=name)
    assert np.abs(expected).max() > 1.0  # the comparison is not between near-zero tensors
    np.testing.assert_array_equal(np.argmax(logits, -1)[mask], np.argmax(expected, -1)[mask])


def test_shared_layer_is_stored_once(mlm):
  hf_model, directory = mlm
  _, params = load_albert(str(directory), param_dtype="float32")
  shapes = jax.tree.map(np.shape, params["params"])
  encoder = shapes["encoder"]
  assert set(encoder) == {"mapping_in", "groups_0"} and set(encoder["groups_0"]) == {"layers_0"}
  layer = encoder["groups_0"]["layers_0"]
  assert layer["attention"]["query"] == {"kernel": (40, 5, 8), "bias": (5, 8)}  # no layer axis
  assert layer["mlp"]["wi"]["kernel"] == (40, 52)
  assert encoder["mapping_in"]["kernel"] == (24, 40)
  assert shapes["token_embedder"]["embedding"] == (97, 24)
  assert shapes["mlm_head"]["dense"]["kernel"] == (40, 24)
  # As many numbers as the torch model holds (its tied decoder counted once): nothing duplicated per layer.
  ours = sum(int(np.prod(s)) for s in jax.tree.leaves(shapes, is_leaf=lambda x: isinstance(x, tuple)))
  assert ours == sum(p.numel() for p in hf_model.parameters())


@pytest.mark.parametrize("scan_layers", [True, False], ids=["scanned", "unrolled"])
def test_grouped_model_states_and_pooled_match_transformers(grouped, scan_layers):
  hf_model, directory = grouped
  config, params = load_albert(str(directory), param_dtype="float32", dtype="float32", scan_layers=scan_layers)
  assert (config.num_hidden_groups, config.inner_group_num, config.group_runs) == (2, 2, ((0, 2), (1, 1)))
  assert (config.has_pooler, config.has_mlm_head, config.activation) == (True, False, "gelu")
  assert set(params["params"]["encoder"]) == {"mapping_in", "groups_0", "groups_1"}
  forward = jax.jit(functools.partial(_forward, Albert(config)))
  for name, ids, mask, types in _batches():
    out, _ = forward(params, ids, mask, types)
    with torch.no_grad():
      hidden, pooled = (t.numpy() for t in ref.hf_outputs(hf_model, ids, mask, types))
    np.testing.assert_allclose(out.hidden_BxTxD, hidden, atol=1e-4, rtol=0, err_msg=name)
    np.testing.assert_allclose(out.pooled_BxD, pooled, atol=1e-4, rtol=0, err_msg=name)
    assert np.abs(hidden).max() > 1.0


@pytest.mark.parametrize("scan_layers", [True, False], ids=["scanned", "unrolled"])
def test_prefixes_enter_each_attention_application_in_order(grouped, scan_layers):
  """6 applications (3 layers x 2 inner) of 4 distinct layers, each with its own masked prefix."""
  hf_model, directory = grouped
  config, params = load_albert(str(directory), param_dtype="float32", dtype="float32", scan_layers=scan_layers)
  assert config.num_attention_layers == 6
  rng = np.random.default_rng(2)
  shape = (6, len(LENGTHS), 3, ref.HEADS, ref.HIDDEN // ref.HEADS)
  keys, values = (rng.normal(size=shape).astype(np.float32) for _ in range(2))
  prefix_mask = np.array([[1, 1, 1], [0, 1, 1], [1, 0, 0]], bool)
  _, ids, mask, types = _batches()[0]
  prompt = Prompt(encoder_self=KVPrefix(keys, values, prefix_mask))
  out, _ = jax.jit(functools.partial(_forward, Albert(config)))(params, ids, mask, types, prompt)
  hidden, pooled = ref.hf_with_prefixes(hf_model, ids, mask, types, keys, values, prefix_mask)
  np.testing.assert_allclose(out.hidden_BxTxD, hidden, atol=1e-4, rtol=0)
  np.testing.assert_allclose(out.pooled_BxD, pooled, atol=1e-4, rtol=0)
  with pytest.raises(ValueError, match="prefixes for 3 layers; this ALBERT applies self-attention 6 times"):
    Albert(config).apply(params, ids, mask, types, prompt=Prompt(encoder_self=KVPrefix(keys[:3], values[:3])))


def test_soft_prompt_and_its_gradient_match_inputs_embeds(mlm):
  """Soft tokens of width E equal HF's inputs_embeds = [prompt; word_embeddings(ids)], under remat."""
  hf_model, directory = mlm
  config, params = load_albert(str(directory), param_dtype="float32", dtype="float32", remat_policy="full")
  rng = np.random.default_rng(3)
  soft_PxE = rng.normal(size=(4, ref.EMBED)).astype(np.float32)
  _, ids, mask, types = _batches()[1]  # left-padded: the prompt sits before the padding, as in PEFT
  weight_BxTxV = rng.normal(size=(len(LENGTHS), 4 + MAX_LEN, ref.VOCAB)).astype(np.float32)

  def loss(soft):
    _, logits = _forward(Albert(config), params, ids, mask, types, Prompt(embeddings_BxPxD=soft[None]))
    return jnp.sum(logits * weight_BxTxV), logits

  (_, logits), grad = jax.jit(jax.value_and_grad(loss, has_aux=True))(soft_PxE)

  soft = torch.tensor(soft_PxE, requires_grad=True)
  words = hf_model.albert.embeddings.word_embeddings(torch.tensor(ids, dtype=torch.long))
  embeds = torch.cat([soft.expand(len(LENGTHS), -1, -1), words], dim=1)
  full = lambda a, first: np.concatenate([np.full((len(LENGTHS), 4), first, a.dtype), a], axis=1)
  expected, _ = ref.hf_outputs(hf_model, mask=full(mask, True), types=full(types, 0), inputs_embeds=embeds)
  (expected * torch.from_numpy(weight_BxTxV)).sum().backward()
  np.testing.assert_allclose(logits, expected.detach().numpy(), atol=1e-4, rtol=0)
  np.testing.assert_allclose(grad, soft.grad.numpy(), atol=1e-4, rtol=1e-4)
  assert np.abs(soft.grad.numpy()).max() > 1e-2  # a real gradient, not two zeros
  with pytest.raises(ValueError, match="width embedding_size=24 \\(not hidden_size=40\\)"):
    Albert(config).apply(params, ids, mask, prompt=Prompt(embeddings_BxPxD=np.zeros((1, 4, ref.HIDDEN), np.float32)))


def test_mlm_logits_of_gathered_positions_equal_the_gathered_logits(mlm):
  _, directory = mlm
  config, params = load_albert(str(directory), param_dtype="float32", dtype="float32")
  _, ids, mask, types = _batches()[0]
  at_BxK = np.array([[1, 7], [10, 0], [3, 2]], np.int32)

  @jax.jit
  def both(params):
    out, logits = _forward(Albert(config), params, ids, mask, types)
    gathered_BxKxD = jnp.take_along_axis(out.hidden_BxTxD, at_BxK[..., None], axis=1)
    of_gathered = Albert(config).apply(params, gathered_BxKxD, method=Albert.mlm_logits)
    return jnp.take_along_axis(logits, at_BxK[..., None], axis=1), of_gathered

  full, gathered = both(params)
  assert gathered.shape == (3, 2, ref.VOCAB) and gathered.dtype == jnp.float32
  np.testing.assert_allclose(gathered, full, atol=1e-5, rtol=0)
  headless = config.replace(has_mlm_head=False)
  with pytest.raises(ValueError, match="no MLM head"):
    Albert(headless).apply(params, np.zeros((1, 2, ref.HIDDEN), np.float32), method=Albert.mlm_logits)


def test_pytorch_bin_with_tied_copies_equals_safetensors(mlm, tmp_path, caplog):
  hf_model, directory = mlm
  state = hf_model.state_dict()
  assert "predictions.decoder.weight" in state  # the tied copy a .bin carries
  torch.save({k: v.contiguous() for k, v in state.items()}, tmp_path / "pytorch_model.bin")
  shutil.copy(directory / "config.json", tmp_path / "config.json")
  with caplog.at_level(logging.WARNING, logger="jaxprompt.weights.albert_loader"):
    _, from_bin = load_albert(str(tmp_path), param_dtype="float32")
  assert "not used" not in caplog.text
  _, from_safetensors = load_albert(str(directory), param_dtype="float32")
  for a, b in zip(jax.tree.leaves(from_bin), jax.tree.leaves(from_safetensors), strict=True):
    np.testing.assert_array_equal(a, b)


def test_wrong_shape_tensor_names_the_tensor_and_both_shapes(mlm, tmp_path, monkeypatch):
  _, directory = mlm
  name = "albert.encoder.albert_layer_groups.0.albert_layers.0.ffn.weight"
  tensors = safetensors.numpy.load_file(directory / "model.safetensors")
  tensors[name] = np.zeros((52, 41), np.float32)
  safetensors.numpy.save_file(tensors, tmp_path / "model.safetensors")
  shutil.copy(directory / "config.json", tmp_path / "config.json")
  monkeypatch.setattr(placement, "build_param", _never_called)  # nothing partial is loaded
  with pytest.raises(placement.CheckpointMismatchError) as e:
    load_albert(str(tmp_path))
  message = str(e.value)
  assert f"tensor '{name}' has shape (52, 41)" in message
  assert "param encoder/groups_0/layers_0/mlp/wi/kernel of shape (40, 52) needs (52, 40)" in message


def test_config_errors_name_the_config_json_keys(mlm):
  hf = ref.make_hf(ref.SHARED_MLM).config.to_dict()
  from_hf = functools.partial(AlbertConfig.from_hf, has_pooler=False, has_mlm_head=True)
  assert from_hf(hf).embedding_size == ref.EMBED
  with pytest.raises(ValueError, match=r"required keys \['embedding_size'\] are missing"):
    from_hf({k: v for k, v in hf.items() if k != "embedding_size"})
  with pytest.raises(ValueError, match="position_embedding_type='relative_key' is not supported"):
    from_hf({**hf, "position_embedding_type": "relative_key"})
  with pytest.raises(ValueError, match="hidden_act='quick_gelu' is not supported"):
    from_hf({**hf, "hidden_act": "quick_gelu"})
  with pytest.raises(ValueError, match="model_type='bert'.*loads model_type 'albert'"):
    from_hf({**hf, "model_type": "bert"})


def _never_called(*args, **kwargs):
  raise AssertionError("a param was loaded before the checkpoint was checked")


def _sharded_forward(config, params, ids, mask, types, soft, keys):
  """Every input kind at once: token types, soft tokens after [CLS], per-application prefixes."""
  prompt = Prompt(embeddings_BxPxD=soft[None], insert_at_B=jnp.ones((ids.shape[0],), jnp.int32),
                  encoder_self=KVPrefix(keys, keys))
  out, logits = _forward(Albert(config), params, ids, mask, types, prompt)
  return out.hidden_BxTxD, out.pooled_BxD, logits


def test_sharded_forward_equals_one_device(tmp_path):
  assert len(jax.devices()) == 8
  directory = str(ref.save_hf(ref.make_hf(ref.PRETRAINING), tmp_path))
  rng = np.random.default_rng(4)
  lengths = [16, 12, 9, 16, 3, 11, 16, 7]
  inputs = (*ref.padded_batch(rng, lengths, MAX_LEN, vocab=96),
            rng.normal(size=(4, ref.EMBED)).astype(np.float32),
            rng.normal(size=(3, 1, 2, 4, ref.HIDDEN // 4)).astype(np.float32))
  config, params = load_albert(directory, param_dtype="float32", dtype="float32")
  assert config.has_pooler and config.has_mlm_head
  expected = jax.jit(functools.partial(_sharded_forward, config))(params, *inputs)

  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  _, sharded = load_albert(directory, mesh=mesh, param_dtype="float32", dtype="float32")
  # The weights landed in the shardings the logical rules give them.
  p = sharded["params"]
  assert p["encoder"]["groups_0"]["layers_0"]["mlp"]["wi"]["kernel"].sharding.spec == P("fsdp", "tensor")
  assert p["encoder"]["mapping_in"]["kernel"].sharding.spec == P("fsdp", "tensor")
  assert p["token_embedder"]["embedding"].addressable_shards[0].data.shape == (48, 12)

  batch_sharding = jax.sharding.NamedSharding(mesh, P(("data", "fsdp")))
  ids, mask, types = (jax.device_put(x, batch_sharding) for x in inputs[:3])
  with sharding.activate(mesh):
    got = jax.jit(functools.partial(_sharded_forward, config))(sharded, ids, mask, types, *inputs[3:])
  assert got[0].addressable_shards[0].data.shape[0] == 8 // 4  # activations stay batch-sharded
  for name, a, b, atol in zip(("hidden", "pooled", "mlm logits"), got, expected, (1e-5, 1e-5, 5e-5)):
    np.testing.assert_allclose(a, b, atol=atol, rtol=0, err_msg=name)
  assert np.abs(expected[2]).max() > 1.0
