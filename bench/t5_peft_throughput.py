"""Our T5 prompt-tuning step against Hugging Face PEFT's `PromptTuning` on transformers' PyTorch T5,
side by side in one run on the same machine: same shapes, float32, a whole optimizer step each.

    python bench/t5_peft_throughput.py --size=small --batch=8 --input_len=128 --prompt_len=20 --target_len=8

Both use T5 v1.1 dimensions with random weights (speed does not depend on their values) and Adam on
the prompt only: ours is the jitted forward + backward to the soft prompt + update (the frozen weights
an argument, the prompt state donated); PEFT's is `loss.backward()` and `optimizer.step()` with every
backbone weight frozen (`requires_grad=False`). Tokens are non-pad tokens, prompt included.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.t5_forward_backward import machine, make_loss, time_call  # noqa: E402
from jaxprompt.models.t5 import T5  # noqa: E402
from jaxprompt.models.t5_config import T5Config  # noqa: E402


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", default="small")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--input_len", type=int, default=128)
  parser.add_argument("--prompt_len", type=int, default=20)
  parser.add_argument("--target_len", type=int, default=8)
  parser.add_argument("--repeats", type=int, default=10)
  args = parser.parse_args()

  config = T5Config.preset(args.size, dtype="float32", param_dtype="float32")
  rng = np.random.default_rng(0)
  ids_np = rng.integers(2, 32000, (args.batch, args.input_len))
  labels_np = rng.integers(2, 32000, (args.batch, args.target_len))

  # Ours.
  model = T5(config)
  ids, labels = jnp.asarray(ids_np, jnp.int32), jnp.asarray(labels_np, jnp.int32)
  mask = jnp.ones_like(ids, bool)
  params = nn.meta.unbox(jax.jit(model.init)(jax.random.key(0), ids[:1, :8], mask[:1, :8], labels[:1]))
  optimizer = optax.adam(1e-3)
  prompt = jnp.asarray(rng.normal(size=(args.prompt_len, config.d_model)), jnp.float32)
  state = (prompt, optimizer.init(prompt))
  loss = make_loss(model)

  def train_step(state, params, ids, mask, labels):
    prompt, opt_state = state
    value, grad = jax.value_and_grad(loss)(prompt, params, ids, mask, labels)
    updates, opt_state = optimizer.update(grad, opt_state, prompt)
    return (optax.apply_updates(prompt, updates), opt_state), value

  step = jax.jit(train_step, donate_argnums=(0,))
  holder = {"state": state}

  def ours():
    holder["state"], value = step(holder["state"], params, ids, mask, labels)
    jax.block_until_ready(value)

  ours_s = time_call(ours, repeats=args.repeats)  # median after a warm-up (the compile)

  # PEFT on transformers' PyTorch T5, the same dimensions.
  import peft
  import torch
  import transformers

  torch.set_num_threads(os.cpu_count())
  torch.manual_seed(0)
  hf_config = transformers.T5Config(
      vocab_size=config.vocab_size, d_model=config.d_model, d_kv=config.d_kv, d_ff=config.d_ff,
      num_layers=config.num_encoder_layers, num_decoder_layers=config.num_decoder_layers,
      num_heads=config.num_heads, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
      dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0,
  )
  hf = transformers.T5ForConditionalGeneration(hf_config)
  peft_model = peft.get_peft_model(hf, peft.PromptTuningConfig(
      task_type=peft.TaskType.SEQ_2_SEQ_LM, num_virtual_tokens=args.prompt_len))
  peft_model.train()
  torch_optimizer = torch.optim.Adam([p for p in peft_model.parameters() if p.requires_grad], lr=1e-3)
  t_ids, t_labels = torch.tensor(ids_np), torch.tensor(labels_np)
  t_mask = torch.ones_like(t_ids)

  def theirs():
    out = peft_model(input_ids=t_ids, attention_mask=t_mask, labels=t_labels)
    out.loss.backward()
    torch_optimizer.step()
    torch_optimizer.zero_grad()

  peft_s = time_call(theirs, repeats=args.repeats)

  tokens = args.batch * (args.prompt_len + args.input_len + args.target_len)
  print(json.dumps({
      "date": datetime.date.today().isoformat(),
      "machine": machine(),
      "versions": {"jax": jax.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
                   "peft": peft.__version__},
      "model": f"T5 v1.1 {args.size} dimensions, float32, random weights",
      "shape": f"batch {args.batch}, {args.prompt_len} prompt + {args.input_len} input, {args.target_len} target",
      "ours_s_per_step": round(ours_s, 4),
      "peft_s_per_step": round(peft_s, 4),
      "ours_tokens_per_s": round(tokens / ours_s),
      "peft_tokens_per_s": round(tokens / peft_s),
      "ours_over_peft": round(peft_s / ours_s, 2),
  }, indent=2))


if __name__ == "__main__":
  main()
