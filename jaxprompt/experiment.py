"""From a config to the pieces of a run: mesh, frozen backbone, tokenizer, task, prompt method,
optimizer, and the jitted steps with their shardings. Shared by train.py and evaluate.py."""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxprompt import sharding as sharding_lib
from jaxprompt import steps
from jaxprompt.checkpoint import backbone_fingerprint, param_shapes
from jaxprompt.models.t5 import T5
from jaxprompt.models.t5_config import T5Config
from jaxprompt.optimizers import make_optimizer
from jaxprompt.prompts import initializers
from jaxprompt.prompts.soft_prompt import SoftPrompt
from jaxprompt.tasks import features as features_lib
from jaxprompt.tasks import readers, task_spec
from jaxprompt.weights.t5_loader import abstract_t5_params, load_t5
from jaxprompt.weights.tokenizer import SentencePieceTokenizer, load_t5_tokenizer

log = logging.getLogger(__name__)
METHODS = ("prompt_tuning",)


def load_backbone(model: ml_collections.ConfigDict, mesh: Mesh, rules) -> tuple[T5Config, Any]:
  """The frozen T5: streamed from `model.checkpoint` into its shardings, or randomly initialised."""
  run_fields = dict(dtype=model.dtype, scan_layers=model.scan_layers, remat_policy=model.remat_policy,
                    dropout_rate=model.dropout_rate)
  if model.checkpoint:
    return load_t5(model.checkpoint, mesh=mesh, rules=rules, param_dtype=model.param_dtype, **run_fields)
  config = T5Config.preset(model.size, param_dtype=model.param_dtype, **run_fields)
  shardings = sharding_lib.logical_to_shardings(abstract_t5_params(config), mesh, rules)
  ids = jnp.zeros((1, 1), jnp.int32)
  init = lambda key: nn.meta.unbox(T5(config).init(key, ids, ids > 0, ids)["params"])
  params = jax.jit(init, out_shardings=shardings)(jax.random.key(model.init_seed))
  return config, {"params": params}


def make_method(prompt: ml_collections.ConfigDict, model_config: T5Config, frozen: Any,
                tokenizer: SentencePieceTokenizer, task: task_spec.TaskSpec) -> SoftPrompt:
  """The prompt method module; its initialiser may read the frozen embedding table."""
  if prompt.method not in METHODS:
    raise ValueError(f"config.prompt.method={prompt.method!r} is not one of {METHODS}")
  embedding = frozen["params"]["token_embedder"]["embedding"]
  if prompt.init == "uniform":
    init = initializers.uniform(prompt.uniform_scale)
  elif prompt.init == "vocab":
    init = initializers.sampled_vocab(embedding, prompt.vocab_population)
  elif prompt.init == "class_labels":
    label_ids = [tokenizer.encode(text, add_eos=False) for text in task.verbalizer]
    init = initializers.class_labels(embedding, label_ids, prompt.vocab_population)
  elif prompt.init == "file":
    init = initializers.from_file(prompt.init_file)
  else:
    raise ValueError(f"config.prompt.init={prompt.init!r} is not one of uniform, vocab, class_labels, file")
  return SoftPrompt(prompt.length, model_config.d_model, init, prompt.placement)


@dataclasses.dataclass
class Experiment:
  """Everything built from one config."""

  config: ml_collections.ConfigDict
  mesh: Mesh
  model_config: T5Config
  frozen: Any
  tokenizer: SentencePieceTokenizer
  task: task_spec.TaskSpec
  method: SoftPrompt
  optimizer: optax.GradientTransformation
  schedule: optax.Schedule

  @property
  def rules(self):
    return tuple(self.config.rules)

  @property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, P())

  @property
  def batch_sharding(self) -> NamedSharding:
    return NamedSharding(self.mesh, P(("data", "fsdp")))

  def init_params(self, rng: jax.Array) -> Any:
    """Fresh prompt params (eager: the initialisers read the sharded embedding table)."""
    dummy = {"input_mask": jnp.ones((1, 8), bool)}
    params = nn.meta.unbox(self.method.init(rng, dummy)["params"])
    return jax.device_put(params, self.replicated)

  def init_state(self, params: Any) -> steps.TrainState:
    return jax.jit(functools.partial(steps.init_train_state, optimizer=self.optimizer),
                   out_shardings=self.replicated)(params)

  def abstract_state(self) -> steps.TrainState:
    """The TrainState's shapes with their (replicated) shardings, for restoring into."""
    abstract = jax.eval_shape(lambda: self.init_state(self.init_params(jax.random.key(0))))
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=self.replicated), abstract)

  def checkpoint_meta(self, params: Any) -> dict:
    """What a checkpoint must match to be restored here."""
    return {
        "method": self.config.prompt.method,
        "param_shapes": param_shapes(params),
        "fingerprint": backbone_fingerprint(self.model_config, self.frozen),
    }

  def train_step(self):
    """The jitted train step: (state, frozen, batch, rng) -> (state, metrics); state donated."""
    model = T5(self.model_config, deterministic=self.model_config.dropout_rate == 0)
    fn = functools.partial(
        steps.train_step, model=model, method=self.method, optimizer=self.optimizer,
        schedule=self.schedule, num_microbatches=self.config.num_microbatches,
    )
    return jax.jit(fn, out_shardings=(self.replicated, self.replicated), donate_argnums=(0,))

  def eval_step(self):
    """The jitted eval step: (prompt params, frozen, batch, label targets, label mask) -> outputs."""
    fn = functools.partial(steps.eval_step, model=T5(self.model_config), method=self.method,
                           max_decode_len=self.config.max_decode_len)
    return jax.jit(fn)


def build(config: ml_collections.ConfigDict, mesh: Mesh | None = None) -> Experiment:
  """Mesh, backbone, tokenizer, task, method and optimizer of a config."""
  mesh = mesh or sharding_lib.make_mesh(config.mesh.to_dict())
  model_config, frozen = load_backbone(config.model, mesh, tuple(config.rules))
  tokenizer = load_t5_tokenizer(config.model.tokenizer)
  task = task_spec.task_spec_from_config(config.task)
  method = make_method(config.prompt, model_config, frozen, tokenizer, task)
  optimizer, schedule = make_optimizer(config.optimizer, config.num_steps)
  return Experiment(config, mesh, model_config, frozen, tokenizer, task, method, optimizer, schedule)


def load_features(exp: Experiment, split: str) -> list[features_lib.Feature]:
  """Records of `config.data.<split>` (train or eval), rendered and tokenised."""
  data = exp.config.data
  source = task_spec.data_source_from_config(data[split])
  records = readers.read_records(source)
  feats, stats = features_lib.featurize(  # applies the task's record flattening (MultiRC) itself
      records, exp.task, exp.tokenizer, data.max_input_len, data.max_target_len, data.skip_bad_examples
  )
  log.info("%s data (%s): %s", split, source, stats.summary())
  if split == "eval" and data.max_eval_examples:
    feats = feats[: data.max_eval_examples]
  if not feats:
    raise ValueError(f"config.data.{split} gave no usable examples ({stats.summary()})")
  return feats
