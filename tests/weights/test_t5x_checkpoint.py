"""The T5X tiny checkpoint (legacy msgpack, from google-research/t5x) loads whole and runs on the real vocabulary."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest

from jaxprompt.models.t5 import T5
from jaxprompt.models.t5_decoding import greedy_decode
from jaxprompt.weights import placement
from jaxprompt.weights.t5_loader import _T5X_PREFIXES, load_t5
from jaxprompt.weights.t5_names import t5_param_sources
from jaxprompt.weights.tensor_sources import open_flax_msgpack
from jaxprompt.weights.tokenizer import load_t5_tokenizer


@pytest.fixture(scope="module")
def t5x_path(shared_data):
  return shared_data / "t5x_tiny" / "test_t5_tiny.checkpoint_0"


@pytest.mark.parametrize("scan_layers", [True, False])
def test_every_tensor_maps_to_exactly_one_param(t5x_path, scan_layers):
  config, params = load_t5(str(t5x_path), param_dtype="float32", scan_layers=scan_layers)
  # The sizes are read off the tensors (T5X stores no config).
  assert (config.d_model, config.num_heads, config.d_kv, config.d_ff) == (8, 4, 3, 16)
  assert (config.num_encoder_layers, config.num_decoder_layers, config.vocab_size) == (2, 2, 32128)
  assert config.is_gated and not config.tie_word_embeddings

  source = open_flax_msgpack(t5x_path)
  target = [n for n in source if n.startswith("optimizer/target/")]
  sources = t5_param_sources(config, "t5x", "optimizer/target/")
  assert sorted(placement.unused_tensors(sources, source)) == sorted(set(source) - set(target))  # only optimizer state left
  assert sum(len(s.names) for s in sources.values()) == len(target)
  assert len(jax.tree.leaves(params)) == len(sources)
  # Values land where they belong, e.g. the [heads, buckets] position table transposed.
  rel = source["optimizer/target/encoder/relpos_bias/rel_embedding"].read()
  np.testing.assert_array_equal(params["params"]["encoder"]["relpos_bias"]["embedding"], rel.T)
  q = source["optimizer/target/decoder/layers_1/self_attention/query/kernel"].read()
  ours = params["params"]["decoder"]["layers" if scan_layers else "layers_1"]["self_attention"]["query"]["kernel"]
  np.testing.assert_array_equal(ours[1] if scan_layers else ours, q.reshape(8, 4, 3))


def test_runs_on_the_real_vocabulary(t5x_path, shared_data):
  tokenizer = load_t5_tokenizer(str(shared_data / "t5_vocab" / "spiece.model"))
  config, params = load_t5(str(t5x_path), param_dtype="float32", dtype="float32")
  texts = ["sst2 sentence: a gripping, beautifully acted film.", "cb premise: It rained. hypothesis: The street is wet."]
  encoded = [tokenizer.encode(t) for t in texts]
  length = max(map(len, encoded))
  ids = np.array([e + [0] * (length - len(e)) for e in encoded], np.int32)
  mask = ids > 0
  labels = np.array([tokenizer.encode("positive"), tokenizer.encode("entailment")[:2]], np.int32)

  model = T5(config)
  logits = jax.jit(model.apply)(params, ids, mask, np.pad(labels[:, :-1], ((0, 0), (1, 0))))
  assert logits.shape == (2, 2, 32128) and np.isfinite(logits).all()
  tokens = jax.jit(functools.partial(greedy_decode, model, max_decode_len=6))(params, ids, mask)
  assert tokens.shape == (2, 6) and (tokens >= 0).all() and (tokens < 32128).all()
  assert isinstance(tokenizer.decode(np.asarray(tokens[0])), str)


def test_a_non_t5x_msgpack_is_refused(tmp_path):
  bad = tmp_path / "checkpoint_7"
  bad.write_bytes(__import__("flax").serialization.msgpack_serialize({"foo": {"bar": np.zeros(3)}}))
  with pytest.raises(placement.CheckpointMismatchError, match=f"not a T5X checkpoint .*{_T5X_PREFIXES[0]}"):
    load_t5(str(bad))
