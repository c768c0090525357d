"""Features to padded numpy batches: a deterministic, checkpointable train stream and in-order eval.

Every process draws the same global batch of example ids (same seed, same shuffle) and pads only
its own contiguous 1/process_count share, so the processes' local batches together are the global
batch. The input length of a batch is the smallest bucket that fits the longest input of the
*global* batch, so every process picks the same shape. With `length_window=K`, batches are drawn
K at a time from the shuffled stream and their examples sorted by input length first, so each batch
holds examples of similar length and is padded to a smaller bucket.

Batch keys: inputs int32 [B, L], input_mask bool [B, L], targets int32 [B, T], target_mask bool
[B, T], label int32 [B], group int32 [B], example_mask bool [B] (False for padding rows),
soft_positions int32 [B, L] (i where pseudo token [Pi] sits, else -1), task_id int32 [B] (-1 for
padding rows), token_labels int32 [B, L] (a word's tag index at its first sub-token, -1 where
ignored), token_types int32 [B, L] (BERT's segment ids), mask_positions int32 [B, K] (a cloze
input's mask block, -1 past an example's own masks), candidates int32 [B, C, K] and candidate_mask
bool [B, C, K] (each example's choices, left-aligned in the mask block), score float32 [B] (a
regression's gold score, NaN where none), teacher_logits float32 [B, S] (a distillation set's
teacher scores per class, NaN where none). K, C and S are the most any feature has (at least 1),
fixed per feature set. Every batch has every key, whatever its task, so
that all batches share one structure; the [B, L] keys are aligned with inputs, on whichever side
inputs are padded.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import sys
from collections.abc import Callable, Iterator, Sequence

import grain
import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxprompt.tasks.features import Feature

PAD_ID = 0  # T5's pad id; the masks, not the ids, say which positions are real
# The batch function is cheap numpy work: a small prefetch hides it without holding many batches.
_READ_OPTIONS = grain.ReadOptions(num_threads=2, prefetch_buffer_size=8)


@dataclasses.dataclass(frozen=True)
class _Batcher:
  """Pads this process's share of a global batch of example ids (-1: a padding row)."""

  features: Sequence[Feature]
  input_lens: np.ndarray
  buckets: tuple[int, ...]
  max_target_len: int
  rows: slice
  pad_inputs_left: bool  # decoders: so every example's answer starts at the same column
  num_masks: int  # K of mask_positions and candidates
  num_candidates: int  # C of candidates
  num_teacher_classes: int  # S of teacher_logits

  def __call__(self, ids_G: np.ndarray) -> dict[str, np.ndarray]:
    real_G = ids_G >= 0
    longest = int(self.input_lens[ids_G[real_G]].max(initial=1))
    length = self.buckets[bisect.bisect_left(self.buckets, longest)]
    ids_B = ids_G[self.rows]
    batch = {
        "inputs": np.full((len(ids_B), length), PAD_ID, np.int32),
        "input_mask": np.zeros((len(ids_B), length), bool),
        "targets": np.full((len(ids_B), self.max_target_len), PAD_ID, np.int32),
        "target_mask": np.zeros((len(ids_B), self.max_target_len), bool),
        "label": np.full(len(ids_B), -1, np.int32),
        "group": np.full(len(ids_B), -1, np.int32),
        "example_mask": ids_B >= 0,
        "soft_positions": np.full((len(ids_B), length), -1, np.int32),
        "task_id": np.full(len(ids_B), -1, np.int32),
        "token_labels": np.full((len(ids_B), length), -1, np.int32),
        "token_types": np.zeros((len(ids_B), length), np.int32),
        "mask_positions": np.full((len(ids_B), self.num_masks), -1, np.int32),
        "candidates": np.zeros((len(ids_B), self.num_candidates, self.num_masks), np.int32),
        "candidate_mask": np.zeros((len(ids_B), self.num_candidates, self.num_masks), bool),
        "score": np.full(len(ids_B), np.nan, np.float32),
        "teacher_logits": np.full((len(ids_B), self.num_teacher_classes), np.nan, np.float32),
    }
    for row, i in enumerate(ids_B):
      if i >= 0:
        feature = self.features[i]
        columns = slice(length - len(feature.inputs), length) if self.pad_inputs_left else slice(0, len(feature.inputs))
        batch["inputs"][row, columns] = feature.inputs
        batch["input_mask"][row, columns] = True
        batch["targets"][row, : len(feature.targets)] = feature.targets
        batch["target_mask"][row, : len(feature.targets)] = True
        batch["label"][row] = feature.label
        batch["group"][row] = feature.group
        batch["score"][row] = feature.score
        batch["teacher_logits"][row, : len(feature.teacher_logits)] = feature.teacher_logits
        batch["task_id"][row] = feature.task_id
        if feature.soft_positions:
          batch["soft_positions"][row, columns] = feature.soft_positions
        if feature.token_labels:
          batch["token_labels"][row, columns] = feature.token_labels
        if feature.token_types:
          batch["token_types"][row, columns] = feature.token_types
        if feature.mask_positions:
          batch["mask_positions"][row, : len(feature.mask_positions)] = np.add(feature.mask_positions, columns.start)
        for c, choice in enumerate(feature.candidates):
          batch["candidates"][row, c, : len(choice)] = choice
          batch["candidate_mask"][row, c, : len(choice)] = True
    return batch


def train_iterator(
    features: Sequence[Feature],
    global_batch_size: int,
    seed: int,
    max_input_len: int,
    max_target_len: int,
    bucket_lengths: Sequence[int] = (),
    process_index: int = 0,
    process_count: int = 1,
    pad_inputs_left: bool = False,
    length_window: int = 0,
    render: Callable[[int, int], Feature] | None = None,
) -> grain.DatasetIterator:
  """An endless stream of this process's local batches, reshuffled every epoch from `seed`.

  Epochs follow each other without a gap, so a batch may straddle two. `length_window` K >= 2
  groups examples of similar length into batches, K batches at a time (0 or 1: random batches).
  With `render`, the j-th draw of the stream, example i, is `render(i, j)` instead of features[i]
  (LM-BFF's demonstrations, drawn anew at every draw); `features` then only fix the batch shapes.
  `get_state()` is a small JSON-serialisable dict; `set_state()` on a fresh iterator continues the
  stream exactly.
  """
  batcher = _make_batcher(
      features, global_batch_size, max_input_len, max_target_len, bucket_lengths, process_index, process_count,
      pad_inputs_left,
  )
  if length_window < 0:
    raise ValueError(f"length_window={length_window} must be 0 (off) or the number of batches sorted together")
  ids = grain.MapDataset.source(range(len(features))).seed(seed).shuffle().repeat(None)
  if render is not None:
    if length_window > 1:
      raise ValueError("length_window groups examples by their length, which rendering at each draw changes")
    rendered = _RenderedBatches(ids, render, batcher, global_batch_size)
    return iter(grain.MapDataset.range(0, sys.maxsize).map(rendered).to_iter_dataset(_READ_OPTIONS))
  if length_window <= 1:
    batch_ids = ids.batch(global_batch_size, batch_fn=np.asarray)
  else:
    windows = _LengthSortedWindows(ids, batcher.input_lens, global_batch_size, length_window, seed)
    batch_ids = grain.MapDataset.range(0, sys.maxsize).map(windows.batch_ids)
  return iter(batch_ids.map(batcher).to_iter_dataset(_READ_OPTIONS))


@dataclasses.dataclass(frozen=True, eq=False)
class _RenderedBatches:
  """Batch i of a stream whose draws are rendered as they are drawn: draw j is render(ids[j], j)."""

  ids: grain.MapDataset  # the shuffled, endlessly repeated example ids
  render: Callable[[int, int], Feature]
  batcher: _Batcher  # its shapes (mask block, choices, buckets) and this process's rows
  batch_size: int

  def __call__(self, i: int) -> dict[str, np.ndarray]:
    draws = range(i * self.batch_size, (i + 1) * self.batch_size)
    features = [self.render(self.ids[j], j) for j in draws]
    lens = np.array([len(f.inputs) for f in features])
    if lens.max() > self.batcher.buckets[-1]:
      raise ValueError(f"a rendered example has {lens.max()} input tokens, more than {self.batcher.buckets[-1]}")
    return dataclasses.replace(self.batcher, features=features, input_lens=lens)(np.arange(self.batch_size))


@dataclasses.dataclass(frozen=True, eq=False)
class _LengthSortedWindows:
  """Batch i of a length-grouped stream: window i // K holds the shuffled stream's next K batches'
  examples, sorted by input length and cut into K batches, which the window then visits in a
  shuffled order (so that short and long batches alternate instead of growing within every window).

  A window holds exactly the examples that random batches would hold in those K batches, so each
  example is seen as often as without grouping; only which examples share a batch changes. Random
  access by batch index keeps the stream resumable.
  """

  ids: grain.MapDataset  # the shuffled, endlessly repeated example ids
  input_lens: np.ndarray
  batch_size: int
  window: int  # K: batches per window
  seed: int

  def batch_ids(self, i: int) -> np.ndarray:
    return self._window(i // self.window)[i % self.window]

  @functools.lru_cache(maxsize=4)  # consecutive batches read the same window
  def _window(self, w: int) -> np.ndarray:
    size = self.window * self.batch_size
    ids = np.array([self.ids[j] for j in range(w * size, (w + 1) * size)])
    by_length = ids[np.argsort(self.input_lens[ids], kind="stable")].reshape(self.window, self.batch_size)
    return by_length[np.random.default_rng((self.seed, w)).permutation(self.window)]


def eval_batches(
    features: Sequence[Feature],
    batch_size: int,
    max_input_len: int,
    max_target_len: int,
    bucket_lengths: Sequence[int] = (),
    process_index: int = 0,
    process_count: int = 1,
    pad_inputs_left: bool = False,
) -> Iterator[dict[str, np.ndarray]]:
  """Every feature once, in order, in global batches of `batch_size`; the last padded (example_mask False)."""
  batcher = _make_batcher(
      features, batch_size, max_input_len, max_target_len, bucket_lengths, process_index, process_count,
      pad_inputs_left,
  )
  for start in range(0, len(features), batch_size):
    ids_G = np.arange(start, start + batch_size)
    yield batcher(np.where(ids_G < len(features), ids_G, -1))


def _make_batcher(
    features: Sequence[Feature],
    global_batch_size: int,
    max_input_len: int,
    max_target_len: int,
    bucket_lengths: Sequence[int],
    process_index: int,
    process_count: int,
    pad_inputs_left: bool,
) -> _Batcher:
  if not features:
    raise ValueError("No features to batch")
  if global_batch_size < 1 or global_batch_size % process_count:
    raise ValueError(
        f"The global batch size {global_batch_size} must be a positive multiple of the process count {process_count}"
    )
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} is outside [0, {process_count})")
  buckets = tuple(bucket_lengths) or (max_input_len,)
  if list(buckets) != sorted(set(buckets)) or buckets[0] < 1 or buckets[-1] != max_input_len:
    raise ValueError(
        f"bucket_lengths {tuple(bucket_lengths)} must be increasing positive lengths ending with"
        f" max_input_len={max_input_len}"
    )
  input_lens = np.array([len(f.inputs) for f in features])
  target_lens = np.array([len(f.targets) for f in features])
  for name, lens, limit in (("input", input_lens, max_input_len), ("target", target_lens, max_target_len)):
    if lens.max() > limit:
      raise ValueError(
          f"Feature {int(lens.argmax())} has {int(lens.max())} {name} tokens, more than max_{name}_len={limit}:"
          " featurize with the same maximum lengths"
      )
  local = global_batch_size // process_count
  rows = slice(process_index * local, (process_index + 1) * local)
  # K holds a masked LM's mask block, and a decoder's longest choice (which has no mask positions).
  num_masks = max(1, max(len(f.mask_positions) for f in features), max((len(c) for f in features for c in f.candidates),
                                                                      default=0))
  num_candidates = max(1, max(len(f.candidates) for f in features))
  num_teacher_classes = max(1, max(len(f.teacher_logits) for f in features))
  return _Batcher(features, input_lens, buckets, max_target_len, rows, pad_inputs_left, num_masks, num_candidates,
                  num_teacher_classes)


def to_global(batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
  """Global jax Arrays from this process's batch, split on `sharding`'s batch (first) axes."""
  batch_axes = sharding.spec[0] if len(sharding.spec) else None
  out = {}
  for key, x in batch.items():
    # One spec per rank: the batch dimension on the batch axes, the rest replicated.
    array_sharding = NamedSharding(sharding.mesh, P(batch_axes, *[None] * (x.ndim - 1)))
    out[key] = jax.make_array_from_process_local_data(array_sharding, x)
  return out


def unlabeled_keys(batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """An unlabeled batch's inputs under the keys a step reads beside a labelled batch (PET's MLM)."""
  return {f"unlabeled_{key}": batch[key] for key in ("inputs", "input_mask", "token_types")}
