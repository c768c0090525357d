"""Our cloze fine-tuning step (LM-BFF's SST-2 pattern, every weight trains) against transformers'
RobertaForMaskedLM fine-tuned the way LM-BFF does it, side by side in one run on the same machine.

    python bench/cloze_finetune_throughput.py --rounds=4 --steps=2

Both sides train the same random RoBERTa-base (hidden 768, 12 layers, 12 heads, feed-forward 3072,
vocabulary 50,265, 514 positions, one token type) in float32 with AdamW (lr 1e-5, weight decay 0.01,
none on biases and norms, linear decay) on the same batch of 16 x 128 tokens, one <mask> per row.

Ours is the product's own step, built as tests/test_finetune.py builds it: `experiment.build` of
`configs/cloze.py:recipe=lm_bff,task=sst2,data=local` with `model.trainable=all`, `prompt.method=none`
and a 1-device mesh, then `exp.train_step()` (steps.train_step over objectives/cloze.py's loss_sum,
the label words bound from `exp.objective_labels`), the state donated. The repo's BERT family has
only a 'tiny' random preset, so the random model is a transformers RobertaForMaskedLM written once
with `save_pretrained` (safetensors) and loaded by our checkpoint loader (config.model.checkpoint).
There is no RoBERTa vocabulary offline, and `experiment.build` needs a tokenizer (the codec; the
cloze objective encodes the verbalizer with it), so the checkpoint folder also gets a small
RoBERTa-style vocab.json + merges.txt, which the product's loader reads as it reads roberta-base's:
RoBERTa's special ids (<s> 0, <pad> 1, </s> 2, <unk> 3), the byte alphabet, merges that make
" terrible" and " great" (LM-BFF's SST-2 label words) one token each, unused fillers, and <mask>
at 50,264 — so the verbalizer encodes through the product's own path to two fixed ids. Batches
are built directly as arrays in the pipeline's format (random ids in [3, 50264), the mask at a
random position, every token valid, token types 0, labels 0/1); nothing is tokenized.

The PyTorch side is LM-BFF's models.py on the same weights: `roberta(...)` with the attention mask,
the mask position's state gathered before the LM head (`lm_head(sequence_output[batch, mask_pos])`,
all 50,265 logits of 16 rows), cross-entropy over the two label words' logits, backward,
`torch.optim.AdamW` step, the linear schedule's step, zero_grad; `torch.set_num_threads(cores)`.
Dropout is RoBERTa's 0.1 on both sides by default (LM-BFF trains in train mode; `--dropout=0`
turns it off on both, and then the two first-step losses agree to float tolerance).

What is not equal: ours scores only the label words' rows of the MLM head (2 x 768 instead of
50,265 x 768 at the 16 mask states; the backward of the tied embedding's rows follows), and XLA
compiles the whole step once (compile time reported apart, not timed). Neither clips gradients
(LM-BFF's Trainer clips at norm 1.0). LM-BFF's no-decay list ("bias", "LayerNorm.weight") misses
transformers' `lm_head.layer_norm.weight`; here norms are excluded on both sides, as ours does.

The machines are shared and drift, so the sides take turns: each round times --steps steps of each
(which side goes first alternates), the ratio torch ÷ ours is taken within the round, and the
medians over rounds are reported. The defaults (4 rounds of 2 steps; 6 of 3 took 13 minutes on the
loaded 2-core machine, 14-21 s a step) keep a run to about 6 minutes there. Peak memory is the
process's, both sides together (9.1 GiB there): each holds weights, gradients and two AdamW moments
(2 GB) plus the step's activations.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.t5_forward_backward import machine  # noqa: E402
from configs import cloze  # noqa: E402
from jaxprompt import experiment, sharding  # noqa: E402
from jaxprompt.tasks import pipeline  # noqa: E402
from jaxprompt.models import layer_scan  # noqa: E402

VOCAB, MASK_ID = 50265, 50264  # roberta-base's vocabulary size and <mask> id
SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")  # RoBERTa's ids 0..3
LABEL_WORDS = ("terrible", "great")  # LM-BFF's SST-2 verbalizer (configs/cloze.py's preset)


def write_tokenizer(folder: Path) -> None:
  """A RoBERTa-shaped byte-level BPE (vocab.json + merges.txt): the label words one token each."""
  import tokenizers

  alphabet = sorted(tokenizers.pre_tokenizers.ByteLevel.alphabet())
  vocab = {token: i for i, token in enumerate(SPECIALS + tuple(alphabet))}
  merges = []
  for word in LABEL_WORDS:  # "Ġ" + word, merged left to right
    piece = "Ġ"
    for char in word:
      merges.append(f"{piece} {char}")
      piece += char
      vocab.setdefault(piece, len(vocab))
  for i in range(len(vocab), MASK_ID):
    vocab[f"<unused{i}>"] = i  # fillers: the table has roberta-base's 50,265 rows
  vocab["<mask>"] = MASK_ID
  (folder / "vocab.json").write_text(json.dumps(vocab))
  (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")


def write_checkpoint(folder: Path, layers: int, dropout: float):
  """A random RoBERTa-base RobertaForMaskedLM saved as safetensors with the tokenizer; the model."""
  import torch
  import transformers

  torch.manual_seed(0)
  hf_config = transformers.RobertaConfig(
      vocab_size=VOCAB, hidden_size=768, num_hidden_layers=layers, num_attention_heads=12, intermediate_size=3072,
      max_position_embeddings=514, type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2,
      hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
  )
  model = transformers.RobertaForMaskedLM(hf_config)
  model.save_pretrained(folder, safe_serialization=True)
  write_tokenizer(folder)
  return model


def scan_layers_flag(text: str) -> bool | str:
  return text if text == layer_scan.AUTO else bool(int(text))


def build_ours(folder: Path, args: argparse.Namespace):
  """The product's experiment for this checkpoint, and its jitted train step."""
  config = cloze.get_config("recipe=lm_bff,task=sst2,data=local")
  config.model.family = "bert"
  config.model.checkpoint = str(folder)
  config.model.trainable = "all"
  config.model.dropout_rate = args.dropout
  config.model.scan_layers = args.scan_layers
  config.prompt.method = "none"
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-5
  config.optimizer.weight_decay = 0.01
  config.optimizer.decay_biases_and_norms = False
  config.optimizer.schedule = "linear"
  config.batch_size = args.batch
  config.data.max_input_len = args.length
  config.mesh.data = 1
  exp = experiment.build(config, mesh=sharding.make_mesh({"data": 1}, devices=jax.devices()[:1]))
  return exp, exp.train_step()


def random_batch(batch: int, length: int, mask_id: int, seed: int = 0) -> dict[str, np.ndarray]:
  """A cloze batch in the pipeline's format: random tokens, one mask per row, labels 0 / 1."""
  rng = np.random.default_rng(seed)
  inputs = rng.integers(3, MASK_ID, (batch, length), dtype=np.int32)
  mask_pos = rng.integers(0, length, batch).astype(np.int32)
  inputs[np.arange(batch), mask_pos] = mask_id
  return {
      "inputs": inputs,
      "input_mask": np.ones((batch, length), bool),
      "targets": np.zeros((batch, 1), np.int32),
      "target_mask": np.zeros((batch, 1), bool),
      "label": rng.integers(0, 2, batch).astype(np.int32),
      "group": np.full(batch, -1, np.int32),
      "example_mask": np.ones(batch, bool),
      "soft_positions": np.full((batch, length), -1, np.int32),
      "task_id": np.zeros(batch, np.int32),
      "token_labels": np.full((batch, length), -1, np.int32),
      "token_types": np.zeros((batch, length), np.int32),
      "mask_positions": mask_pos[:, None],
      "candidates": np.zeros((batch, 1, 1), np.int32),
      "candidate_mask": np.zeros((batch, 1, 1), bool),
  }


def torch_step(model, batch: dict[str, np.ndarray], label_ids: list[int], num_steps: int):
  """LM-BFF's prompt-based fine-tuning step on transformers' model: one AdamW step per call."""
  import torch

  torch.set_num_threads(os.cpu_count())
  model.train()
  no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
  named = list(model.named_parameters())  # the tied decoder weight appears once
  groups = [{"params": [p for n, p in named if not any(nd in n for nd in no_decay)], "weight_decay": 0.01},
            {"params": [p for n, p in named if any(nd in n for nd in no_decay)], "weight_decay": 0.0}]
  optimizer = torch.optim.AdamW(groups, lr=1e-5)
  schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / num_steps))
  ids = torch.tensor(batch["inputs"], dtype=torch.long)
  attention = torch.tensor(batch["input_mask"], dtype=torch.long)
  rows, mask_pos = torch.arange(ids.shape[0]), torch.tensor(batch["mask_positions"][:, 0], dtype=torch.long)
  labels = torch.tensor(batch["label"], dtype=torch.long)
  words = torch.tensor(label_ids, dtype=torch.long)

  def step() -> float:
    sequence_output = model.roberta(input_ids=ids, attention_mask=attention)[0]
    logits = model.lm_head(sequence_output[rows, mask_pos])[:, words]  # LM-BFF: [B, V], then the label words
    loss = torch.nn.functional.cross_entropy(logits, labels)
    loss.backward()
    optimizer.step()
    schedule.step()
    optimizer.zero_grad()
    return float(loss.detach())

  return step


def timed(fn, steps: int) -> float:
  """Seconds per step over `steps` consecutive steps."""
  start = time.perf_counter()
  for _ in range(steps):
    fn()
  return (time.perf_counter() - start) / steps


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=4)
  parser.add_argument("--steps", type=int, default=2, help="steps of each side per round")
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--length", type=int, default=128)
  parser.add_argument("--layers", type=int, default=12, help="RoBERTa-base has 12; fewer for a quick check")
  parser.add_argument("--dropout", type=float, default=0.1, help="both sides (RoBERTa's 0.1, as LM-BFF trains)")
  parser.add_argument("--scan_layers", type=scan_layers_flag, default=layer_scan.AUTO,
                      help="ours: config.model.scan_layers, 1, 0 or auto (the product's default: unrolled here)")
  args = parser.parse_args()

  import torch
  import transformers

  began = time.perf_counter()
  with tempfile.TemporaryDirectory() as tmp:
    folder = Path(tmp)
    hf_model = write_checkpoint(folder, args.layers, args.dropout)
    exp, step = build_ours(folder, args)
  words = exp.objective_labels.words
  label_ids = [int(i) for i in words.ids_CxWxK[:, 0, 0]]  # the verbalizer through the product's codec
  assert words.ids_CxWxK.shape == (2, 1, 1) and exp.backbone.codec.cloze.mask_id == MASK_ID, words
  host_batch = random_batch(args.batch, args.length, exp.backbone.codec.cloze.mask_id)
  batch = pipeline.to_global(host_batch, exp.batch_sharding)
  rng = jax.random.key(exp.config.seed)
  holder = {"state": exp.init_state(exp.init_params(jax.random.key(0)))}

  def ours() -> float:
    holder["state"], metrics = step(holder["state"], exp.frozen, batch, rng)
    return float(metrics["train/loss"])  # waits for the step

  theirs = torch_step(hf_model, host_batch, label_ids, exp.config.num_steps)

  start = time.perf_counter()
  first_loss = {"ours": ours()}
  compile_s = time.perf_counter() - start  # the compile and one step
  start = time.perf_counter()
  first_loss["torch"] = theirs()
  torch_first_s = time.perf_counter() - start
  ours(), theirs()  # one more step each: past first-touch allocations

  sides = {"ours": ours, "torch": theirs}
  times = {name: [] for name in sides}
  for r in range(args.rounds):  # take turns, so a slow spell of the machine hits both sides
    for name in (("ours", "torch") if r % 2 == 0 else ("torch", "ours")):
      times[name].append(timed(sides[name], args.steps))
  ratios = [t / o for t, o in zip(times["torch"], times["ours"])]
  seconds = {name: statistics.median(t) for name, t in times.items()}

  print(json.dumps({
      "date": datetime.date.today().isoformat(),
      "machine": machine(),
      "versions": {"jax": jax.__version__, "torch": torch.__version__, "transformers": transformers.__version__},
      "model": f"RoBERTa-base dimensions ({args.layers} layers), random weights, float32, every weight trains,"
               f" dropout {args.dropout}",
      "ours": f"configs/cloze.py:recipe=lm_bff,task=sst2 step, scan_layers={args.scan_layers}",
      "shape": f"batch {args.batch} x {args.length} tokens, one mask per row, label words {label_ids}",
      "rounds": f"{args.rounds} x {args.steps} steps per side, alternating which side goes first",
      "ours_compile_and_first_step_s": round(compile_s, 2),
      "torch_first_step_s": round(torch_first_s, 2),
      "first_step_loss": {name: round(v, 5) for name, v in first_loss.items()},
      "s_per_step": {name: round(s, 3) for name, s in seconds.items()},
      "examples_per_s": {name: round(args.batch / s, 2) for name, s in seconds.items()},
      "torch_over_ours": round(statistics.median(ratios), 3),
      "s_per_step_per_round": {name: [round(s, 3) for s in t] for name, t in times.items()},
      "torch_over_ours_per_round": [round(x, 3) for x in ratios],
      "peak_rss_gib_both_sides": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
      "wall_s": round(time.perf_counter() - began),
  }, indent=2))


if __name__ == "__main__":
  main()
