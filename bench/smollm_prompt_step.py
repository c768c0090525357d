"""SmolLM2-135M prompt tuning on SST-2: our train step against Hugging Face PEFT's, in one run.

    python bench/smollm_prompt_step.py --gguf=/path/SmolLM2-135M-Instruct.Q4_1.gguf

Both sides load the same GGUF in float32 (`--dtype=bfloat16`: both in bfloat16) and take the same
batches (batch 8 of real SST-2 train rows in the demo's template, left-padded, 16 soft tokens, one
answer token). PEFT is the reference a PyTorch user would run: `PromptTuning` on transformers'
Llama, loss on the answer token over the vocabulary, Adam. Ours is `configs/smollm_sst2_prompt.py`'s
step with the label-words loss (the demo's) and with the vocabulary loss (PEFT's), each with the 30 layers scanned and unrolled
(`--config.model.scan_layers`). The sides take turns, --rounds rounds of (median of
--steps_per_round steps after a warm-up), so a slow spell of the machine hits every side; the ratio
is taken within each round and its median reported, with each side's compile time. Then the
zero-shot accuracy of the frozen model on the first 200 dev rows under both implementations.
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

from bench.t5_forward_backward import machine, time_call  # noqa: E402
from configs import smollm_sst2_prompt  # noqa: E402
from jaxprompt import experiment, sharding  # noqa: E402
from jaxprompt.evaluation import evaluate  # noqa: E402
from jaxprompt.tasks import pipeline  # noqa: E402


def demo_config(gguf: str, scan_layers: bool, dtype: str = "float32"):
  config = smollm_sst2_prompt.get_config("data=local")
  config.model.checkpoint = gguf
  config.model.scan_layers = scan_layers
  config.model.dtype = config.model.param_dtype = dtype
  config.mesh.data = 1
  return config


def build(config):
  return experiment.build(config, mesh=sharding.make_mesh({"data": 1}, devices=jax.devices()[:1]))


def one_bucket_batches(exp, steps: int) -> list[dict[str, np.ndarray]]:
  """`steps` real train batches, left-padded to one width so each side compiles once."""
  config = exp.config
  it = pipeline.train_iterator(experiment.train_features(exp), config.batch_size, config.seed, config.data.max_input_len,
                               config.data.max_target_len, tuple(config.data.bucket_lengths), pad_inputs_left=True)
  batches = [jax.tree.map(np.asarray, next(it)) for _ in range(steps)]
  width = max(b["inputs"].shape[1] for b in batches)
  for b in batches:
    pad = width - b["inputs"].shape[1]
    b["inputs"] = np.pad(b["inputs"], ((0, 0), (pad, 0)))
    b["input_mask"] = np.pad(b["input_mask"], ((0, 0), (pad, 0)))
  return batches


def our_step(exp, loss_over: str, batches):
  """A call of the product's train step on the next batch; its compile time, measured once here."""
  exp.config.loss_over = loss_over
  step = exp.train_step()
  holder = {"state": jax.tree.map(np.asarray, exp.init_state(exp.init_params(jax.random.key(0))))}
  counter = iter(range(10**9))

  def call():
    holder["state"], metrics = step(holder["state"], exp.frozen, batches[next(counter) % len(batches)], jax.random.key(0))
    return metrics

  start = time.perf_counter()
  jax.block_until_ready(call())
  return call, time.perf_counter() - start


def peft_step(gguf: Path, config, batches, dtype: str):
  import peft
  import torch
  import transformers

  torch.set_num_threads(os.cpu_count())
  hf = transformers.AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=getattr(torch, dtype))
  model = peft.get_peft_model(hf, peft.PromptTuningConfig(task_type=peft.TaskType.CAUSAL_LM, num_virtual_tokens=config.prompt.length))
  optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.optimizer.learning_rate)
  counter = iter(range(10**9))

  def call():
    b = batches[next(counter) % len(batches)]
    ids = torch.tensor(np.concatenate([b["inputs"], b["targets"][:, :1]], 1), dtype=torch.long)
    mask = torch.tensor(np.concatenate([b["input_mask"], b["target_mask"][:, :1]], 1), dtype=torch.long)
    labels = torch.full_like(ids, -100)
    labels[:, -1] = ids[:, -1]
    loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()

  versions = {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}
  return hf, call, versions


def zero_shot_accuracies(exp, hf) -> dict[str, float]:
  """The frozen model's accuracy on the first 200 dev rows (the demo's eval split): ours and torch's."""
  import torch

  exp.config.prompt.method = "none"
  zero = experiment.build(exp.config, mesh=exp.mesh)
  eval_feats = experiment.eval_features(zero)[""]
  with sharding.activate(zero.mesh, zero.rules):
    ours = evaluate(zero.eval_step(), {}, zero.frozen, {"": eval_feats}, zero)["eval/accuracy"]
  candidates = sorted({f.targets[0] for f in eval_feats})
  correct = 0
  with torch.no_grad():
    for f in eval_feats:
      logits = hf(input_ids=torch.tensor([f.inputs])).logits[0, -1]
      correct += candidates[int(torch.argmax(logits[candidates]))] == f.targets[0]
  return {"ours": ours, "torch": correct / len(eval_feats)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--gguf", required=True)
  parser.add_argument("--rounds", type=int, default=6)
  parser.add_argument("--steps_per_round", type=int, default=3)
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                      help="both sides' weights and compute (the demo's: float32)")
  args = parser.parse_args()

  exps = {layers: build(demo_config(args.gguf, layers == "scanned", args.dtype)) for layers in ("scanned", "unrolled")}
  batches = one_bucket_batches(exps["scanned"], steps=8)
  sides, compile_s = {}, {}
  for layers, exp in exps.items():
    for loss_over in ("label_words", "vocabulary"):
      name = f"ours_{loss_over}_{layers}"
      sides[name], compile_s[name] = our_step(exp, loss_over, batches)
  hf, sides["peft"], versions = peft_step(Path(args.gguf), exps["scanned"].config, batches, args.dtype)

  times = {name: [] for name in sides}
  for _ in range(args.rounds):  # take turns, so a slow spell of the machine hits every side
    for name, step in sides.items():
      times[name].append(time_call(step, repeats=args.steps_per_round))  # median after a warm-up
  ours = [name for name in sides if name != "peft"]
  print(json.dumps({
      "date": datetime.date.today().isoformat(),
      "machine": machine(),
      "versions": {"jax": jax.__version__, **versions},
      "dtype": args.dtype,
      "shape": f"batch {exps['scanned'].config.batch_size}, {exps['scanned'].config.prompt.length} soft + "
               f"{batches[0]['inputs'].shape[1]} input tokens, 1 answer token",
      "rounds": f"{args.rounds} x (median of {args.steps_per_round} steps after a warm-up) per side",
      "s_per_step": {name: round(statistics.median(t), 4) for name, t in times.items()},
      "compile_s": {name: round(s, 1) for name, s in compile_s.items()},
      "peft_over_ours": {name: round(statistics.median(p / o for p, o in zip(times["peft"], times[name])), 2) for name in ours},
      "peft_over_ours_per_round": {name: [round(p / o, 2) for p, o in zip(times["peft"], times[name])] for name in ours},
      "zero_shot_accuracy": zero_shot_accuracies(exps["scanned"], hf),
  }, indent=2))


if __name__ == "__main__":
  main()
