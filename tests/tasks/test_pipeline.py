"""The train stream is deterministic, resumable and shards per process; eval covers every example once."""

import itertools
import json

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxprompt.tasks.features import Feature
from jaxprompt.tasks.pipeline import eval_batches, to_global, train_iterator

KEYS = {
    "inputs": np.int32, "input_mask": np.bool_, "targets": np.int32, "target_mask": np.bool_,
    "label": np.int32, "group": np.int32, "example_mask": np.bool_,
    "soft_positions": np.int32, "task_id": np.int32, "token_labels": np.int32, "token_types": np.int32,
    "mask_positions": np.int32, "candidates": np.int32, "candidate_mask": np.bool_, "score": np.float32,
    "teacher_logits": np.float32,
}


def make_features(n: int, max_len: int = 16) -> list[Feature]:
  """Example i: input length 1 + (7i mod max_len), ids 2..; group i identifies it in batches."""
  features = []
  for i in range(n):
    length = 1 + (7 * i) % max_len
    features.append(Feature(inputs=[2 + i] * (length - 1) + [1], targets=[100 + i % 3, 1], label=i % 3, group=i))
  return features


def take(iterator, k):
  return [next(iterator) for _ in range(k)]


def assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def test_batch_layout():
  features = make_features(10)
  (batch,) = take(train_iterator(features, 4, seed=0, max_input_len=16, max_target_len=3), 1)
  assert {k: v.dtype for k, v in batch.items()} == {k: np.dtype(t) for k, t in KEYS.items()}
  assert batch["inputs"].shape == (4, 16) and batch["targets"].shape == (4, 3) and batch["label"].shape == (4,)
  for row, i in enumerate(batch["group"]):
    feature = features[i]
    n = len(feature.inputs)
    np.testing.assert_array_equal(batch["inputs"][row, :n], feature.inputs)
    assert not batch["inputs"][row, n:].any() and batch["input_mask"][row].sum() == n
    np.testing.assert_array_equal(batch["targets"][row], feature.targets + [0])
    np.testing.assert_array_equal(batch["target_mask"][row], [True, True, False])
    assert batch["label"][row] == feature.label
  assert batch["example_mask"].all()
  # No cloze features: one mask slot and one candidate slot, all unused.
  assert (batch["mask_positions"] == -1).all() and batch["candidates"].shape == (4, 1, 1)
  assert not batch["candidate_mask"].any() and not batch["token_types"].any()


def test_deterministic_for_a_seed_and_seeds_differ():
  features = make_features(20)
  run = lambda seed: take(train_iterator(features, 4, seed, 16, 2), 12)
  assert_batches_equal(run(3), run(3))
  assert not all(np.array_equal(a["group"], b["group"]) for a, b in zip(run(3), run(4)))


@pytest.mark.parametrize("n, batch_size", [(12, 4), (10, 4)])
def test_every_example_once_per_epoch_and_reshuffled(n, batch_size):
  epochs = 3
  batches = take(train_iterator(make_features(n), batch_size, 0, 16, 2), -(-n * epochs // batch_size))
  stream = np.concatenate([b["group"] for b in batches])  # batches may straddle epochs
  orders = [stream[e * n : (e + 1) * n] for e in range(epochs)]
  for order in orders:
    assert sorted(order) == list(range(n))
  assert len({tuple(order) for order in orders}) == epochs  # each epoch is shuffled anew
  assert list(orders[0]) != list(range(n))


@pytest.mark.parametrize("length_window", [0, 3])
def test_resume_from_state_is_exact(length_window):
  features = make_features(13)
  make = lambda: train_iterator(features, 4, 7, 16, 2, bucket_lengths=(4, 8, 16), length_window=length_window)
  iterator = make()
  take(iterator, 5)
  state = json.loads(json.dumps(iterator.get_state()))  # it goes into checkpoints as JSON
  expected = take(iterator, 9)
  resumed = make()
  take(resumed, 2)  # a restored iterator may have been used before
  resumed.set_state(state)
  assert_batches_equal(take(resumed, 9), expected)
  assert_batches_equal(take(make(), 14)[5:], expected)  # uninterrupted


@pytest.mark.parametrize("n, batch_size, window", [(96, 8, 4), (50, 4, 3)])
def test_length_window_regroups_each_window_by_length(n, batch_size, window):
  features = make_features(n)
  epochs = 3
  num_batches = n * epochs // batch_size
  buckets = dict(bucket_lengths=(4, 8, 12, 16))
  grouped = take(train_iterator(features, batch_size, 0, 16, 2, length_window=window, **buckets), num_batches)
  random = take(train_iterator(features, batch_size, 0, 16, 2, **buckets), num_batches)

  stream = np.concatenate([b["group"] for b in grouped])
  size = window * batch_size  # each window regroups the same examples as random batches would hold
  whole = len(stream) // size * size
  np.testing.assert_array_equal(np.sort(stream[:whole].reshape(-1, size), 1),
                                np.sort(np.concatenate([b["group"] for b in random])[:whole].reshape(-1, size), 1))
  lengths = [np.sort(b["input_mask"].sum(1)) for b in grouped]
  for w in range(len(grouped) // window):  # a window's batches are consecutive runs of its sorted lengths
    runs = sorted(lengths[w * window : (w + 1) * window], key=lambda x: x[0])
    assert all(a[-1] <= b[0] for a, b in zip(runs, runs[1:]))
  longest = [run[-1] for run in lengths[: len(lengths) // window * window]]
  assert any(list(w) != sorted(w) for w in np.reshape(longest, (-1, window)))  # not short-to-long in every window
  padded = lambda batches: sum(b["inputs"].size for b in batches)
  assert padded(grouped) < 0.8 * padded(random)


@pytest.mark.parametrize("n, length_window", [(24, 0), (21, 0), (21, 2)])
def test_process_shards_union_to_the_global_batch(n, length_window):
  features = make_features(n)
  kwargs = dict(seed=5, max_input_len=16, max_target_len=2, bucket_lengths=(2, 4, 8, 16), length_window=length_window)
  steps = 11
  global_batches = take(train_iterator(features, 8, **kwargs), steps)
  local = [take(train_iterator(features, 8, process_index=p, process_count=2, **kwargs), steps) for p in range(2)]
  for k in range(steps):
    a, b = local[0][k], local[1][k]
    assert a["inputs"].shape == b["inputs"].shape == (4, global_batches[k]["inputs"].shape[1])
    if n % 8 == 0:  # otherwise a batch that straddles two epochs may hold an example twice
      assert not set(a["group"]) & set(b["group"])
    for key in KEYS:  # process p holds rows [4p, 4p + 4) of the global batch
      np.testing.assert_array_equal(np.concatenate([a[key], b[key]]), global_batches[k][key], err_msg=key)


def test_bucketing_picks_the_smallest_bucket_that_fits_the_global_batch():
  lengths = [3, 4, 5, 2, 16, 1, 8, 9]
  features = [Feature([5] * (n - 1) + [1], [1], 0, i) for i, n in enumerate(lengths)]
  batches = list(eval_batches(features, 2, 16, 1, bucket_lengths=(4, 8, 16)))
  assert [b["inputs"].shape[1] for b in batches] == [4, 8, 16, 16]
  # Process 1's rows of the first global batch of 4 are short, but process 0's need 8.
  shards = [list(eval_batches(features, 4, 16, 1, (4, 8, 16), p, 2)) for p in range(2)]
  assert [b["inputs"].shape[1] for b in shards[1]] == [8, 16]
  for batch in take(train_iterator(features, 2, 0, 16, 1, bucket_lengths=(4, 8, 16)), 20):
    longest = batch["input_mask"].sum(1).max()
    assert batch["inputs"].shape[1] == min(b for b in (4, 8, 16) if b >= longest)
  assert {b["inputs"].shape[1] for b in eval_batches(features, 2, 16, 1)} == {16}  # no buckets


@pytest.mark.parametrize("buckets", [(4, 8), (8, 4, 16), (4, 4, 16), (0, 16), (4, 32)])
def test_bad_buckets(buckets):
  with pytest.raises(ValueError, match="bucket_lengths"):
    train_iterator(make_features(4), 2, 0, 16, 2, bucket_lengths=buckets)


def test_bad_arguments():
  features = make_features(4)
  with pytest.raises(ValueError, match="length_window=-1"):
    train_iterator(features, 4, 0, 16, 2, length_window=-1)
  with pytest.raises(ValueError, match="multiple of the process count 3"):
    train_iterator(features, 4, 0, 16, 2, process_count=3)
  with pytest.raises(ValueError, match="process_index 2"):
    train_iterator(features, 4, 0, 16, 2, process_index=2, process_count=2)
  with pytest.raises(ValueError, match="more than max_input_len=8"):
    train_iterator(make_features(8), 4, 0, 8, 2)
  with pytest.raises(ValueError, match="more than max_target_len=1"):
    list(eval_batches(features, 4, 16, 1))
  with pytest.raises(ValueError, match="No features"):
    list(eval_batches([], 4, 16, 2))


@pytest.mark.parametrize("process_count", [1, 2])
def test_eval_batches_cover_every_example_once_in_order(process_count):
  features = make_features(10)
  shards = [list(eval_batches(features, 4, 16, 2, (), p, process_count)) for p in range(process_count)]
  assert all(len(batches) == 3 for batches in shards)  # every process runs the same number of steps
  batches = [{k: np.concatenate([s[i][k] for s in shards]) for k in KEYS} for i in range(3)]
  groups = np.concatenate([b["group"] for b in batches])
  mask = np.concatenate([b["example_mask"] for b in batches])
  np.testing.assert_array_equal(groups[mask], np.arange(10))
  np.testing.assert_array_equal(mask, [True] * 10 + [False] * 2)
  last = batches[-1]
  assert (last["group"][2:] == -1).all() and (last["label"][2:] == -1).all()
  assert not last["inputs"][2:].any() and not last["input_mask"][2:].any() and not last["target_mask"][2:].any()
  for batch in batches:
    assert batch["inputs"].shape == (4, 16) and batch["targets"].shape == (4, 2)


def test_to_global_on_a_2d_mesh():
  mesh = jax.make_mesh((2, 4), ("data", "fsdp"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
  sharding = NamedSharding(mesh, P(("data", "fsdp")))
  (batch,) = itertools.islice(eval_batches(make_features(16), 16, 16, 2), 1)
  arrays = to_global(batch, sharding)
  for key, x in batch.items():
    array = arrays[key]
    assert array.shape == x.shape and array.dtype == x.dtype
    assert array.sharding.spec[0] == ("data", "fsdp") and len(array.addressable_shards) == 8
    for shard in array.addressable_shards:
      assert shard.data.shape == (2,) + x.shape[1:]  # 16 rows over 8 devices, rest replicated
      np.testing.assert_array_equal(np.asarray(shard.data), x[shard.index])
    np.testing.assert_array_equal(np.asarray(array), x)
  # A sharding built for rank-2 arrays serves rank-1 arrays too.
  arrays = to_global(batch, NamedSharding(mesh, P("data", None)))
  assert arrays["label"].sharding.spec == P("data") and arrays["inputs"].sharding.spec == P("data", None)


@pytest.mark.parametrize("pad_inputs_left", [False, True])
def test_soft_positions_token_labels_and_task_ids_follow_the_inputs(pad_inputs_left):
  features = [
      Feature([9, 0, 0, 5, 1], [7, 1], 1, 0, soft_positions=[-1, 0, 1, -1, -1], task_id=2),
      Feature([101, 30, 31, 40, 102], [], -1, 1, token_labels=[-1, 3, -1, 0, -1], task_id=1),
      Feature([6, 1], [8, 1], 0, 2),  # neither: all -1
  ]
  batches = list(eval_batches(features, 4, 8, 2, (), 0, 1, pad_inputs_left))
  assert len(batches) == 1
  batch = batches[0]
  assert batch["soft_positions"].shape == batch["token_labels"].shape == batch["inputs"].shape == (4, 8)
  np.testing.assert_array_equal(batch["task_id"], [2, 1, 0, -1])  # -1: the padding row
  expected_soft = [[-1, 0, 1, -1, -1], [-1] * 5, [-1] * 2]
  expected_labels = [[-1] * 5, [-1, 3, -1, 0, -1], [-1] * 2]
  for row, feature in enumerate(features):
    mask = batch["input_mask"][row]
    columns = np.arange(8)[mask]
    assert columns[0] == (8 - len(feature.inputs) if pad_inputs_left else 0)
    np.testing.assert_array_equal(batch["inputs"][row, mask], feature.inputs)
    np.testing.assert_array_equal(batch["soft_positions"][row, mask], expected_soft[row])
    np.testing.assert_array_equal(batch["token_labels"][row, mask], expected_labels[row])
    assert (batch["soft_positions"][row, ~mask] == -1).all() and (batch["token_labels"][row, ~mask] == -1).all()
  assert (batch["soft_positions"][3] == -1).all() and (batch["token_labels"][3] == -1).all()
  # The pseudo tokens sit exactly where their (pad-id) inputs are.
  np.testing.assert_array_equal(batch["inputs"][0][batch["soft_positions"][0] >= 0], [0, 0])
  np.testing.assert_array_equal(np.nonzero(batch["soft_positions"][0] >= 0)[0], [4, 5] if pad_inputs_left else [1, 2])


def test_misaligned_features_are_refused():
  with pytest.raises(ValueError, match="Feature.soft_positions has 2 entries for 3 inputs"):
    Feature([1, 2, 3], [], -1, 0, soft_positions=[-1, 0])
  with pytest.raises(ValueError, match="Feature.token_labels has 4 entries for 3 inputs"):
    Feature([1, 2, 3], [], -1, 0, token_labels=[-1, 0, 0, -1])
