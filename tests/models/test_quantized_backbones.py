"""Quantised frozen backbones: T5 and Llama loaded with quantised kernels against their float
selves, the quantised matmul against a float one over the same (dequantised) weights, its gradient,
its memory, and sharded quantised weights on the 8-device mesh."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprompt import sharding
from jaxprompt.models.llama import Llama
from jaxprompt.models.prompt import Prompt
from jaxprompt.models.quantized import QuantizedKernel
from jaxprompt.models.t5 import T5
from jaxprompt.weights.llama_loader import load_llama
from jaxprompt.weights.quantize import Quantization
from jaxprompt.weights.t5_loader import load_t5
from tests.models import llama_reference, t5_reference

is_kernel = lambda x: isinstance(x, QuantizedKernel)
# The root-mean-square gap between the quantised and the float model's logits, as a fraction of the
# logits' standard deviation. These tiny random models are 32 wide with large weights, so 4-bit
# error shows (measured, 16-weight blocks: int8 1.2% / 2.0%, int4 19% / 29%, nf4 19% / 26% on T5 /
# Llama); SmolLM2's own numbers are in tests/weights/test_gguf_quantised.py.
TOLERANCE = {"int8": 0.04, "int4": 0.4, "nf4": 0.4}


@pytest.fixture(scope="module")
def t5_checkpoint(tmp_path_factory):
  return str(t5_reference.save_hf(t5_reference.make_hf_t5(t5_reference.V1_1), tmp_path_factory.mktemp("t5")))


@pytest.fixture(scope="module")
def llama_checkpoint(tmp_path_factory):
  return str(t5_reference.save_hf(llama_reference.make_hf_llama(), tmp_path_factory.mktemp("llama")))


def dequantised(params):
  """The same tree with every quantised kernel as the float kernel it stands for."""
  return jax.tree.map(lambda x: x.dequantize(jnp.float32) if is_kernel(x) else x, params, is_leaf=is_kernel)


def _t5_batch():
  rng = np.random.default_rng(0)
  ids, mask = t5_reference.padded_batch(rng, [12, 7, 12, 3], 12)
  dec, _ = t5_reference.padded_batch(rng, [5] * 4, 5)
  soft = rng.normal(size=(1, 4, 32)).astype(np.float32)
  return ids, mask, dec, soft


def _t5_logits(config, params, ids, mask, dec, soft):
  return T5(config).apply(params, ids, mask, dec, prompt=Prompt(embeddings_BxPxD=soft))


def _llama_logits(config, params, ids, mask):
  return Llama(config).apply(params, ids, mask, method=Llama.forward_logits)


def _load(family, checkpoint, scheme, **kwargs):
  load = load_t5 if family == "t5" else load_llama
  return load(checkpoint, param_dtype="float32", dtype="float32", quantization=Quantization(scheme, 16), **kwargs)


def _logits(family, config, params):
  if family == "t5":
    return jax.jit(functools.partial(_t5_logits, config))(params, *_t5_batch())
  ids, mask = llama_reference.left_padded(np.random.default_rng(0), [9, 4, 9], 9)
  return jax.jit(functools.partial(_llama_logits, config))(params, ids, mask)


@pytest.mark.parametrize("scheme", ["int8", "int4", "nf4"])
@pytest.mark.parametrize("family", ["t5", "llama"])
def test_quantised_model_is_close_to_float_and_equals_its_dequantised_self(family, scheme, t5_checkpoint, llama_checkpoint):
  checkpoint = t5_checkpoint if family == "t5" else llama_checkpoint
  config, float_params = _load(family, checkpoint, "none")
  _, params = _load(family, checkpoint, scheme)
  kernels = [x for x in jax.tree.leaves(params, is_leaf=is_kernel) if is_kernel(x)]
  assert kernels and all(k.scheme == scheme for k in kernels)
  assert not any(is_kernel(x) for x in jax.tree.leaves(params["params"].get("lm_head", {}), is_leaf=is_kernel))

  want, got = _logits(family, config, float_params), _logits(family, config, params)
  spread = float(np.std(want))
  assert float(np.max(np.abs(got - want))) <= TOLERANCE[scheme] * spread * 8
  assert float(np.sqrt(np.mean((got - want) ** 2))) <= TOLERANCE[scheme] * spread
  assert not np.allclose(got, want, atol=1e-6)  # the weights are quantised
  # The in-graph dequantisation is exact: the float model over the dequantised kernels agrees.
  np.testing.assert_allclose(got, _logits(family, config, dequantised(params)), atol=1e-5, rtol=1e-5)


def _prompt_loss(config, params, soft, ids, mask, dec):
  logits = _t5_logits(config, params, ids, mask, dec, soft)
  return jnp.mean(jax.nn.log_softmax(logits)[..., 3])


def test_prompt_gradient_through_quantised_kernels(t5_checkpoint):
  """The quantised matmul's backward pass (which dequantises again) gives the float gradient."""
  config, params = _load("t5", t5_checkpoint, "int4")
  ids, mask, dec, soft = _t5_batch()
  grad = jax.jit(jax.grad(functools.partial(_prompt_loss, config), argnums=1), static_argnums=())
  got = grad(params, soft, ids, mask, dec)
  want = grad(dequantised(params), soft, ids, mask, dec)
  np.testing.assert_allclose(got, want, atol=1e-6, rtol=1e-5)
  assert np.abs(want).max() > 0


def test_step_keeps_no_float_copy_of_the_kernels(t5_checkpoint):
  """The gradient step's temporaries do not grow by the float kernels: the backward pass reads the
  quantised ones (XLA's own memory analysis of the compiled step)."""
  config, float_params = _load("t5", t5_checkpoint, "none")
  _, params = _load("t5", t5_checkpoint, "int8")
  ids, mask, dec, soft = _t5_batch()
  grad = jax.jit(jax.grad(functools.partial(_prompt_loss, config), argnums=1))
  temp = lambda p: grad.lower(p, soft, ids, mask, dec).compile().memory_analysis().temp_size_in_bytes
  kernel_bytes = sum(x.dequantize(jnp.float32).nbytes for x in jax.tree.leaves(params, is_leaf=is_kernel) if is_kernel(x))
  assert temp(params) - temp(float_params) < kernel_bytes / 2


def test_sharded_quantised_t5_equals_unsharded(t5_checkpoint):
  assert len(jax.devices()) == 8
  config, params = _load("t5", t5_checkpoint, "int4")
  want = _logits("t5", config, params)
  mesh = sharding.make_mesh({"fsdp": 4, "tensor": 2})
  config, sharded = _load("t5", t5_checkpoint, "int4", mesh=mesh)
  wi = sharded["params"]["encoder"]["layers"]["mlp"]["wi_0"]["kernel"]
  # [layers, embed, mlp]: codes and block scales split embed over fsdp and mlp over tensor.
  assert wi.values.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")
  assert wi.scale.sharding.spec == jax.sharding.PartitionSpec(None, None, "tensor")  # 2 blocks over 4 devices: whole
  with sharding.activate(mesh):
    got = _logits("t5", config, sharded)
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
