"""The interface every backbone family implements, and a backbone of one family.

A family (T5, Llama-style decoders, BERT-style encoders, ...) is one `Family` subclass in its own
module, listed once in backbones/__init__.py's table. Code outside a family module asks the
interface — which prompt methods it takes, its text objective, attention shapes, FLOPs — and never
compares family names.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from flax import traverse_util
from jax.sharding import Mesh

from jaxprompt import objectives
from jaxprompt import sharding as sharding_lib
from jaxprompt.flops import StepFlops
from jaxprompt.models import layer_scan
from jaxprompt.prompts.prefix_tuning import AttentionShape
from jaxprompt.tasks.codec import TextCodec
from jaxprompt.weights import quantize

# What a prompt method with its own head (P-tuning v2) trains: `method.objective` is one of these.
HEAD_OBJECTIVES = ("classify", "tag")


def run_fields(model: ml_collections.ConfigDict) -> dict[str, Any]:
  """How the backbone runs (not what it is): the config.model keys every family's config takes."""
  layer_scan.check(model.scan_layers, "config.model")
  return dict(dtype=model.dtype, scan_layers=model.scan_layers, remat_policy=model.remat_policy,
              dropout_rate=model.dropout_rate)


class Family(abc.ABC):
  """Loading, text codec, methods, objectives, attention shapes and FLOPs of one backbone family."""

  name: ClassVar[str]
  methods: ClassVar[tuple[str, ...]]  # the prompt methods it can train (config.prompt.method)
  text_objective: ClassVar[str]  # a key of objectives.OBJECTIVES: how a verbalizer's text is scored

  @abc.abstractmethod
  def load(self, model: ml_collections.ConfigDict, mesh: Mesh, rules) -> tuple[Any, Any]:
    """(model config, {"params": ...}) streamed from `model.checkpoint` into the mesh's shardings."""

  @abc.abstractmethod
  def read_config(self, model: ml_collections.ConfigDict) -> Any:
    """The config of `model.checkpoint` (config.json, GGUF metadata, T5X shapes); no weights read."""

  @abc.abstractmethod
  def preset(self, model: ml_collections.ConfigDict, tokenizer: Any) -> Any:
    """The config of `model.size` for a randomly initialised backbone (no checkpoint)."""

  @abc.abstractmethod
  def init_params(self, config: Any, key: jax.Array) -> Any:
    """Freshly initialised params, boxed with their logical axis names."""

  @abc.abstractmethod
  def module(self, config: Any, deterministic: bool = True) -> nn.Module:
    """The model; `deterministic=False` turns on its dropout (needs a 'dropout' rng)."""

  @abc.abstractmethod
  def tokenizer(self, model: ml_collections.ConfigDict) -> Any:
    """The tokenizer of `model.tokenizer`, else of the checkpoint."""

  @abc.abstractmethod
  def codec(self, tokenizer: Any, model: ml_collections.ConfigDict) -> TextCodec:
    """How this family turns an example's texts into ids."""

  @abc.abstractmethod
  def embed_dim(self, config: Any) -> int:
    """The width of the input embeddings, which soft prompts share."""

  def hidden_dim(self, config: Any) -> int:
    """The width of the layers' states, which heads read (the embeddings' width unless factorised)."""
    return self.embed_dim(config)

  @abc.abstractmethod
  def attention_shapes(self, config: Any) -> tuple[AttentionShape, ...]:
    """Key/value shapes of every attention kind the family has (what prefixes are made for)."""

  def embedding(self, frozen: Any) -> jax.Array:
    """The input embedding table [vocab, embed] (what vocabulary-based prompt inits sample)."""
    return frozen["params"]["token_embedder"]["embedding"]

  def head_features(self, model: nn.Module, frozen: Any, batch: dict, prompt: Any, token_level: bool,
                    rng: jax.Array | None) -> jax.Array:
    """What a method's head reads: a sequence feature [B, D], or every position's state [B, T, D]."""
    raise ValueError(f"a prompt method with a head does not apply to a {self.name} backbone")

  def step_flops(self, config: Any, batch: int, prompt_len: int, input_len: int, target_len: int) -> StepFlops | None:
    """Analytic matmul FLOPs of a prompt-tuning step; None where the family has no count."""
    return None

  def planned_config(self, model: ml_collections.ConfigDict) -> Any:
    """The config a plan compiles for, read without weights: the checkpoint's, else the preset."""
    if model.checkpoint:
      return self.read_config(model)
    return self.preset(model, self.tokenizer(model))

  def file_block_formats(self, model: ml_collections.ConfigDict, config: Any) -> dict[str, tuple[str, int]]:
    """param path -> the (scheme, block) of the checkpoint's own quantised blocks, read without
    weights (what config.model.quantization="gguf" keeps); empty for files without any."""
    return {}

  def abstract_params(self, config: Any) -> Any:
    return jax.eval_shape(functools.partial(self.init_params, config), jax.random.key(0))


@dataclasses.dataclass
class Backbone:
  """A loaded frozen backbone (or its abstract shapes, for the planner) and what a run asks of it."""

  family: Family
  config: Any
  frozen: Any
  tokenizer: Any
  codec: TextCodec | None

  @property
  def embed_dim(self) -> int:
    return self.family.embed_dim(self.config)

  @property
  def hidden_dim(self) -> int:
    return self.family.hidden_dim(self.config)

  @property
  def model(self) -> nn.Module:
    """The frozen model, deterministic."""
    return self.family.module(self.config)

  @property
  def training_model(self) -> nn.Module:
    """The model a training loss runs: with dropout when the config has any."""
    return self.family.module(self.config, deterministic=self.config.dropout_rate == 0)

  @property
  def embedding(self) -> jax.Array:
    return self.family.embedding(self.frozen)

  def check_method(self, method: str) -> None:
    if method not in self.family.methods:
      raise ValueError(
          f"config.prompt.method={method!r} does not apply to a {self.family.name} backbone;"
          f" it takes {self.family.methods}"
      )

  def attention_shapes(self, kinds: tuple[str, ...], key: str) -> tuple[AttentionShape, ...]:
    """The key/value shapes of the attention kinds `kinds` (empty: every kind the family has)."""
    every = self.family.attention_shapes(self.config)
    by_kind = {shape.kind: shape for shape in every}
    unknown = [k for k in kinds if k not in by_kind]
    if unknown:
      raise ValueError(
          f"{key}={kinds}: a {self.family.name} backbone has the attention kinds {tuple(by_kind)}, not {unknown}"
      )
    return tuple(by_kind[k] for k in kinds) if kinds else every

  def objective(self, method: nn.Module | None) -> objectives.Objective:
    """A method with a head trains its head; every other method the family's text objective."""
    has_head = getattr(method, "objective", None) in HEAD_OBJECTIVES
    return objectives.OBJECTIVES["head" if has_head else self.family.text_objective]

  def loss_sum(self, method: nn.Module, labels: Any = None):
    """The training loss bound to the model: (prompt params, frozen, batch, rng) -> (sum, count);
    `labels` is what the objective's `labels()` gave for the run's tasks."""
    return self.objective(method).bind_loss(self, method, labels)

  def eval_step(self, method: nn.Module | None, labels: Any, max_decode_len: int):
    """The eval step: (prompt params, frozen, batch, label targets, label mask) -> outputs."""
    return self.objective(method).bind_eval(self, method, labels, max_decode_len)


def random_params(family: Family, config: Any, mesh: Mesh, rules, seed: int,
                  quantization: quantize.Quantization = quantize.NONE) -> Any:
  """Random params created directly in their shardings (tests and demos without a checkpoint),
  then quantised kernel by kernel as a checkpoint would be."""
  hashable_rules = tuple((name, tuple(axes) if isinstance(axes, list) else axes) for name, axes in rules)
  boxed, init = _sharded_init(family, config, mesh, hashable_rules)
  params = init(jax.random.key(seed))
  if quantization.enabled:
    targets = quantize.quantized_targets(sharding_lib.param_targets(boxed, mesh, rules), boxed, quantization)
    flat = quantize.quantize_params(traverse_util.flatten_dict(params, sep="/"), targets)
    params = traverse_util.unflatten_dict(flat, sep="/")
  return {"params": params}


@functools.cache
def _sharded_init(family: Family, config: Any, mesh: Mesh, rules: tuple) -> tuple[Any, Any]:
  """The abstract params and their jitted init, once per backbone shape and layout: tracing even a
  tiny backbone's init takes ~1.5 s, and a process that builds the same backbone again (an evaluation
  after training, LM-BFF's candidates, the tests) reuses both. Each call draws new arrays."""
  boxed = family.abstract_params(config)
  shardings = sharding_lib.logical_to_shardings(boxed, mesh, rules)
  init = lambda key: nn.meta.unbox(family.init_params(config, key))
  return boxed, jax.jit(init, out_shardings=shardings)


def dummy_ids() -> jax.Array:
  """The [1, 1] ids a family's init traces with (no param depends on the length)."""
  return jnp.zeros((1, 1), jnp.int32)
