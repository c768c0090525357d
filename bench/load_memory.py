"""Host memory of streaming a float32 T5 checkpoint into bf16 params, against the checkpoint's size.

    python bench/load_memory.py --size=large --workdir=/tmp/t5-large-ckpt

Writes a random float32 checkpoint of the size's exact HF tensor names and shapes (once, kept in
--workdir), then loads it with `load_t5(..., param_dtype="bfloat16")` while a thread samples the
process's anonymous resident memory (RssAnon: heap, numpy buffers, and on CPU the arrays
themselves; not the page cache of the memory-mapped file). On CPU the loaded bf16 params live in
host memory, so the floor is half the checkpoint; what streaming adds on top is about one tensor.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

import numpy as np


def rss_anon_bytes() -> int:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("RssAnon:"):
        return int(line.split()[1]) * 1024
  raise RuntimeError("no RssAnon in /proc/self/status")


def write_checkpoint(size: str, directory: Path) -> None:
  import safetensors.numpy

  from jaxprompt.models.t5_config import T5Config
  from jaxprompt.sharding import param_targets
  from jaxprompt.weights.t5_loader import abstract_t5_params
  from jaxprompt.weights.t5_names import t5_param_sources

  config = T5Config.preset(size)
  targets = param_targets(abstract_t5_params(config), None)
  rng = np.random.default_rng(0)
  tensors = {}
  for path, src in t5_param_sources(config, "hf").items():
    for name in src.names:
      tensors[name] = rng.standard_normal(src.file_shape(targets[path].shape), dtype=np.float32)
  directory.mkdir(parents=True, exist_ok=True)
  safetensors.numpy.save_file(tensors, directory / "model.safetensors")
  (directory / "config.json").write_text(json.dumps({
      "model_type": "t5", "vocab_size": config.vocab_size, "d_model": config.d_model, "d_kv": config.d_kv,
      "d_ff": config.d_ff, "num_heads": config.num_heads, "num_layers": config.num_encoder_layers,
      "feed_forward_proj": config.feed_forward_proj, "tie_word_embeddings": False,
  }))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", default="large")
  parser.add_argument("--workdir", required=True)
  args = parser.parse_args()
  directory = Path(args.workdir)
  if not (directory / "model.safetensors").is_file():
    write_checkpoint(args.size, directory)

  from jaxprompt.weights.t5_loader import load_t5

  baseline = rss_anon_bytes()
  peak = baseline
  done = threading.Event()

  def sample():
    nonlocal peak
    while not done.is_set():
      peak = max(peak, rss_anon_bytes())
      time.sleep(0.005)

  sampler = threading.Thread(target=sample, daemon=True)
  sampler.start()
  start = time.perf_counter()
  _, params = load_t5(str(directory), param_dtype="bfloat16")
  seconds = time.perf_counter() - start
  done.set()
  sampler.join()

  checkpoint = (directory / "model.safetensors").stat().st_size
  import jax

  loaded = sum(x.nbytes for x in jax.tree.leaves(params))
  print(json.dumps({
      "size": args.size,
      "checkpoint_gb_float32": round(checkpoint / 1e9, 3),
      "params_gb_bfloat16": round(loaded / 1e9, 3),
      "peak_anon_growth_gb": round((peak - baseline) / 1e9, 3),
      "peak_growth_over_checkpoint": round((peak - baseline) / checkpoint, 3),
      "load_seconds": round(seconds, 1),
  }, indent=2))


if __name__ == "__main__":
  main()
