"""Trained prompts without training: a method's params at a seed, saved the way a run saves them
(an Orbax checkpoint with the run's metadata, and the collapsed export in prompts/)."""

from __future__ import annotations

from pathlib import Path

import jax
import ml_collections
import numpy as np

from jaxprompt import experiment
from jaxprompt.backbones import Backbone
from jaxprompt.checkpoint import PromptCheckpoints, export_prompt
from jaxprompt.serving.bank import PromptBank, load_bank
from jaxprompt.serving.loading import PromptSource
from jaxprompt.tasks import features as features_lib
from jaxprompt.tasks import pipeline, readers
from jaxprompt.tasks.records import Record
from tests.run_configs import apply_overrides


def save_run(config: ml_collections.ConfigDict, backbone: Backbone, mesh, workdir: Path, seed: int) -> Path:
  """`config`'s prompt at `seed` on `backbone`, saved as step 1 of a run in `workdir`; the workdir."""
  exp = experiment.on_backbone(config, backbone, mesh)
  params = exp.init_params(jax.random.key(seed))
  checkpoints = PromptCheckpoints(workdir, keep=1, best_metric=config.best_metric, asynchronous=False)
  state = exp.init_state(params).replace(step=1)
  checkpoints.save(state, {"iterator": {}, "best": {}}, exp.checkpoint_meta(params), {config.best_metric: 0.5})
  checkpoints.close()
  export_prompt(workdir, "best", exp.method.export(params))
  return workdir


def saved_bank(tmp_path: Path, bank_config: ml_collections.ConfigDict, configs: dict[str, ml_collections.ConfigDict],
               within: dict[str, str] | None = None) -> PromptBank:
  """The bank of `configs`' prompts (seeds 0, 1, ...), each saved as a run and loaded from its
  workdir, or from the path `within[name]` inside it (a checkpoint step, an export)."""
  within = within or {}
  base = experiment.build(apply_overrides(bank_config.copy_and_resolve_references(), **{"prompt.method": "none"}))
  sources = [PromptSource(name, config, str(save_run(config, base.backbone, base.mesh, tmp_path / name, seed)
                                            / within.get(name, "")))
             for seed, (name, config) in enumerate(configs.items())]
  return load_bank(bank_config, sources)


def eval_records(config: ml_collections.ConfigDict, count: int) -> list[dict]:
  """The fields of the first `count` records of the config's eval data."""
  return [dict(r.fields) for r in readers.read_records(experiment.tasks_from_config(config)[0].eval)[:count]]


def served_alone(prompt, records: list[dict]) -> dict[str, np.ndarray]:
  """The prompt's own run's eval step outputs on `records` (no bank): what serving it alone gives."""
  exp = prompt.experiment
  data = exp.config.data
  feats, _ = features_lib.featurize([Record(r, "test") for r in records], prompt.spec, exp.backbone.codec,
                                    data.max_input_len, data.max_target_len)
  targets, mask = exp.label_targets(prompt.spec) if prompt.spec.num_classes else (None, None)
  step = exp.eval_step_of(prompt.method)
  outputs: dict[str, list] = {}
  for local in pipeline.eval_batches(feats, exp.config.eval_batch_size, data.max_input_len, data.max_target_len,
                                     tuple(data.bucket_lengths), pad_inputs_left=exp.backbone.codec.pad_inputs_left):
    out = step(prompt.params, exp.frozen, pipeline.to_global(local, exp.batch_sharding), targets, mask)
    for name, value in out.items():
      outputs.setdefault(name, []).append(np.asarray(value))
  return {name: np.concatenate(parts)[: len(feats)] for name, parts in outputs.items()}
