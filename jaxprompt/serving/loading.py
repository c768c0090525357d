"""Trained prompts restored onto a bank's frozen backbone, each checked against it.

A prompt comes from its run: the run's config (its task, method and prompt shape) and where its
params are, as `python -m jaxprompt.evaluate --prompt` takes them: the run's workdir (its best
checkpoint, else the latest), one checkpoint directory (workdir/checkpoints/<step>), or an exported
prompt (workdir/prompts/*.npy|npz). The prompt's method is built on the bank's backbone, never on a
backbone of its own, so a checkpoint's fingerprint and every param shape are compared with the
bank's; an export carries no fingerprint and is checked by its shapes alone.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections
from jax.sharding import Mesh

from jaxprompt import experiment
from jaxprompt.backbones import Backbone
from jaxprompt.checkpoint import CheckpointMismatchError
from jaxprompt.evaluation import load_prompt_params
from jaxprompt.serving.parts import PromptParts, prompt_parts
from jaxprompt.tasks.task_spec import TaskSpec


@dataclasses.dataclass(frozen=True)
class PromptSource:
  """Where one prompt of a bank comes from; `name` is what requests call it by."""

  name: str
  config: ml_collections.ConfigDict  # the config the prompt was trained with
  path: str  # a workdir, workdir/checkpoints/<step>, or an exported .npy / .npz


@dataclasses.dataclass(frozen=True)
class LoadedPrompt:
  """A prompt restored onto the bank's backbone."""

  name: str
  where: str  # the checkpoint or export it was read from
  spec: TaskSpec  # how its requests are rendered and what its classes are
  method: Any  # the prompt method as restored (a checkpoint's full method, an export's collapsed one)
  params: Any
  parts: PromptParts  # its batch-independent form, which the bank's tables hold
  experiment: experiment.Experiment  # its run on the bank's backbone (the prompt served alone)


def load_prompt(source: PromptSource, backbone: Backbone, mesh: Mesh) -> LoadedPrompt:
  """The prompt of `source` on `backbone`; a prompt that does not fit it raises
  CheckpointMismatchError naming the prompt and both sides of every difference."""
  config = source.config
  if config.prompt.method == "none":
    raise ValueError(f"prompt {source.name!r}: its config has prompt.method='none', no trained prompt to serve")
  if config.model.trainable != "none":
    raise ValueError(f"prompt {source.name!r} was trained with backbone weights (config.model.trainable="
                     f"{config.model.trainable!r}); a bank serves prompts on one frozen backbone")
  exp = experiment.on_backbone(config, backbone, mesh)
  if len(exp.tasks) != 1:
    raise ValueError(f"prompt {source.name!r} was trained on a mixture of {len(exp.tasks)} tasks; a bank serves"
                     " one task per prompt")
  try:
    method, params, _, where = load_prompt_params(exp, source.path)
  except CheckpointMismatchError as e:
    raise CheckpointMismatchError(f"prompt {source.name!r}: {e}") from None
  try:
    parts = prompt_parts(method, params)
  except ValueError as e:
    raise ValueError(f"prompt {source.name!r} ({where}): {e}") from None
  return LoadedPrompt(source.name, where, exp.tasks[0].spec, method, params, parts, exp)
