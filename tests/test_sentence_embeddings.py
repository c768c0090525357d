"""Sentence embeddings equal transformers' on real all-MiniLM-L6-v2 weights; the filter equals LM-BFF's loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers

from jaxprompt.sentence_embeddings import SentenceEncoder, join_fields, length_buckets, top_similar_per_class
from tests.assets import minilm_dir
from tests.conftest import SHARED_DATA


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
  return SentenceEncoder(minilm_dir())


@pytest.fixture(scope="module")
def texts() -> list[str]:
  """SST-2 dev sentences of many lengths, a pair as LM-BFF joins it, and one past 256 word pieces."""
  lines = (SHARED_DATA / "sst2" / "dev.tsv").read_text().splitlines()[1:41]
  sentences = [line.split("\t")[0] for line in lines]
  return sentences[:9] + [join_fields(sentences[9], sentences[10]), " ".join(sentences[11:])]


def _transformers_embeddings(texts: list[str], max_length: int) -> np.ndarray:
  """AutoModel's last states, averaged over the attention mask and L2-normalised (sentence-transformers' chain)."""
  folder = str(minilm_dir())
  tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
  model = transformers.AutoModel.from_pretrained(folder).eval()
  batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
  with torch.no_grad():
    hidden_BxLxD = model(**batch).last_hidden_state
  mask_BxLx1 = batch["attention_mask"][..., None].float()
  mean_BxD = (hidden_BxLxD * mask_BxLx1).sum(1) / mask_BxLx1.sum(1).clamp(min=1e-9)
  return torch.nn.functional.normalize(mean_BxD, dim=1).numpy()


def test_embeddings_equal_transformers(encoder, texts):
  assert encoder.max_length == 256  # sentence_bert_config.json, not the 512-position table
  lengths = [len(ids) for ids in encoder.tokenizer.encode_batch(texts, add_special_tokens=True)]
  assert lengths[-1] == 256 and min(lengths) < 16  # one text cut, and real padding in a batch
  ours = encoder.embed(texts, batch_size=4)
  # float32 on both sides; XLA and PyTorch sum in other orders
  np.testing.assert_allclose(ours, _transformers_embeddings(texts, 256), atol=1e-5, rtol=0)
  np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)


def test_batching_and_buckets_leave_embeddings_unchanged(encoder, texts):
  one_by_one = np.concatenate([encoder.embed([t], batch_size=1) for t in texts])
  batched = encoder.embed(texts, batch_size=4)
  # Other pad lengths change only XLA's summation order (padding adds exact zeros).
  np.testing.assert_allclose(batched, one_by_one, atol=1e-6, rtol=0)
  # One compile per (rows, bucket) shape: batch_size 1 and 4, each over the buckets its texts reach.
  assert encoder._forward._cache_size() <= 2 * len(encoder.buckets)
  assert length_buckets(256) == (16, 32, 64, 128, 256) and length_buckets(100) == (16, 32, 64, 100)


def _lm_bff_filter(queries, candidates, labels, num_classes, rate, exclude):
  """LM-BFF's demo filter (src/dataset.py), a loop per query and candidate; at least one per class."""
  kept = []
  for q, query in enumerate(queries):
    scored = []
    for n, candidate in enumerate(candidates):
      if exclude is None or not exclude[q][n]:
        scored.append((n, float(query @ candidate / (np.linalg.norm(query) * np.linalg.norm(candidate)))))
    scored.sort(key=lambda pair: pair[1], reverse=True)
    limit = max(1, int(len(scored) // num_classes * rate))
    per_class = [[] for _ in range(num_classes)]
    for n, _ in scored:
      if len(per_class[labels[n]]) < limit:
        per_class[labels[n]].append(n)
    kept.append(per_class)
  return kept


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("rate", [0.5, 0.3])
@pytest.mark.parametrize("train", [False, True])
def test_filter_equals_a_loop_over_queries_and_candidates(ties, rate, train):
  rng = np.random.default_rng(0)
  num_classes, n = 3, 40
  if ties:  # four ±1 entries in eight: unit vectors of ±0.5, similarities exact multiples of 1/4
    support_NxE = rng.permuted(np.tile([1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0], (n, 1)), axis=1)
    candidates = rng.choice([-1.0, 1.0], (n, 8)) * support_NxE
  else:
    candidates = rng.normal(size=(n, 8))
  labels = rng.choice(num_classes, n, p=[0.5, 0.3, 0.2])
  queries = candidates if train else (candidates[:25] if ties else rng.normal(size=(25, 8)))
  exclude = np.eye(n, dtype=bool) if train else None
  got = top_similar_per_class(queries, candidates, labels, num_classes, rate, exclude)
  expected = _lm_bff_filter(queries, candidates, labels, num_classes, rate, exclude)
  assert [[list(c) for c in q] for q in got] == expected
  if ties:  # the tie order is really exercised
    assert len(set(np.round(queries[0] @ candidates.T, 6))) < n // 2


def test_per_class_count_is_int_of_share_times_rate():
  rng = np.random.default_rng(1)
  candidates, labels = rng.normal(size=(12, 4)), np.array([0] * 9 + [1] * 3)
  # 12 candidates, 2 classes: int(12 // 2 * 0.5) = 3 each; class 1 has exactly 3
  assert [len(c) for c in top_similar_per_class(candidates[:1], candidates, labels, 2)[0]] == [3, 3]
  # excluding one leaves 11: int(11 // 2 * 0.5) = int(2.5) = 2
  exclude = np.zeros((1, 12), bool)
  exclude[0, 0] = True
  assert [len(c) for c in top_similar_per_class(candidates[:1], candidates, labels, 2, 0.5, exclude)[0]] == [2, 2]
  # int(12 // 2 * 0.9) = 5, but class 1 has only 3
  assert [len(c) for c in top_similar_per_class(candidates[:1], candidates, labels, 2, 0.9)[0]] == [5, 3]
  # 3 candidates: int(3 // 2 * 0.5) = 0, which LM-BFF keeps; here one per class that has any
  kept = top_similar_per_class(candidates[:2], candidates[:3], np.array([0, 0, 2]), 3)
  assert [[len(c) for c in q] for q in kept] == [[1, 0, 1], [1, 0, 1]]


def test_training_queries_exclude_themselves():
  rng = np.random.default_rng(2)
  emb = rng.normal(size=(10, 6))
  labels = np.arange(10) % 2
  with_self = top_similar_per_class(emb, emb, labels, 2, rate=1.0)
  without = top_similar_per_class(emb, emb, labels, 2, rate=1.0, exclude_QxN=np.eye(10, dtype=bool))
  for q in range(10):
    assert with_self[q][labels[q]][0] == q  # its own most similar candidate
    assert q not in np.concatenate(without[q])
    # 9 candidates left: int(9 // 2 * 1.0) = 4 a class, all of its own class's others, 4 of the other's 5
    assert sorted(without[q][labels[q]]) == [n for n in range(10) if labels[n] == labels[q] and n != q]
    assert len(without[q][1 - labels[q]]) == 4


def test_filter_rejects_what_does_not_fit():
  emb = np.ones((3, 4))
  with pytest.raises(ValueError, match="class indices"):
    top_similar_per_class(emb, emb, np.array([0, 1, 2]), 2)
  with pytest.raises(ValueError, match="exclude_QxN"):
    top_similar_per_class(emb, emb, np.array([0, 1, 1]), 2, exclude_QxN=np.eye(2, dtype=bool))
  with pytest.raises(ValueError, match="do not fit"):
    top_similar_per_class(emb[0], emb, np.array([0, 1, 1]), 2)
