"""Collapsing a reparameterised prompt (prefix MLP, P-tuning's prompt encoder) into the plain
keys/values or embeddings it produces changes nothing a backbone computes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprompt.models.llama import Llama
from jaxprompt.models.llama_config import LlamaConfig
from jaxprompt.models.t5 import T5
from jaxprompt.models.t5_config import T5Config
from jaxprompt.prompts.p_tuning import PromptEncoder
from jaxprompt.prompts.prefix_tuning import AttentionShape, PrefixTuning


def _collapsed_pair(method, batch):
  """(params, the collapsed method, its params from the export)."""
  params = method.init(jax.random.key(1), batch)["params"]
  collapsed = method.collapsed()
  return params, collapsed, collapsed.params_from_export(method.export(params))


def test_collapsed_t5_prefixes_give_the_same_logits():
  config = T5Config.preset("tiny", dtype="float32", param_dtype="float32")
  t5 = T5(config)
  ids = jax.random.randint(jax.random.key(0), (2, 7), 2, config.vocab_size)
  mask = jnp.ones_like(ids, bool).at[1, 5:].set(False)
  weights = t5.init(jax.random.key(0), ids, mask, ids)
  shapes = tuple(AttentionShape(kind, 2, config.num_heads, config.d_kv)
                 for kind in ("encoder_self", "decoder_self", "decoder_cross"))
  method = PrefixTuning(3, shapes, config.d_model, reparam_hidden=16)
  params, collapsed, collapsed_params = _collapsed_pair(method, {})
  assert "mlp_in" not in str(jax.tree_util.tree_structure(collapsed_params))
  logits = t5.apply(weights, ids, mask, ids, prompt=method.apply({"params": params}, {}))
  again = t5.apply(weights, ids, mask, ids, prompt=collapsed.apply({"params": collapsed_params}, {}))
  np.testing.assert_allclose(again, logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("encoder", ["lstm", "mlp"])
def test_collapsed_p_tuning_encoder_gives_the_same_logits(encoder):
  config = LlamaConfig.tiny(dtype="float32", param_dtype="float32")
  llama = Llama(config)
  ids = jax.random.randint(jax.random.key(0), (2, 9), 0, config.vocab_size)
  mask = jnp.ones_like(ids, bool).at[0, :2].set(False)  # left padding
  soft = jnp.full((2, 9), -1, jnp.int32).at[:, 2].set(0).at[:, 5].set(1).at[:, 6].set(2)
  batch = {"input_mask": mask, "soft_positions": soft}
  weights = llama.init(jax.random.key(0), ids, mask, method=Llama.forward_logits)
  method = PromptEncoder(3, config.hidden_size, encoder)
  params, collapsed, collapsed_params = _collapsed_pair(method, batch)
  assert set(collapsed_params) == {"embeddings"}
  logits = llama.apply(weights, ids, mask, method.apply({"params": params}, batch), method=Llama.forward_logits)
  again = llama.apply(weights, ids, mask, collapsed.apply({"params": collapsed_params}, batch), method=Llama.forward_logits)
  np.testing.assert_allclose(again, logits, rtol=1e-5, atol=1e-5)
  # The pseudo tokens did replace the marker positions: without them the logits differ.
  plain = llama.apply(weights, ids, mask, method=Llama.forward_logits)
  assert not np.allclose(plain[:, 2:], logits[:, 2:], atol=1e-4)
