"""From a config to the pieces of a run: mesh, frozen backbone, task, prompt method, optimizer, and
the jitted steps with their shardings. Shared by train.py and evaluate.py."""

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
from jaxprompt.backbones import Backbone, load_backbone
from jaxprompt.checkpoint import backbone_fingerprint, param_shapes
from jaxprompt.optimizers import make_optimizer
from jaxprompt.prompts import initializers
from jaxprompt.prompts.soft_prompt import SoftPrompt
from jaxprompt.tasks import features as features_lib
from jaxprompt.tasks import icl, readers, task_spec

log = logging.getLogger(__name__)
METHODS = ("prompt_tuning", "none")  # none: the frozen model alone (zero-shot / k-shot evaluation)
LOSSES = ("vocabulary", "label_words")


def make_method(prompt: ml_collections.ConfigDict, backbone: Backbone, task: task_spec.TaskSpec) -> SoftPrompt | None:
  """The prompt method module (None for "none"); its initialiser may read the embedding table."""
  if prompt.method not in METHODS:
    raise ValueError(f"config.prompt.method={prompt.method!r} is not one of {METHODS}")
  if prompt.method == "none":
    return None
  embedding = backbone.embedding
  if prompt.init == "uniform":
    init = initializers.uniform(prompt.uniform_scale)
  elif prompt.init == "vocab":
    init = initializers.sampled_vocab(embedding, prompt.vocab_population)
  elif prompt.init == "class_labels":
    label_ids = [backbone.codec.encode_words(text) for text in task.verbalizer]
    init = initializers.class_labels(embedding, label_ids, prompt.vocab_population)
  elif prompt.init == "file":
    init = initializers.from_file(prompt.init_file)
  else:
    raise ValueError(f"config.prompt.init={prompt.init!r} is not one of uniform, vocab, class_labels, file")
  return SoftPrompt(prompt.length, backbone.embed_dim, init, prompt.placement)


def label_word_ids(task: task_spec.TaskSpec, backbone: Backbone) -> jax.Array:
  """The one token of each class's label words, for the label-words loss; errors if not one token."""
  ids = [backbone.codec.encode_label(text) for text in task.verbalizer]
  if any(len(i) != 1 for i in ids) or len({i[0] for i in ids}) != len(ids):
    raise ValueError(
        f"config.loss_over='label_words' needs one distinct token per label; the verbalizer "
        f"{task.verbalizer} tokenizes to {ids}"
    )
  return jnp.asarray([i[0] for i in ids], jnp.int32)


@dataclasses.dataclass
class Experiment:
  """Everything built from one config."""

  config: ml_collections.ConfigDict
  mesh: Mesh
  backbone: Backbone
  task: task_spec.TaskSpec
  method: SoftPrompt | None
  optimizer: optax.GradientTransformation
  schedule: optax.Schedule

  @property
  def frozen(self) -> Any:
    return self.backbone.frozen

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
    if self.method is None:
      return {}
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
        "fingerprint": backbone_fingerprint(self.backbone.config, self.frozen),
    }

  def train_step(self):
    """The jitted train step: (state, frozen, batch, rng) -> (state, metrics); state donated."""
    if self.method is None:
      raise ValueError("config.prompt.method='none' has nothing to train; use python -m jaxprompt.evaluate")
    if self.config.loss_over not in LOSSES:
      raise ValueError(f"config.loss_over={self.config.loss_over!r} is not one of {LOSSES}")
    labels = label_word_ids(self.task, self.backbone) if self.config.loss_over == "label_words" else None
    fn = functools.partial(
        steps.train_step, loss_sum=self.backbone.loss_sum(self.method, labels), optimizer=self.optimizer,
        schedule=self.schedule, num_microbatches=self.config.num_microbatches,
    )
    return jax.jit(fn, out_shardings=(self.replicated, self.replicated), donate_argnums=(0,))

  def eval_step(self):
    """The jitted eval step: (prompt params, frozen, batch, label targets, label mask) -> outputs."""
    return jax.jit(self.backbone.eval_step(self.method, self.config.max_decode_len))


def build(config: ml_collections.ConfigDict, mesh: Mesh | None = None) -> Experiment:
  """Mesh, backbone, task, method and optimizer of a config."""
  mesh = mesh or sharding_lib.make_mesh(config.mesh.to_dict())
  shards = mesh.shape["data"] * mesh.shape["fsdp"]  # the batch is split over these
  for key in ("batch_size", "eval_batch_size"):
    if config[key] % shards:
      raise ValueError(f"config.{key}={config[key]} does not split over the mesh's {shards} data x fsdp shards")
  backbone = load_backbone(config.model, mesh, tuple(config.rules))
  task = task_spec.task_spec_from_config(config.task)
  method = make_method(config.prompt, backbone, task)
  optimizer, schedule = make_optimizer(config.optimizer, config.num_steps)
  return Experiment(config, mesh, backbone, task, method, optimizer, schedule)


def load_features(exp: Experiment, split: str) -> list[features_lib.Feature]:
  """Records of `config.data.<split>` (train or eval), rendered and tokenised; eval inputs get
  `config.icl.num_shots` demonstrations drawn from the train data in front."""
  data, shots = exp.config.data, exp.config.icl
  source = task_spec.data_source_from_config(data[split])
  records = readers.read_records(source)
  prefix = None
  if split == "eval" and shots.num_shots:
    pool = readers.read_records(task_spec.data_source_from_config(data.train))
    prefix = icl.Demonstrations(pool, exp.task, shots.num_shots, shots.seed, shots.separator).text_before
  feats, stats = features_lib.featurize(  # applies the task's record flattening (MultiRC) itself
      records, exp.task, exp.backbone.codec, data.max_input_len, data.max_target_len, data.skip_bad_examples, prefix
  )
  log.info("%s data (%s): %s", split, source, stats.summary())
  if split == "eval" and data.max_eval_examples:
    feats = feats[: data.max_eval_examples]
  if not feats:
    raise ValueError(f"config.data.{split} gave no usable examples ({stats.summary()})")
  return feats
