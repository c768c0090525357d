"""Serving SmolLM2-135M prompts from one bank against PEFT serving the same prompts, in one run.

    python -m bench.serve_vs_peft --gguf=/path/SmolLM2-135M-Instruct.Q4_1.gguf

Four SST-2 prompt-tuning prompts (the demo's config, `configs/smollm_sst2_prompt.py`, at --prompt_lengths
soft tokens, each started from the label words at its own seed) are served to the same requests, the
first --records SST-2 dev sentences each sent to every prompt, the prompts interleaved:

    ours   `jaxprompt.serving.requests.serve` (what `python -m jaxprompt.serve` and
           `python -m jaxprompt.infer --bank` run per batch of requests): each request rendered by its
           prompt's task, all of them sorted by length into the config's buckets across prompts, one
           jitted step per batch of eval_batch_size rows mixing the prompts (prefill, rank classification
           of the two label words, max_decode_len greedy tokens).
    transformers   what a PyTorch user serving these prompts runs: transformers' Llama on the same
           GGUF in float32, the four prompts exported by `jaxprompt.peft_adapters.export_adapter` and
           loaded as adapters of one `PeftModel`. PEFT's prompt learning applies one adapter per
           forward pass (`active_peft_config`; mixed-adapter batches are LoRA-only), so requests are
           grouped by prompt, each group sorted by length (as ours are) and cut into batches of
           eval_batch_size, left-padded; each batch's prompt goes between its padding and its input
           and transformers' `generate(max_new_tokens=max_decode_len, greedy)` runs on those
           embeddings. A class's score is its label word's log-probability at the first new token:
           the same rank classification of one-token label words.
    peft_generate  the same groups and batches through `PeftModel.generate` itself, which puts the
           virtual tokens in front of the padding and ignores position ids, so a padded row's
           positions shift by its padding and its answer differs from the row served alone (its
           agreement shows by how much).

Every side answers each request with its label, both labels' scores and the generated text; the
bench reports how far each side's answers agree with ours (labels, texts, largest score difference).
The sides take turns over --rounds, each round serving all requests once per side, untimed warm-up
first (ours compiles a step per bucket); the ratio is taken within each round, its median reported.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.t5_forward_backward import machine  # noqa: E402
from jaxprompt import experiment, peft_adapters  # noqa: E402
from jaxprompt.checkpoint import export_prompt  # noqa: E402
from jaxprompt.serving.bank import PromptBank, load_bank  # noqa: E402
from jaxprompt.serving.bank_file import config_with_overrides  # noqa: E402
from jaxprompt.serving.loading import PromptSource  # noqa: E402
from jaxprompt.serving.requests import Request, Response, render, serve  # noqa: E402
from jaxprompt.tasks import readers  # noqa: E402
from jaxprompt.tasks.templates import Template  # noqa: E402

DEMO_CONFIG = f"{Path(__file__).resolve().parents[1]}/configs/smollm_sst2_prompt.py:data=local"


def prompt_config(gguf: str, length: int, serving: dict | None = None):
  """The demo's config (configs/smollm_sst2_prompt.py, local data) on `gguf` at `length` soft tokens;
  `serving`: more dotted-key overrides (the bank's settings)."""
  return config_with_overrides(DEMO_CONFIG, {"model.checkpoint": gguf, "mesh.data": 1, "prompt.length": length,
                                             **(serving or {})}, "bench/serve_vs_peft.py")


def make_bank(gguf: str, lengths: list[int], folder: Path, serving: dict) -> tuple[PromptBank, dict[str, Path]]:
  """A bank of one prompt per length (at seeds 0, 1, ...), each also written as a PEFT adapter;
  `serving`: the bank config's overrides (dotted keys)."""
  backbone = experiment.build(prompt_config(gguf, lengths[0]))
  sources, adapters = [], {}
  for seed, length in enumerate(lengths):
    name = f"sst2-{length}tok-seed{seed}"
    exp = experiment.on_backbone(prompt_config(gguf, length), backbone.backbone, backbone.mesh)
    params = exp.init_params(jax.random.key(seed))
    sources.append(PromptSource(name, exp.config, str(export_prompt(folder, name, exp.method.export(params)))))
    adapters[name] = folder / "peft" / name
    peft_adapters.export_adapter(exp.method, params, exp.backbone, adapters[name])
  return load_bank(prompt_config(gguf, lengths[0], serving), sources), adapters


def sst2_requests(bank: PromptBank, records: int) -> list[Request]:
  """Each of the first `records` dev sentences sent to every prompt, the prompts interleaved."""
  (task,) = experiment.tasks_from_config(bank.exp.config)
  sentences = [r.fields["sentence"] for r in readers.read_records(task.eval)[:records]]
  return [Request(p.name, {"sentence": s}) for s in sentences for p in bank.prompts]


class PeftServer:
  """The four prompts as adapters of one PeftModel on transformers' Llama, served group by group."""

  def __init__(self, gguf: Path, adapters: dict[str, Path], bank: PromptBank):
    import peft
    import torch
    import transformers

    torch.set_num_threads(os.cpu_count())
    self.torch = torch
    hf = transformers.AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    (first, path), *rest = adapters.items()
    self.model = peft.PeftModel.from_pretrained(hf, str(path), adapter_name=first)
    for name, path in rest:
      self.model.load_adapter(str(path), adapter_name=name)
    self.model.eval()
    self.base = self.model.get_base_model()
    self.tokenizer = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    self.tokenizer.padding_side = "left"
    if self.tokenizer.pad_token_id is None:
      self.tokenizer.pad_token_id = self.tokenizer.eos_token_id
    config = bank.exp.config
    self.batch_size, self.new_tokens = config.eval_batch_size, config.max_decode_len
    self.specs = {p.name: p.spec for p in bank.prompts}
    self.versions = {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}
    self.label_ids = {}
    for name, spec in self.specs.items():
      ids = [self.tokenizer.encode(text, add_special_tokens=False) for text in spec.verbalizer]
      if any(len(i) != 1 for i in ids):
        raise ValueError(f"prompt {name!r}: label words {spec.verbalizer} are not one token each: {ids}")
      self.label_ids[name] = [i[0] for i in ids]

  def serve(self, requests: list[Request], peft_generate: bool = False) -> list[Response]:
    """Every request's response; `peft_generate`: through PeftModel.generate, whose prompt learning
    puts the virtual tokens in front of the left padding and ignores position ids, so a padded row's
    positions shift by its padding; otherwise the prompt goes between the padding and the input and
    transformers' generate numbers the positions from the attention mask (unpadded rows: the same)."""
    groups = collections.defaultdict(list)
    for i, request in enumerate(requests):
      groups[request.prompt].append(i)
    responses: list[Response | None] = [None] * len(requests)
    with self.torch.inference_mode():
      for name, members in groups.items():
        self.model.set_adapter(name)
        spec = self.specs[name]
        template = Template(spec.template)  # our rendering (fields trimmed): both sides read the same text
        texts = [template.render(requests[i].fields, f"request {i}") for i in members]
        ids = dict(zip(members, self.tokenizer(texts, add_special_tokens=False)["input_ids"], strict=True))
        members = sorted(members, key=lambda i: len(ids[i]))
        for start in range(0, len(members), self.batch_size):
          batch = members[start : start + self.batch_size]
          encoded = self.tokenizer.pad({"input_ids": [ids[i] for i in batch]}, return_tensors="pt")
          settings = dict(max_new_tokens=self.new_tokens, do_sample=False, output_logits=True,
                          return_dict_in_generate=True, pad_token_id=self.tokenizer.pad_token_id)
          if peft_generate:
            out = self.model.generate(**encoded, **settings)
            new = out.sequences[:, encoded["input_ids"].shape[1]:]
          else:
            out = self.base.generate(**self._prompted(name, encoded), **settings)
            new = out.sequences  # from inputs_embeds, generate returns the new tokens only
          logp = self.torch.log_softmax(out.logits[0].float(), dim=-1)[:, self.label_ids[name]].numpy()
          for row, i in enumerate(batch):
            scores = dict(zip(spec.label_names, map(float, logp[row]), strict=True))
            text = self.tokenizer.decode(new[row], skip_special_tokens=True)
            responses[i] = Response(spec.label_names[int(np.argmax(logp[row]))], scores, text)
    return responses

  def _prompted(self, name: str, encoded) -> dict:
    """The left-padded batch's embeddings with adapter `name`'s prompt after each row's padding."""
    torch = self.torch
    prompt = self.model.prompt_encoder[name].embedding.weight
    embeds = self.base.get_input_embeddings()(encoded["input_ids"])
    pads = (1 - encoded["attention_mask"]).sum(1).tolist()
    rows = [torch.cat([e[:p], prompt, e[p:]]) for e, p in zip(embeds, pads, strict=True)]
    masks = [torch.cat([m[:p], torch.ones(len(prompt), dtype=m.dtype), m[p:]])
             for m, p in zip(encoded["attention_mask"], pads, strict=True)]
    return {"inputs_embeds": torch.stack(rows), "attention_mask": torch.stack(masks)}


def agreement(ours: list[Response], theirs: list[Response]) -> dict:
  diff = max(abs(o.scores[k] - t.scores[k]) for o, t in zip(ours, theirs) for k in o.scores)
  return {"labels_equal": sum(o.label == t.label for o, t in zip(ours, theirs)) / len(ours),
          "texts_equal": sum(o.text == t.text for o, t in zip(ours, theirs)) / len(ours),
          "max_abs_score_difference": float(diff)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--gguf", required=True)
  parser.add_argument("--prompt_lengths", default="8,16,16,24", help="one prompt per length")
  parser.add_argument("--records", type=int, default=64, help="dev sentences, each sent to every prompt")
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--per_call", type=int, default=0,
                      help="requests handed to each side at a time (a server's batch under that load); 0: all at once")
  parser.add_argument("--eval_batch_size", type=int, default=0, help="rows per batch, both sides; default: the config's (40)")
  parser.add_argument("--bucket_lengths", default="", help="our input buckets (config.data.bucket_lengths); default: the config's")
  parser.add_argument("--batch_sizes", default="", help="our batch sizes (config.serving.batch_sizes), 'none': eval_batch_size only; default: the config's")
  args = parser.parse_args()

  with tempfile.TemporaryDirectory() as folder:
    ints = lambda text: tuple(int(n) for n in text.split(",") if n)
    serving = {key: () if value == "none" else ints(value) for key, value in (
        ("data.bucket_lengths", args.bucket_lengths), ("serving.batch_sizes", args.batch_sizes)) if value}
    if args.eval_batch_size:
      serving["eval_batch_size"] = args.eval_batch_size
    bank, adapters = make_bank(args.gguf, list(ints(args.prompt_lengths)), Path(folder), serving)
    theirs = PeftServer(Path(args.gguf), adapters, bank)
  requests = sst2_requests(bank, args.records)
  lengths = [len(f.inputs) for f in render(bank, requests)]
  calls = [requests[i : i + (args.per_call or len(requests))] for i in range(0, len(requests), args.per_call or len(requests))]
  each = lambda serve_calls: lambda: [r for call in calls for r in serve_calls(call)]
  sides = {"ours": each(lambda call: serve(bank, call)), "transformers": each(theirs.serve),
           "peft_generate": each(lambda call: theirs.serve(call, peft_generate=True))}
  answers = {name: side() for name, side in sides.items()}  # warm-up: ours compiles one step per bucket
  checked = {name: agreement(answers["ours"], answers[name]) for name in sides if name != "ours"}

  times = {name: [] for name in sides}
  for _ in range(args.rounds):  # take turns, so a slow spell of the machine hits both sides
    for name, side in sides.items():
      start = time.perf_counter()
      side()
      times[name].append(time.perf_counter() - start)
  config = bank.exp.config
  print(json.dumps({
      "date": datetime.date.today().isoformat(),
      "machine": machine(),
      "versions": {"jax": jax.__version__, **theirs.versions},
      "load": f"{len(requests)} requests: {args.records} SST-2 dev sentences x {len(bank.prompts)} prompts"
              f" ({args.prompt_lengths} soft tokens), batches of {config.eval_batch_size},"
              f" {config.max_decode_len} generated tokens",
      "ours": {"bucket_lengths": list(config.data.bucket_lengths), "batch_sizes": list(bank.batch_sizes)},
      "per_call": args.per_call or len(requests),
      "input_tokens": {"mean": round(float(np.mean(lengths)), 1), "max": int(max(lengths))},
      "agreement_with_ours": checked,
      "requests_per_s": {name: round(len(requests) / statistics.median(t), 1) for name, t in times.items()},
      "s_per_round": {name: [round(s, 3) for s in t] for name, t in times.items()},
      "time_over_ours": {name: round(statistics.median(t / o for t, o in zip(times[name], times["ours"])), 2)
                         for name in sides if name != "ours"},
  }, indent=2))


if __name__ == "__main__":
  main()
