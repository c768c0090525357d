"""Real pretrained weights: all-MiniLM-L6-v2 sentence embeddings equal sentence-transformers' own.

The reference is the sentence-transformers library itself, loading the same folder: its modules.json
chains Transformer -> mean Pooling -> Normalize. It batches by length, so its padding differs from ours.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from jaxprompt.models.bert import Bert, l2_normalize, mean_pool
from jaxprompt.weights.bert_loader import load_bert
from jaxprompt.weights.hf_tokenizer import load_hf_tokenizer
from tests.assets import minilm_dir


@pytest.fixture(scope="module")
def sentences(shared_data):
  """The first 20 sentences of SST-2's dev set."""
  lines = (shared_data / "sst2" / "dev.tsv").read_text().splitlines()[1:21]
  return [line.split("\t")[0] for line in lines]


def _embed(config, params, ids, mask):
  out = Bert(config).apply(params, ids, mask)
  return l2_normalize(mean_pool(out.hidden_BxTxD, out.mask_BxT))


def test_sentence_embeddings_match_sentence_transformers(sentences):
  folder = minilm_dir()
  config, params = load_bert(str(folder), param_dtype="float32", dtype="float32")
  assert (config.hidden_size, config.num_layers, config.has_pooler, config.has_mlm_head) == (384, 6, True, False)
  tokenizer = load_hf_tokenizer(folder)
  encoded = tokenizer.encode_batch(sentences, add_special_tokens=True)
  length = max(map(len, encoded))
  ids = np.array([e + [tokenizer.pad_id] * (length - len(e)) for e in encoded], np.int32)
  mask = np.arange(length)[None] < np.array([len(e) for e in encoded])[:, None]
  assert (~mask).any(axis=1).sum() >= 10 and mask.sum(1).min() < length // 2  # real padding

  ours = np.asarray(jax.jit(_embed, static_argnums=0)(config, params, ids, mask))
  expected = SentenceTransformer(str(folder), device="cpu").encode(sentences, convert_to_numpy=True)
  np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=0)
  np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
