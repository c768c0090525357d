"""The product's T5 prompt-tuning train step at any size with random frozen weights, for benchmarks.

It is the step `python -m jaxprompt.train` runs (steps.train_step over objectives.seq2seq.loss_sum, a
SoftPrompt prepended to the input, the frozen weights an argument and the state donated), built
without a tokenizer or data: every token valid, so "non-pad tokens" are batch x (P + L + T).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxprompt import steps
from jaxprompt.backbones import FAMILIES, Backbone
from jaxprompt.models.t5 import T5
from jaxprompt.models.t5_config import T5Config
from jaxprompt.prompts import initializers
from jaxprompt.prompts.soft_prompt import SoftPrompt


@dataclasses.dataclass(frozen=True)
class Shape:
  batch: int
  prompt_len: int
  input_len: int
  target_len: int

  @property
  def tokens(self) -> int:
    """Non-pad tokens of a batch, the prompt included."""
    return self.batch * (self.prompt_len + self.input_len + self.target_len)

  def describe(self) -> str:
    return f"batch {self.batch}, {self.prompt_len} prompt + {self.input_len} input, {self.target_len} target tokens"


def add_shape_arguments(parser: argparse.ArgumentParser, batch: int, prompt_len: int, input_len: int,
                        target_len: int) -> None:
  """--size and the batch shape's flags, with a benchmark's defaults."""
  parser.add_argument("--size", default="small", help="T5 v1.1 size preset")
  for name, default in (("batch", batch), ("prompt_len", prompt_len), ("input_len", input_len),
                        ("target_len", target_len)):
    parser.add_argument(f"--{name}", type=int, default=default)


def shape_from(args: argparse.Namespace) -> Shape:
  return Shape(args.batch, args.prompt_len, args.input_len, args.target_len)


def random_batch(shape: Shape, vocab_size: int, seed: int = 0) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  b, length, targets = shape.batch, shape.input_len, shape.target_len
  return {
      "inputs": rng.integers(2, vocab_size, (b, length)).astype(np.int32),
      "input_mask": np.ones((b, length), bool),
      "targets": rng.integers(2, vocab_size, (b, targets)).astype(np.int32),
      "target_mask": np.ones((b, targets), bool),
      "example_mask": np.ones((b,), bool),
  }


def _init(config: T5Config, seed: int = 0) -> Any:
  ids = jnp.ones((1, 8), jnp.int32)
  return nn.meta.unbox(T5(config).init(jax.random.key(seed), ids, ids > 0, ids))


def random_frozen(config: T5Config) -> Any:
  """Random T5 weights in the config's param_dtype (speed does not depend on their values)."""
  return jax.jit(_init, static_argnums=0)(config)


def abstract_frozen(config: T5Config) -> Any:
  """The weights' shapes and dtypes only, for lowering without allocating them."""
  return jax.eval_shape(functools.partial(_init, config))


class PromptStep:
  """A jitted prompt-tuning step with its state; `__call__` runs one step and waits for it."""

  def __init__(self, config: T5Config, shape: Shape, frozen: Any = None,
               optimizer: optax.GradientTransformation | None = None):
    self.config, self.shape = config, shape
    backbone = Backbone(FAMILIES["t5"], config, None, tokenizer=None, codec=None)
    method = SoftPrompt(shape.prompt_len, config.d_model, initializers.uniform())
    optimizer = optimizer or optax.adam(1e-3)
    self.frozen = random_frozen(config) if frozen is None else frozen
    self.batch = jax.tree.map(jnp.asarray, random_batch(shape, config.vocab_size))
    params = method.init(jax.random.key(1), self.batch)["params"]
    self.state = steps.init_train_state(nn.meta.unbox(params), optimizer)
    self.rng = jax.random.key(2)
    fn = functools.partial(steps.train_step, loss_sum=backbone.loss_sum(method), optimizer=optimizer,
                           schedule=optax.constant_schedule(1e-3))
    self.step = jax.jit(fn, donate_argnums=(0,))

  def arguments(self) -> tuple:
    return self.state, self.frozen, self.batch, self.rng

  @functools.cached_property
  def compiled(self):
    """The step compiled for this shape, once (memory analysis and the profile's HLO both read it)."""
    return self.step.lower(*self.arguments()).compile()

  def __call__(self) -> dict[str, jax.Array]:
    self.state, metrics = self.step(*self.arguments())
    return jax.block_until_ready(metrics)
