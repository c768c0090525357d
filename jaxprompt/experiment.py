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
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxprompt import sharding as sharding_lib
from jaxprompt import steps, trainable
from jaxprompt.backbones import Backbone, load_backbone
from jaxprompt.checkpoint import backbone_fingerprint, param_shapes
from jaxprompt.optimizers import make_optimizer
from jaxprompt.prompts import initializers
from jaxprompt.prompts.classifier import ClassifierHead
from jaxprompt.prompts.multi_task import MultiTaskPrompt
from jaxprompt.prompts.p_tuning import PromptEncoder
from jaxprompt.prompts.p_tuning_v2 import DeepPromptWithHead
from jaxprompt.prompts.prefix_tuning import PrefixTuning
from jaxprompt.prompts.soft_prompt import SoftPrompt
from jaxprompt.tasks import features as features_lib
from jaxprompt.tasks import icl, readers, task_spec
from jaxprompt.tasks.demonstrations import Demonstrations
from jaxprompt.tasks.mixing import mix_tasks

log = logging.getLogger(__name__)
# none: the frozen model alone (zero-shot / k-shot evaluation)
METHODS = ("prompt_tuning", "prefix_tuning", "p_tuning", "p_tuning_v2", "multi_task", "classifier", "none")
LOSSES = ("vocabulary", "label_words")
PromptMethod = SoftPrompt | PrefixTuning | PromptEncoder | DeepPromptWithHead | MultiTaskPrompt | ClassifierHead


@dataclasses.dataclass(frozen=True)
class TaskData:
  """One task of a run and where its train and eval records come from."""

  name: str  # "" for the single task of config.task; the config.mixture key otherwise
  spec: task_spec.TaskSpec
  train: task_spec.DataSource
  eval: task_spec.DataSource


def tasks_from_config(config: ml_collections.ConfigDict) -> tuple[TaskData, ...]:
  """config.task with config.data.{train,eval}; or, when config.mixture is set, its tasks in name
  order (a task's position is its task id)."""
  if not config.mixture:
    spec = task_spec.task_spec_from_config(config.task)
    train, eval_ = (task_spec.data_source_from_config(config.data[s]) for s in ("train", "eval"))
    return (TaskData("", spec, train, eval_),)
  tasks = []
  for name in sorted(config.mixture):
    entry = config.mixture[name]
    missing = {"task", "train", "eval"} - set(entry)
    if missing:
      raise ValueError(f"config.mixture.{name} needs task, train and eval; {sorted(missing)} missing")
    train, eval_ = (task_spec.data_source_from_config(entry[s]) for s in ("train", "eval"))
    tasks.append(TaskData(name, task_spec.task_spec_from_config(entry.task), train, eval_))
  return tuple(tasks)


def make_method(
    prompt: ml_collections.ConfigDict, backbone: Backbone, tasks: tuple[TaskData, ...]
) -> PromptMethod | None:
  """The prompt method module (None for "none"); its initialiser may read the embedding table."""
  if prompt.method not in METHODS:
    raise ValueError(f"config.prompt.method={prompt.method!r} is not one of {METHODS}")
  backbone.check_method(prompt.method)
  if prompt.method == "none":
    return None
  if prompt.method in ("prefix_tuning", "p_tuning_v2"):
    shapes = backbone.attention_shapes(tuple(prompt.prefix_attention), "config.prompt.prefix_attention")
    if prompt.method == "prefix_tuning":
      return PrefixTuning(prompt.length, shapes, backbone.embed_dim, prompt.reparam_hidden)
    (task,) = _single(tasks, "p_tuning_v2")
    tagging = bool(task.spec.token_label_names)
    num_labels = len(task.spec.token_label_names) if tagging else task.spec.num_classes
    if not num_labels:
      raise ValueError(
          f"config.prompt.method='p_tuning_v2' trains a classification head: task {task.spec.name!r} has no classes"
      )
    return DeepPromptWithHead(prompt.length, shapes, backbone.hidden_dim, num_labels, "token" if tagging else "sequence")
  if prompt.method == "classifier":
    (task,) = _single(tasks, "classifier")
    if not task.spec.num_classes or task.spec.token_label_names:
      raise ValueError(f"config.prompt.method='classifier' trains a sequence classifier: task {task.spec.name!r} has"
                       " no classes")
    return ClassifierHead(backbone.hidden_dim, task.spec.num_classes)
  if prompt.method == "p_tuning":
    (task,) = _single(tasks, "p_tuning")
    count = task.spec.num_pseudo_tokens
    if not count:
      raise ValueError(
          f"config.prompt.method='p_tuning' places pseudo tokens at the template's [P0] [P1] ... markers; the"
          f" template {task.spec.template!r} has none"
      )
    return PromptEncoder(count, backbone.embed_dim, prompt.encoder, prompt.encoder_hidden)
  init = _initializer(prompt, backbone, tasks)
  if prompt.method == "multi_task":
    if len(tasks) < 2:
      raise ValueError("config.prompt.method='multi_task' needs a mixture of tasks in config.mixture")
    return MultiTaskPrompt(prompt.shared_length, prompt.length, len(tasks), backbone.embed_dim, init, prompt.combine,
                           prompt.placement)
  return SoftPrompt(prompt.length, backbone.embed_dim, init, prompt.placement)


def _single(tasks: tuple[TaskData, ...], method: str) -> tuple[TaskData]:
  if len(tasks) != 1:
    raise ValueError(f"config.prompt.method={method!r} trains on one task; config.mixture names {len(tasks)}")
  return tasks


def _initializer(prompt: ml_collections.ConfigDict, backbone: Backbone, tasks: tuple[TaskData, ...]):
  embedding = backbone.embedding
  if prompt.init == "uniform":
    return initializers.uniform(prompt.uniform_scale)
  if prompt.init == "vocab":
    return initializers.sampled_vocab(embedding, prompt.vocab_population)
  if prompt.init == "class_labels":  # a mixture: every task's label words, task by task
    label_ids = [backbone.codec.encode_words(word) for task in tasks for words in task.spec.label_words for word in words]
    return initializers.class_labels(embedding, label_ids, prompt.vocab_population)
  if prompt.init == "file":
    return initializers.from_file(prompt.init_file)
  raise ValueError(f"config.prompt.init={prompt.init!r} is not one of uniform, vocab, class_labels, file")


@dataclasses.dataclass
class Experiment:
  """Everything built from one config. `backbone.frozen` holds the weights that do not train; the
  ones that do (config.model.trainable) moved out into `pretrained` when the run was built."""

  config: ml_collections.ConfigDict
  mesh: Mesh
  backbone: Backbone
  tasks: tuple[TaskData, ...]
  method: PromptMethod | None
  optimizer: optax.GradientTransformation
  schedule: optax.Schedule
  # The backbone weights that train, as loaded, by path; handed over to the first init_state.
  pretrained: trainable.Flat = dataclasses.field(default_factory=dict)
  # Their float32 master copies' shapes and shardings (what the state holds), by path.
  trained_shapes: dict[str, jax.ShapeDtypeStruct] = dataclasses.field(default_factory=dict)

  @property
  def frozen(self) -> Any:
    return self.backbone.frozen

  @property
  def trainable_paths(self) -> tuple[str, ...]:
    return tuple(self.trained_shapes)

  def merged(self, trained: trainable.Flat) -> Any:
    """The whole backbone a step or an evaluation runs: the frozen rest and the trained weights."""
    return trainable.merge(self.frozen, trained)

  @property
  def objective_labels(self) -> Any:
    """What the objective's steps score for this run's tasks (label words, ...): a few tokenized words."""
    return self.backbone.objective(self.method).labels(self.tasks, self.backbone, self.config)

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
    """Fresh prompt params, placed by the config's rules: replicated unless a rule shards an axis of
    a large per-layer bank."""
    if self.method is None:
      return {}
    boxed = self._init_boxed(rng)
    return jax.device_put(nn.meta.unbox(boxed), self.param_shardings(boxed))

  def _init_boxed(self, rng: jax.Array) -> Any:
    """The method's init, its params boxed with their logical axes, not yet placed on the mesh."""
    # Soft prompts' initialisers read the sharded embedding table, which jit would bake in as a
    # constant: they run eagerly. The other methods' inits (an LSTM's scans, MLPs) compile once.
    reads_vocabulary = isinstance(self.method, (SoftPrompt, MultiTaskPrompt))
    init = self.method.init if reads_vocabulary else jax.jit(self.method.init)
    return init(rng, _init_batch())["params"]

  def param_shardings(self, boxed_params: Any) -> Any:
    return sharding_lib.logical_to_shardings(boxed_params, self.mesh, self.rules)

  def init_state(self, params: Any) -> steps.TrainState:
    """A fresh state: step 0, the prompt params, float32 master copies of the backbone weights that
    train, and the optimizer state beside them, laid out like the abstract state."""
    if self.trained_shapes and not self.pretrained:
      raise RuntimeError("the pretrained weights to fine-tune were handed to an earlier init_state; build the "
                         "experiment again for another fresh state")
    weights, self.pretrained = self.pretrained, {}
    backbone = trainable.master_copies(weights) if weights else {}
    shardings = jax.tree.map(lambda x: x.sharding, self.abstract_state)
    init = functools.partial(steps.init_train_state, optimizer=self.optimizer)
    return jax.jit(init, out_shardings=shardings)(params, backbone=backbone)

  @functools.cached_property  # read by the train step's out_shardings and by every restore
  def abstract_state(self) -> steps.TrainState:
    """The TrainState's shapes with their shardings, for restoring into and compiling against.
    Nothing is placed on the mesh: the planner's compile-only TPU devices cannot hold arrays."""
    params = {}
    if self.method is not None:
      boxed = jax.eval_shape(self._init_boxed, jax.random.key(0))  # traced only: no device holds it
      params = jax.tree.map(_with_sharding, sharding_lib.box_values(boxed), self.param_shardings(boxed))
    trained = (params, self.trained_shapes)
    init = functools.partial(steps.init_train_state, optimizer=self.optimizer)
    shapes = jax.eval_shape(init, params, backbone=self.trained_shapes)
    # Each moment lies like the weight it tracks (FSDP-sharded for fine-tuned weights, replicated for
    # prompts); a factored one (Adafactor's rows and columns) and counters are replicated.
    like_param = lambda moment, param: param.sharding if moment.shape == param.shape else self.replicated
    opt_shardings = optax.tree_map_params(self.optimizer, like_param, shapes.opt_state, trained,
                                          transform_non_params=lambda _: self.replicated)
    shardings = steps.TrainState(self.replicated, jax.tree.map(lambda x: x.sharding, params), opt_shardings,
                                 {p: x.sharding for p, x in self.trained_shapes.items()})
    return jax.tree.map(_with_sharding, shapes, shardings)

  def checkpoint_meta(self, params: Any) -> dict:
    """What a checkpoint must match to be restored here. The fingerprint covers the frozen weights
    only: the trained ones come from the checkpoint."""
    return {
        "method": self.config.prompt.method,
        "param_shapes": param_shapes(params),
        "trainable": list(self.trainable_paths),
        "fingerprint": backbone_fingerprint(self.backbone.config, self.frozen),
    }

  def train_step(self):
    """The jitted train step: (state, frozen, batch, rng) -> (state, metrics); state donated."""
    if self.method is None and not self.trained_shapes:
      raise ValueError("config.prompt.method='none' with config.model.trainable='none' has nothing to train; use"
                       " python -m jaxprompt.evaluate, or choose backbone weights to fine-tune")
    if self.config.loss_over not in LOSSES:
      raise ValueError(f"config.loss_over={self.config.loss_over!r} is not one of {LOSSES}")
    fn = functools.partial(
        steps.train_step, loss_sum=self.backbone.loss_sum(self.method, self.objective_labels), optimizer=self.optimizer,
        schedule=self.schedule, num_microbatches=self.config.num_microbatches,
    )
    state_shardings = jax.tree.map(lambda x: x.sharding, self.abstract_state)
    return jax.jit(fn, out_shardings=(state_shardings, self.replicated), donate_argnums=(0,))

  def eval_step(self):
    """The jitted eval step: (prompt params, frozen, batch, label targets, label mask) -> outputs."""
    return self.eval_step_of(self.method)

  def eval_step_of(self, method: nn.Module | None):
    """The eval step of another method on this run's backbone and labels (a restored export's
    collapsed form; None: the frozen model alone)."""
    return jax.jit(self.backbone.eval_step(method, self.objective_labels, self.config.max_decode_len))

  def label_targets(self, spec: task_spec.TaskSpec):
    """A task's label texts as the objective's rank classification reads them (or Nones)."""
    objective = self.backbone.objective(self.method)
    return objective.label_targets(spec, self.backbone.codec, self.config.data.max_target_len)


def _init_batch() -> dict[str, jax.Array]:
  """The batch keys a prompt method's init reads, at a small length (no param depends on it)."""
  length = 8
  return {"input_mask": jnp.ones((1, length), bool), "soft_positions": jnp.full((1, length), -1, jnp.int32),
          "task_id": jnp.zeros((1,), jnp.int32)}


def _with_sharding(x: Any, sharding: jax.sharding.Sharding) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)


def build(config: ml_collections.ConfigDict, mesh: Mesh | None = None) -> Experiment:
  """Mesh, backbone, tasks, method and optimizer of a config."""
  mesh = mesh or sharding_lib.make_mesh(config.mesh.to_dict())
  _check_batches(config, mesh)
  return on_backbone(config, load_backbone(config.model, mesh, tuple(config.rules)), mesh)


def _check_batches(config: ml_collections.ConfigDict, mesh: Mesh) -> None:
  shards = sharding_lib.batch_shards(mesh)
  for key in ("batch_size", "eval_batch_size"):
    if config[key] % shards:
      raise ValueError(f"config.{key}={config[key]} does not split over the mesh's {shards} data x fsdp shards")


def on_backbone(config: ml_collections.ConfigDict, backbone: Backbone, mesh: Mesh) -> Experiment:
  """The tasks, method and optimizer of a config on a backbone already loaded (a prompt bank's
  prompts share one)."""
  tasks = tasks_from_config(config)
  method = make_method(config.prompt, backbone, tasks)  # vocabulary inits read the whole backbone
  optimizer, schedule = make_optimizer(config.optimizer, config.num_steps)
  backbone, pretrained = split_trainable(backbone, config.model.trainable)
  return Experiment(config, mesh, backbone, tasks, method, optimizer, schedule, pretrained, trained_shapes(pretrained))


def beside(exp: Experiment, config: ml_collections.ConfigDict) -> Experiment:
  """`config`'s experiment on the backbone `exp` has loaded (every weight of it, whichever `exp`
  trains) and on its mesh: a pipeline's runs of one model load it once. `config`'s model (but for
  which weights train), mesh and rules must be `exp`'s."""
  placed = lambda c: ({k: v for k, v in c.model.to_dict().items() if k != "trainable"}, c.mesh.to_dict(),
                      tuple(map(tuple, c.rules)))
  if placed(config) != placed(exp.config):
    raise ValueError(f"an experiment beside another needs its model, mesh and rules: {placed(config)} is not"
                     f" {placed(exp.config)}")
  _check_batches(config, exp.mesh)
  whole = dataclasses.replace(exp.backbone, frozen=exp.merged(exp.pretrained))
  sibling = on_backbone(config, whole, exp.mesh)
  # The weights it trains are copies: a train step donates its state, and `exp` keeps its own.
  return dataclasses.replace(sibling, pretrained={p: jnp.copy(x) for p, x in sibling.pretrained.items()})


def split_trainable(backbone: Backbone, spec: str) -> tuple[Backbone, trainable.Flat]:
  """The backbone without the weights `spec` (config.model.trainable) chooses, and those weights."""
  frozen, chosen = trainable.split(backbone.frozen, trainable.select(backbone.frozen, spec))
  return dataclasses.replace(backbone, frozen=frozen), chosen


def trained_shapes(weights: trainable.Flat) -> dict[str, jax.ShapeDtypeStruct]:
  """The float32 master copies' shapes, in each weight's own sharding."""
  return {p: jax.ShapeDtypeStruct(x.shape, jnp.float32, sharding=x.sharding) for p, x in weights.items()}


def task_features(exp: Experiment, task: TaskData, split: str) -> list[features_lib.Feature]:
  """One task's records of `split` (train or eval), rendered and tokenised; eval inputs get
  `config.icl.num_shots` demonstrations drawn from the task's train data in front."""
  data, shots = exp.config.data, exp.config.icl
  source = task.train if split == "train" else task.eval
  records = readers.read_records(source)
  if split == "train":
    records = features_lib.with_mirrored_choices(records, task.spec)
    if task.spec.generate:
      records = features_lib.generation_training_records(records, task.spec, exp.config.seed)
  prefix = None
  if split == "eval" and shots.num_shots:
    pool = readers.read_records(task.train)
    prefix = icl.Demonstrations(pool, task.spec, shots.num_shots, shots.seed, shots.separator).text_before
  feats, stats = features_lib.featurize(  # applies the task's record flattening (MultiRC) itself
      records, task.spec, exp.backbone.codec, data.max_input_len, data.max_target_len, data.skip_bad_examples, prefix,
      exp.config.cloze.multi_token,
  )
  log.info("%s %s data (%s): %s", task.name or task.spec.name, split, source, stats.summary())
  if split == "eval" and data.max_eval_examples:
    feats = feats[: data.max_eval_examples]
  if not feats:
    where = f"config.mixture.{task.name}.{split}" if task.name else f"config.data.{split}"
    raise ValueError(f"{where} gave no usable examples ({stats.summary()})")
  return feats


def demonstrations(exp: Experiment) -> Demonstrations | None:
  """LM-BFF's demonstrations of the run's task (config.demonstrations), or None when off."""
  settings = exp.config.demonstrations
  if not settings.enabled:
    return None
  if len(exp.tasks) != 1:
    raise ValueError(f"config.demonstrations come from one task's training data; config.mixture names {len(exp.tasks)}")
  (task,) = exp.tasks
  pool = readers.read_records(task.train)
  data = exp.config.data
  demos = Demonstrations(task.spec, pool, exp.backbone.codec, data.max_input_len, exp.config.cloze.multi_token,
                         exp.config.seed, settings.eval_sets, max_target_len=data.max_target_len,
                         separator=settings.separator)
  if settings.filter_rate:
    demos.similar = _similar_demonstrations(exp, demos, pool, exclude_self=True)
  return demos


def _similar_demonstrations(exp: Experiment, demos: Demonstrations, queries: list, exclude_self: bool):
  """LM-BFF's demo filter: (query, class) -> the most similar training records of that class."""
  settings = exp.config.demonstrations
  if not settings.encoder:
    raise ValueError("config.demonstrations.filter_rate ranks demonstrations by a sentence encoder: set"
                     " config.demonstrations.encoder (e.g. a local all-MiniLM-L6-v2 directory)")
  encoder = _sentence_encoder(settings.encoder)
  embed = lambda records: encoder.embed([demos.sentence_text(r) for r in records], settings.encoder_batch_size)
  pool_NxD = embed(demos.pool)
  queries_QxD = pool_NxD if exclude_self else embed(queries)
  exclude = np.eye(len(queries), dtype=bool) if exclude_self else None
  from jaxprompt import sentence_embeddings  # noqa: PLC0415 - only a filtering run needs the encoder's code

  kept = sentence_embeddings.top_similar_per_class(queries_QxD, pool_NxD, demos.classes_N, len(demos.spec.label_names),
                                                   settings.filter_rate, exclude)
  return lambda query, c: kept[query][c]


@functools.lru_cache(maxsize=2)  # training and evaluation embed with the same encoder
def _sentence_encoder(path: str):
  from jaxprompt import sentence_embeddings  # noqa: PLC0415 - only a filtering run needs the encoder's code

  return sentence_embeddings.SentenceEncoder(path)


def train_features(exp: Experiment) -> list[features_lib.Feature]:
  """The training set: the task's features, or the mixture's, each tagged with its task id."""
  if len(exp.tasks) == 1:
    return task_features(exp, exp.tasks[0], "train")
  limit = exp.config.data.examples_per_task_limit or None
  return mix_tasks([task_features(exp, task, "train") for task in exp.tasks], exp.config.seed, limit)


def unlabeled_features(exp: Experiment) -> list[features_lib.Feature] | None:
  """config.data.unlabeled rendered with the task's pattern, for PET's auxiliary MLM loss; None when off."""
  if not exp.config.cloze.mlm_alpha:
    return None
  (task,) = exp.tasks  # the cloze objective trains one task
  source = task_spec.data_source_from_config(exp.config.data.unlabeled)
  data = exp.config.data
  records = features_lib.with_mirrored_choices(readers.read_records(source), task.spec)
  feats, stats = features_lib.featurize(records, task.spec, exp.backbone.codec, data.max_input_len,
                                        data.max_target_len, data.skip_bad_examples, None, exp.config.cloze.multi_token)
  log.info("unlabeled data (%s): %s", source, stats.summary())
  if not feats:
    raise ValueError(f"config.data.unlabeled gave no usable examples ({stats.summary()})")
  return feats


def eval_features(exp: Experiment) -> dict[str, list[features_lib.Feature]]:
  """Each task's eval features (keyed by TaskData.name), tagged with its task id; with LM-BFF's
  demonstrations, config.demonstrations.eval_sets features per example (one group), which
  evaluation averages."""
  demos = demonstrations(exp)
  if demos is not None:
    (task,) = exp.tasks
    records = readers.read_records(task.eval)[: exp.config.data.max_eval_examples or None]
    similar = None
    if exp.config.demonstrations.filter_rate:
      similar = _similar_demonstrations(exp, demos, records, exclude_self=False)
    return {task.name: demos.eval_features(records, similar)}
  return {
      task.name: [dataclasses.replace(f, task_id=i) for f in task_features(exp, task, "eval")]
      for i, task in enumerate(exp.tasks)
  }
