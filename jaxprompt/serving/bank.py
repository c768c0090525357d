"""The prompt bank: one frozen backbone, N trained prompts on the device as tables, and the one
jitted eval step that serves any mix of them in a batch (Lester et al. 2021, sec. 6)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import ml_collections
from jax.sharding import Mesh, PartitionSpec

from jaxprompt import experiment
from jaxprompt import sharding as sharding_lib
from jaxprompt.serving.bank_prompt import BankPrompt, bank_prompt, bank_tables, table_axes
from jaxprompt.serving.label_space import LabelSpace, label_space
from jaxprompt.serving.loading import LoadedPrompt, PromptSource, load_prompt
from jaxprompt.serving.parts import PromptParts
from jaxprompt.serving.soft_slots import added_slots
from jaxprompt.tasks.task_spec import TaskSpec

BARE_FIELD = "text"  # the one field a request for the bare backbone gives


@dataclasses.dataclass
class PromptBank:
  """Prompts by name on one backbone. `exp` is the backbone's run: its config gives the serving
  limits (config.data's lengths and buckets, eval_batch_size, max_decode_len)."""

  exp: experiment.Experiment
  prompts: tuple[LoadedPrompt, ...]  # a request's prompt_id is its position here
  method: BankPrompt
  tables: Any  # the method's params, placed on the mesh by the config's rules (bank_prompt.table_axes)
  labels: LabelSpace
  eval_step: Callable[..., dict[str, jax.Array]]  # (tables, frozen, batch, label targets, label mask) -> outputs

  def __post_init__(self):
    self._ids = {prompt.name: i for i, prompt in enumerate(self.prompts)}  # looked up once per request
    self.batch_sizes = batch_sizes(self.exp.config, self.exp.mesh)
    # A row's inputs carry its prompt's inserted soft tokens (serving/soft_slots.py), so the config's
    # input buckets widen by the longest of them: a row fits the bucket its input alone would take.
    data, widest = self.exp.config.data, max(added_slots(prompt.parts) for prompt in self.prompts)
    self.input_buckets = tuple(b + widest for b in (tuple(data.bucket_lengths) or (data.max_input_len,)))

  def batch_rows(self, requests: int) -> int:
    """The rows a batch of `requests` (at most eval_batch_size) is padded to: the smallest of
    `batch_sizes` that holds them."""
    return next(size for size in self.batch_sizes if size >= requests)

  def prompt_id(self, name: str) -> int:
    if name not in self._ids:
      raise KeyError(f"no prompt {name!r} in the bank; it holds {[p.name for p in self.prompts]}")
    return self._ids[name]

  def with_prompts(self, sources: Sequence[PromptSource]) -> PromptBank:
    """A new bank on the same backbone with the prompts of `sources` added (a name already in the
    bank is replaced: a prompt retrained in place). This bank keeps serving unchanged meanwhile,
    so a server swaps its reference when the new one is ready."""
    names = {source.name for source in sources}
    kept = [p for p in self.prompts if p.name not in names]
    return _assemble(self.exp, (*kept, *(load_prompt(s, self.exp.backbone, self.exp.mesh) for s in sources)), self)

  def without_prompts(self, names: Sequence[str]) -> PromptBank:
    """A new bank on the same backbone without the named prompts."""
    for name in names:
      self.prompt_id(name)  # an unknown name is an error, not a silent no-op
    return _assemble(self.exp, tuple(p for p in self.prompts if p.name not in set(names)), self)


def batch_sizes(config: ml_collections.ConfigDict, mesh: Mesh) -> tuple[int, ...]:
  """The row counts the bank's step runs at, ascending, the last config.eval_batch_size: each of
  config.serving.batch_sizes rounded up to a multiple of the mesh's data x fsdp shards (a batch is
  split over them) and capped at eval_batch_size. A batch is padded to the smallest that holds it,
  so a lone request does not pay for eval_batch_size rows; each size is one more compiled step
  per input bucket (the server compiles them all at start-up)."""
  sizes = tuple(config.serving.batch_sizes)
  if not all(isinstance(size, int) and size >= 1 for size in sizes):
    raise ValueError(f"config.serving.batch_sizes={sizes!r} must be positive integers")
  shards = sharding_lib.batch_shards(mesh)
  return tuple(sorted({min(-(-size // shards) * shards, config.eval_batch_size) for size in sizes}
                      | {config.eval_batch_size}))


def load_bank(config: ml_collections.ConfigDict, sources: Sequence[PromptSource]) -> PromptBank:
  """The backbone of `config` (its model, mesh and rules) with the prompts of `sources`, each
  restored onto it and checked against it, and the bare backbone under
  config.serving.backbone_name where one is given."""
  bare = config.serving.backbone_name
  names = [source.name for source in sources] + ([bare] if bare else [])
  if not sources or len(set(names)) != len(names):
    raise ValueError(f"a bank needs prompts with distinct names (config.serving.backbone_name too), got {names}")
  if config.model.trainable != "none":
    raise ValueError(f"a bank serves prompts on a frozen backbone: config.model.trainable={config.model.trainable!r}")
  backbone_only = config.copy_and_resolve_references()
  backbone_only.prompt.method = "none"  # the bank's prompts come from `sources`
  exp = experiment.build(backbone_only)
  prompts = tuple(load_prompt(source, exp.backbone, exp.mesh) for source in sources)
  if bare and any(p.parts.num_head_classes for p in prompts):
    raise ValueError(f"config.serving.backbone_name={bare!r} serves the bare backbone, which has no head, and a bank"
                     " of heads cannot hold a row without one: leave it empty for this bank")
  return _assemble(exp, prompts + ((bare_backbone(bare, exp),) if bare else ()))


def bare_backbone(name: str, exp: experiment.Experiment) -> LoadedPrompt:
  """The backbone without a prompt, as a bank entry: a row with no soft tokens, prefixes or head,
  whose task is the request's text as it is (field BARE_FIELD), nothing to classify. (Its target
  is the text again: a task needs one, and the step's target log-likelihood is not served.)"""
  field = "{%s}" % BARE_FIELD
  spec = TaskSpec(name="backbone", template=field, label_names=(), verbalizer=(), target_template=field)
  return LoadedPrompt(name, "the bare backbone", spec, None, None, PromptParts(), exp)


def _assemble(exp: experiment.Experiment, prompts: tuple[LoadedPrompt, ...], floor: PromptBank | None = None) -> PromptBank:
  """The tables, label space and step of `prompts` on the loaded backbone of `exp`. With `floor`
  (the bank they change), its capacities are kept, and where the prompts fit them its compiled
  step is reused: only the tables' contents change. Otherwise the step compiles for the new
  capacities, with config.serving's spare rows beside the prompts' own."""
  if not prompts:
    raise ValueError("a bank needs at least one prompt")
  config, serving = exp.config, exp.config.serving
  parts = [prompt.parts for prompt in prompts]
  method = bank_prompt(parts, exp.backbone.family.attention_shapes(exp.backbone.config), exp.backbone.embed_dim,
                       exp.backbone.hidden_dim, floor.method if floor else None, serving.spare_rows,
                       serving.spare_labels)
  labels = label_space([prompt.spec for prompt in prompts], method, exp.backbone, config,
                       [part.num_head_classes for part in parts], serving.spare_labels,
                       floor.labels if floor else None)
  host = bank_tables(method, parts)
  tables = jax.device_put(host, {name: nn.logical_to_mesh_sharding(PartitionSpec(*table_axes(name)), exp.mesh,
                                                                   tuple(exp.rules)) for name in host})
  if floor is not None and method.capacity == floor.method.capacity and labels.same_program(floor.labels):
    return PromptBank(exp, prompts, floor.method, tables, labels, floor.eval_step)
  eval_step = jax.jit(exp.backbone.eval_step(method, labels.labels, config.max_decode_len))
  return PromptBank(exp, prompts, method, tables, labels, eval_step)
