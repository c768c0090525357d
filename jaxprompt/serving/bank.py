"""The prompt bank: one frozen backbone, N trained prompts on the device as tables, and the one
jitted eval step that serves any mix of them in a batch (Lester et al. 2021, sec. 6)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import ml_collections

from jaxprompt import experiment
from jaxprompt.serving.bank_prompt import BankPrompt, bank_prompt, bank_tables
from jaxprompt.serving.label_space import LabelSpace, label_space
from jaxprompt.serving.loading import LoadedPrompt, PromptSource, load_prompt


@dataclasses.dataclass
class PromptBank:
  """Prompts by name on one backbone. `exp` is the backbone's run: its config gives the serving
  limits (config.data's lengths and buckets, eval_batch_size, max_decode_len)."""

  exp: experiment.Experiment
  prompts: tuple[LoadedPrompt, ...]  # a request's prompt_id is its position here
  method: BankPrompt
  tables: Any  # the method's params, replicated on the mesh
  labels: LabelSpace
  eval_step: Callable[..., dict[str, jax.Array]]  # (tables, frozen, batch, label targets, label mask) -> outputs

  def __post_init__(self):
    self._ids = {prompt.name: i for i, prompt in enumerate(self.prompts)}  # looked up once per request

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
    return _assemble(self.exp, (*kept, *(load_prompt(s, self.exp.backbone, self.exp.mesh) for s in sources)))

  def without_prompts(self, names: Sequence[str]) -> PromptBank:
    """A new bank on the same backbone without the named prompts."""
    for name in names:
      self.prompt_id(name)  # an unknown name is an error, not a silent no-op
    return _assemble(self.exp, tuple(p for p in self.prompts if p.name not in set(names)))


def load_bank(config: ml_collections.ConfigDict, sources: Sequence[PromptSource]) -> PromptBank:
  """The backbone of `config` (its model, mesh and rules) with the prompts of `sources`, each
  restored onto it and checked against it."""
  names = [source.name for source in sources]
  if not sources or len(set(names)) != len(names):
    raise ValueError(f"a bank needs prompts with distinct names, got {names}")
  if config.model.trainable != "none":
    raise ValueError(f"a bank serves prompts on a frozen backbone: config.model.trainable={config.model.trainable!r}")
  backbone_only = config.copy_and_resolve_references()
  backbone_only.prompt.method = "none"  # the bank's prompts come from `sources`
  exp = experiment.build(backbone_only)
  return _assemble(exp, tuple(load_prompt(source, exp.backbone, exp.mesh) for source in sources))


def _assemble(exp: experiment.Experiment, prompts: tuple[LoadedPrompt, ...]) -> PromptBank:
  """The tables, label space and step of `prompts` on the loaded backbone of `exp`. The step is
  compiled anew for the tables' shapes (a bank of other lengths or sizes is another program)."""
  if not prompts:
    raise ValueError("a bank needs at least one prompt")
  config = exp.config
  parts = [prompt.parts for prompt in prompts]
  method = bank_prompt(parts, exp.backbone.family.attention_shapes(exp.backbone.config), exp.backbone.embed_dim,
                       exp.backbone.hidden_dim)
  labels = label_space([prompt.spec for prompt in prompts], method, exp.backbone, config)
  tables = jax.device_put(bank_tables(method, parts), exp.replicated)
  eval_step = jax.jit(exp.backbone.eval_step(method, labels.labels, config.max_decode_len))
  return PromptBank(exp, prompts, method, tables, labels, eval_step)
