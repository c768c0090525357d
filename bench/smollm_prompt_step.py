"""SmolLM2-135M prompt tuning on SST-2: our train step against Hugging Face PEFT's, in one run.

    python bench/smollm_prompt_step.py --gguf=/path/SmolLM2-135M-Instruct.Q4_1.gguf

Both sides load the same GGUF in float32 and take the same batches (batch 8 of real SST-2 train
rows in the demo's template, left-padded, 16 soft tokens, one answer token). PEFT is the reference
a PyTorch user would run: `PromptTuning` on transformers' Llama, loss on the answer token over the
vocabulary, Adam. Ours is `configs/smollm_sst2_prompt.py`'s step (the label-words loss), and also
with the vocabulary loss. Reports the median seconds per step (after warm-up) and the ratio, and
the zero-shot accuracy of the frozen model on the first 200 dev rows under both implementations.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.t5_forward_backward import machine  # noqa: E402
from configs import smollm_sst2_prompt  # noqa: E402
from jaxprompt import experiment, sharding  # noqa: E402
from jaxprompt.evaluation import evaluate  # noqa: E402
from jaxprompt.tasks import pipeline  # noqa: E402


def median_seconds(fn, repeats: int) -> float:
  fn()  # warm-up: compilation / first-touch
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--gguf", required=True)
  parser.add_argument("--steps", type=int, default=10)
  args = parser.parse_args()

  config = smollm_sst2_prompt.get_config("data=local")
  config.model.checkpoint = args.gguf
  config.mesh.data = 1
  exp = experiment.build(config, mesh=sharding.make_mesh({"data": 1}, devices=jax.devices()[:1]))
  feats = experiment.train_features(exp)
  it = pipeline.train_iterator(feats, config.batch_size, config.seed, config.data.max_input_len,
                               config.data.max_target_len, tuple(config.data.bucket_lengths), pad_inputs_left=True)
  batches = [next(it) for _ in range(args.steps + 1)]
  # One bucket for both sides, so each side compiles / warms up once.
  width = max(b["inputs"].shape[1] for b in batches)
  for b in batches:
    pad = width - b["inputs"].shape[1]
    b["inputs"] = np.pad(b["inputs"], ((0, 0), (pad, 0)))
    b["input_mask"] = np.pad(b["input_mask"], ((0, 0), (pad, 0)))

  results = {"date": datetime.date.today().isoformat(), "machine": machine(), "jax": jax.__version__,
             "shape": f"batch {config.batch_size}, {config.prompt.length} soft + {width} input tokens, 1 answer token"}
  state = exp.init_state(exp.init_params(jax.random.key(0)))
  for loss_over in ("label_words", "vocabulary"):
    exp.config.loss_over = loss_over
    step = exp.train_step()
    counter = iter(range(10**9))
    holder = {"state": jax.tree.map(np.asarray, state)}

    def ours():
      b = jax.tree.map(np.asarray, batches[next(counter) % len(batches)])
      holder["state"], metrics = step(holder["state"], exp.frozen, b, jax.random.key(0))
      jax.block_until_ready(metrics)

    results[f"ours_{loss_over}_s_per_step"] = round(median_seconds(ours, args.steps), 4)

  import peft
  import torch
  import transformers

  torch.set_num_threads(os.cpu_count())
  gguf = Path(args.gguf)
  hf = transformers.AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
  model = peft.get_peft_model(hf, peft.PromptTuningConfig(task_type=peft.TaskType.CAUSAL_LM, num_virtual_tokens=config.prompt.length))
  optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.optimizer.learning_rate)
  counter = iter(range(10**9))

  def peft_step():
    b = batches[next(counter) % len(batches)]
    ids = torch.tensor(np.concatenate([b["inputs"], b["targets"][:, :1]], 1), dtype=torch.long)
    mask = torch.tensor(np.concatenate([b["input_mask"], b["target_mask"][:, :1]], 1), dtype=torch.long)
    labels = torch.full_like(ids, -100)
    labels[:, -1] = ids[:, -1]
    loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()

  results["peft_s_per_step"] = round(median_seconds(peft_step, args.steps), 4)
  results["peft_over_ours_label_words"] = round(results["peft_s_per_step"] / results["ours_label_words_s_per_step"], 2)
  results["peft_over_ours_vocabulary"] = round(results["peft_s_per_step"] / results["ours_vocabulary_s_per_step"], 2)

  # Zero-shot accuracy of the frozen model on the first 200 dev rows, both implementations.
  exp.config.prompt.method = "none"
  zero = experiment.build(exp.config, mesh=exp.mesh)
  eval_feats = experiment.eval_features(zero)[""]
  with sharding.activate(zero.mesh, zero.rules):
    results["ours_zero_shot_accuracy"] = evaluate(zero.eval_step(), {}, zero.frozen, {"": eval_feats}, zero)["eval/accuracy"]
  label_ids = [f.targets[0] for f in eval_feats]
  candidates = sorted(set(label_ids))
  correct = 0
  with torch.no_grad():
    for f in eval_feats:
      logits = hf(input_ids=torch.tensor([f.inputs])).logits[0, -1]
      correct += candidates[int(torch.argmax(logits[candidates]))] == f.targets[0]
  results["torch_zero_shot_accuracy"] = correct / len(eval_feats)
  print(json.dumps(results, indent=2))


if __name__ == "__main__":
  main()
