"""Evaluation of a prompt on a task's eval data: loss, rank classification, greedy exact match;
and restoring a trained prompt (checkpoint or .npy) onto the frozen backbone to evaluate it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from jaxprompt import experiment
from jaxprompt import sharding as sharding_lib
from jaxprompt.checkpoint import CheckpointMismatchError, PromptCheckpoints
from jaxprompt.tasks import features as features_lib
from jaxprompt.tasks import metrics as metrics_lib
from jaxprompt.tasks import pipeline


def evaluate(
    eval_step: Callable[..., dict[str, jax.Array]],
    prompt_params: Any,
    frozen: Any,
    eval_features: Sequence[features_lib.Feature],
    exp: experiment.Experiment,
) -> dict[str, float]:
  """Metrics under `eval/`: loss per target token, the task metric by rank classification (when the
  task has labels), and exact match: the greedy decoding starts with the target's tokens (for T5,
  whose targets end with EOS, it must also stop there)."""
  config, task, codec = exp.config, exp.task, exp.backbone.codec
  has_labels = bool(task.verbalizer) and task.target_template is None
  label_targets, label_mask = (
      features_lib.label_targets(task, codec, config.data.max_target_len) if has_labels else (None, None)
  )
  columns: dict[str, list[np.ndarray]] = {}
  batches = pipeline.eval_batches(
      eval_features, config.eval_batch_size, config.data.max_input_len, config.data.max_target_len,
      tuple(config.data.bucket_lengths), jax.process_index(), jax.process_count(), codec.pad_inputs_left,
  )
  for local in batches:
    batch = pipeline.to_global(local, exp.batch_sharding)
    out = eval_step(prompt_params, frozen, batch, label_targets, label_mask)
    out.update({k: batch[k] for k in ("targets", "label", "group", "example_mask")})
    for name, value in out.items():
      columns.setdefault(name, []).append(np.asarray(multihost_utils.process_allgather(value, tiled=True)))
  cols = {name: np.concatenate(parts) for name, parts in columns.items()}
  keep = cols["example_mask"].astype(bool)
  cols = {name: value[keep] for name, value in cols.items()}

  metrics = {"eval/loss": float(-cols["target_logp"].sum() / max(cols["target_tokens"].sum(), 1))}
  if has_labels:
    predictions = cols["label_scores"].argmax(axis=1)
    metrics.update({f"eval/{k}": v for k, v in metrics_lib.task_metrics(task.metric, predictions, cols["label"], cols["group"]).items()})
  if cols["target_tokens"].any():
    metrics["eval/exact_match"] = metrics_lib.exact_match(cols["decoded"], cols["targets"], cols["target_tokens"])
  metrics["eval/examples"] = float(keep.sum())
  return metrics


def load_prompt_params(exp: experiment.Experiment, path: str) -> tuple[Any, str]:
  """(prompt params, a description of where they came from), checked against this run."""
  path = Path(path)
  fresh = exp.init_params(jax.random.key(0))
  if path.suffix == ".npy":
    array = np.load(path)
    want = exp.method.embeddings(fresh).shape
    if array.shape != tuple(want):
      raise CheckpointMismatchError(f"prompt {path} has shape {array.shape}, this run's prompt needs {tuple(want)}")
    return jax.device_put(exp.method.params_from_embeddings(array.astype(np.float32)), exp.replicated), str(path)
  if path.parent.name == "checkpoints" and path.name.isdigit():
    workdir, step = path.parent.parent, int(path.name)
  else:
    workdir, step = path, None
  if not (workdir / "checkpoints").is_dir():
    raise FileNotFoundError(f"{path} is neither a .npy prompt, a run workdir, nor workdir/checkpoints/<step>")
  checkpoints = PromptCheckpoints(workdir, keep=1, best_metric=exp.config.best_metric, asynchronous=False)
  try:
    step = step if step is not None else checkpoints.best_step() or checkpoints.latest_step()
    if step is None:
      raise FileNotFoundError(f"{workdir / 'checkpoints'} holds no finished checkpoint")
    state, _ = checkpoints.restore(step, exp.abstract_state(), exp.checkpoint_meta(fresh))
  finally:
    checkpoints.close()
  return state.params, f"{workdir / 'checkpoints' / str(step)}"


def evaluate_prompt(config: ml_collections.ConfigDict, prompt_path: str | None) -> dict[str, float]:
  """Eval metrics of the prompt at `prompt_path`, or of the frozen model alone when it is None."""
  if prompt_path is None:
    config = config.copy_and_resolve_references()
    config.prompt.method = "none"
  exp = experiment.build(config)
  features = experiment.load_features(exp, "eval")
  if prompt_path is None:
    params, where = {}, f"no prompt ({config.icl.num_shots}-shot)"
  else:
    params, where = load_prompt_params(exp, prompt_path)
  logging.getLogger("jaxprompt").info("evaluating %s", where)
  with sharding_lib.activate(exp.mesh, exp.rules):
    return evaluate(exp.eval_step(), params, exp.frozen, features, exp)
