"""What length buckets and length-grouped batches (`data.bucket_lengths`, `data.length_window`) buy
on a real task's length distribution: padded tokens, compiled shapes and time per epoch.

    python bench/length_bucketing.py --tasks=boolq,rte,sst2 --size=small --dtype=float32 --batch=32 --prompt_len=20

The task's examples are tokenised by the product's featurizer with the real T5 vocabulary (the local
files in ../shared/data; for SuperGLUE the full validation set, the only split there large enough to
have a length distribution). Every scheme batches the same shuffled stream with the product's train
iterator. The product's train step (random frozen weights) is timed once per input length a scheme
can produce (median of --repeats after its compile), once for all tasks; a scheme's time is the sum
of those times over the shapes of its batches (--num_batches of them, scaled to one epoch), and
tokens/s counts non-pad tokens (prompt and targets included). One JSON report: the per-length step
times, then per task its length distribution and one row per scheme.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.t5_forward_backward import machine, time_call  # noqa: E402
from bench.t5_prompt_step import PromptStep, Shape, random_frozen  # noqa: E402
from configs import t5_prompt  # noqa: E402
from jaxprompt.models.t5_config import T5Config  # noqa: E402
from jaxprompt.tasks import features as features_lib  # noqa: E402
from jaxprompt.tasks import pipeline, readers, task_spec  # noqa: E402
from jaxprompt.tasks.codec import t5_codec  # noqa: E402
from jaxprompt.weights.tokenizer import load_t5_tokenizer  # noqa: E402


def real_features(task: str, split: str, tokenizer: Path, max_input_len: int, max_target_len: int):
  """The task's local records of `split`, featurized as a training run would."""
  config = t5_prompt.get_config(f"task={task},data=local")
  source = config.data.train if split == "train" else config.data.eval
  source.files = tuple(str(REPO / f) for f in source.files)  # the presets' paths are relative to the repo
  spec = task_spec.task_spec_from_config(config.task)
  records = readers.read_records(task_spec.data_source_from_config(source))
  codec = t5_codec(load_t5_tokenizer(str(tokenizer)))
  features, stats = features_lib.featurize(records, spec, codec, max_input_len, max_target_len)
  return features, f"{task} {split} ({', '.join(Path(f).name for f in source.files)}): {stats.summary()}"


def batch_shapes(features, batch: int, num_batches: int, buckets: tuple[int, ...], window: int, max_target_len: int):
  """(input length, non-pad input tokens, non-pad target tokens) of each batch of the product's train stream."""
  stream = pipeline.train_iterator(features, batch, 0, buckets[-1], max_target_len, buckets, length_window=window)
  start = time.perf_counter()
  batches = [next(stream) for _ in range(num_batches)]
  host_ms = (time.perf_counter() - start) / num_batches * 1e3
  shapes = [(b["inputs"].shape[1], int(b["input_mask"].sum()), int(b["target_mask"].sum())) for b in batches]
  return shapes, host_ms


def seconds_per_step(config: T5Config, frozen, batch: int, prompt_len: int, lengths, target_len: int, repeats: int):
  times = {}
  for length in sorted(lengths):
    step = PromptStep(config, Shape(batch, prompt_len, length, target_len), frozen)
    times[length] = time_call(step, repeats=repeats)  # after a warm-up call, which compiles
    print(f"  {length:4d} input tokens: {times[length]:.3f} s/step", file=sys.stderr)
  return times


def parse_schemes(text: str, max_input_len: int) -> list[tuple[tuple[int, ...], int]]:
  """"128,256,512/0;64,128,...,512/16" -> [((buckets), window), ...]; empty buckets = max_input_len."""
  schemes = []
  for item in text.split(";"):
    buckets, window = item.split("/")
    lengths = tuple(int(b) for b in buckets.split(",") if b) or (max_input_len,)
    schemes.append((lengths, int(window)))
  return schemes


def scheme_rows(streams: dict, times: dict[int, float], batch: int, prompt_len: int, examples: int) -> list[dict]:
  """One row per scheme; epoch_s scales the timed batches' seconds to one pass over the examples."""
  rows = []
  for (buckets, window), (shapes, host_ms) in streams.items():
    seconds = sum(times[length] for length, _, _ in shapes)
    inputs = sum(n for _, n, _ in shapes)
    real = inputs + sum(n for _, _, n in shapes) + len(shapes) * batch * prompt_len
    per_length = {str(n): sum(1 for length, _, _ in shapes if length == n) for n in buckets}
    rows.append({
        "bucket_lengths": list(buckets), "length_window": window,
        "batches_per_length": {n: count for n, count in per_length.items() if count},
        "input_tokens_real_of_padded": round(inputs / (sum(length for length, _, _ in shapes) * batch), 3),
        "epoch_s": round(seconds * examples / (len(shapes) * batch), 1), "tokens_per_s": round(real / seconds),
        "host_ms_per_batch": round(host_ms, 2),
    })
  for row in rows:
    row["speedup_vs_first"] = round(rows[0]["epoch_s"] / row["epoch_s"], 2)
  return rows


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tasks", default="boolq,rte,sst2", help="comma-separated preset tasks")
  parser.add_argument("--split", default="eval", choices=("train", "eval"))
  parser.add_argument("--tokenizer", type=Path, default=REPO.parent / "shared" / "data" / "t5_vocab" / "spiece.model")
  parser.add_argument("--size", default="small", help="T5 v1.1 size preset")
  parser.add_argument("--dtype", default="float32")
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--prompt_len", type=int, default=20)
  parser.add_argument("--max_input_len", type=int, default=512)
  parser.add_argument("--max_target_len", type=int, default=8)
  parser.add_argument("--num_batches", type=int, default=256,
                      help="batches drawn per scheme: several windows, and several epochs of a small task")
  parser.add_argument("--repeats", type=int, default=3)
  every_64 = ",".join(str(n) for n in range(64, 513, 64))
  parser.add_argument("--schemes", default=f"/0;128,256,512/0;{every_64}/0;128,256,512/16;{every_64}/16",
                      help="';'-separated buckets/length_window (buckets empty: max_input_len only)")
  args = parser.parse_args()

  schemes = parse_schemes(args.schemes, args.max_input_len)
  tasks = {}
  for task in args.tasks.split(","):
    features, data = real_features(task, args.split, args.tokenizer, args.max_input_len, args.max_target_len)
    streams = {scheme: batch_shapes(features, args.batch, args.num_batches, *scheme, args.max_target_len)
               for scheme in schemes}
    tasks[task] = (features, data, streams)

  config = T5Config.preset(args.size, dtype=args.dtype, param_dtype=args.dtype)
  lengths = {shape[0] for _, _, streams in tasks.values() for shapes, _ in streams.values() for shape in shapes}
  times = seconds_per_step(config, random_frozen(config), args.batch, args.prompt_len, lengths, args.max_target_len,
                           args.repeats)

  report = {
      "date": datetime.date.today().isoformat(), "machine": machine(), "jax": jax.__version__,
      "model": f"T5 v1.1 {args.size}, {args.dtype}",
      "batch": f"{args.batch} x ({args.prompt_len} prompt + bucketed input, {args.max_target_len} target tokens),"
               f" {args.num_batches} batches per scheme",
      "s_per_step_by_input_len": {str(n): round(t, 3) for n, t in sorted(times.items())},
  }
  for task, (features, data, streams) in tasks.items():
    input_lens = np.array([len(f.inputs) for f in features])
    report[task] = {
        "data": data,
        "input_tokens": {"mean": round(float(input_lens.mean()), 1), "p50": float(np.percentile(input_lens, 50)),
                         "p90": float(np.percentile(input_lens, 90)), "max": int(input_lens.max())},
        "schemes": scheme_rows(streams, times, args.batch, args.prompt_len, len(features)),
    }
  print(json.dumps(report, indent=1))


if __name__ == "__main__":
  main()
