"""The training loop: prompt tuning on a frozen backbone (and fine-tuning of the backbone weights a
run chooses), with evaluation, checkpoints and resume.

Re-running on the same workdir resumes from its latest checkpoint. SIGTERM (a preemption notice)
saves a checkpoint at the next step and stops cleanly.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
from pathlib import Path
from typing import Any

from etils import epath
import jax
import ml_collections
from jax.experimental import multihost_utils

from jaxprompt import experiment
from jaxprompt import sharding as sharding_lib
from jaxprompt.checkpoint import PromptCheckpoints, export_prompt
from jaxprompt.evaluation import evaluate
from jaxprompt.reporting import MetricsWriter, Progress
from jaxprompt.tasks import pipeline
from jaxprompt.weights.hf_export import export_hf

log = logging.getLogger(__name__)
# What a Hugging Face model directory's tokenizer consists of (the formats the loaders read).
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json",
                    "merges.txt", "spiece.model")


class PreemptionWatcher:
  """Turns SIGTERM into a request to save and stop at the next step boundary.

  Across processes the decision must be the same step everywhere, so there it comes from JAX's
  preemption sync point (the coordination service sees the notice); on one process from the signal.
  """

  def __init__(self):
    self._requested = threading.Event()
    self._previous = None
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, lambda *_: self._requested.set())

  def requested(self, step: int) -> bool:
    if jax.process_count() > 1:
      return multihost_utils.reached_preemption_sync_point(step)
    return self._requested.is_set()

  def close(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


class BestTracker:
  """The best eval metric so far, and evaluations since it improved (for early stopping)."""

  def __init__(self, metric: str, mode: str, state: dict | None = None):
    self.metric, self.mode = metric, mode
    state = state or {}
    self.value: float | None = state.get("value")
    self.step: int | None = state.get("step")
    self.evals_since = int(state.get("evals_since", 0))

  def update(self, step: int, metrics: dict[str, float]) -> bool:
    """Records an evaluation; True when it is a new best."""
    if self.metric not in metrics:
      raise KeyError(f"config.best_metric={self.metric!r} is not among the eval metrics {sorted(metrics)}")
    value = metrics[self.metric]
    better = self.value is None or (value > self.value if self.mode == "max" else value < self.value)
    if better:
      self.value, self.step, self.evals_since = value, step, 0
    else:
      self.evals_since += 1
    return better

  def state(self) -> dict:
    return {"value": self.value, "step": self.step, "evals_since": self.evals_since}


def _host_metrics(step: int, metrics: dict[str, jax.Array]) -> dict[str, float]:
  values = {k: float(v) for k, v in jax.device_get(metrics).items()}
  if not math.isfinite(values["train/loss"]):
    raise FloatingPointError(f"non-finite training loss {values['train/loss']} at step {step}; stopping")
  return values


def export_backbone(exp: experiment.Experiment, trained: Any, directory: epath.Path) -> None:
  """The backbone with its trained weights as a Hugging Face directory (model.safetensors and
  config.json, plus the tokenizer's files when they are local), for transformers to load."""
  if "://" in str(directory):
    log.warning("the fine-tuned backbone is exported to local directories only, not %s", directory)
    return
  source = Path(exp.config.model.tokenizer or exp.config.model.checkpoint).expanduser()
  folder = source if source.is_dir() else source.parent
  tokenizer = [folder / n for n in _TOKENIZER_FILES if (folder / n).is_file()] if source.exists() else []
  export_hf(exp.backbone.config, exp.merged(trained), Path(directory), tokenizer_files=tokenizer)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       beside: experiment.Experiment | None = None) -> dict[str, Any]:
  """Trains the prompt; returns the last eval metrics and the best prompt's step and value. With
  `beside`, the run uses that experiment's loaded backbone (experiment.beside) instead of loading it."""
  workdir = epath.Path(workdir)  # a local folder or a gs:// bucket
  exp = experiment.build(config) if beside is None else experiment.beside(beside, config)
  train_features = experiment.train_features(exp)
  eval_features = experiment.eval_features(exp)
  init_rng, dropout_rng = jax.random.split(jax.random.key(config.seed))

  params = exp.init_params(init_rng)
  meta = exp.checkpoint_meta(params)
  best_mode = "min" if config.best_metric.endswith("loss") else "max"
  checkpoints = PromptCheckpoints(workdir, config.keep_checkpoints, config.best_metric, best_mode,
                                  config.async_checkpointing)
  demos = experiment.demonstrations(exp)  # LM-BFF's: drawn anew for every draw of an example
  if demos is not None and len(train_features) != len(demos.pool):
    raise ValueError(f"config.data.skip_bad_examples left out {len(demos.pool) - len(train_features)} training records;"
                     " with config.demonstrations every record must render (fix or remove them)")
  train_iter = pipeline.train_iterator(
      train_features, config.batch_size, config.seed, config.data.max_input_len, config.data.max_target_len,
      tuple(config.data.bucket_lengths), jax.process_index(), jax.process_count(), exp.backbone.codec.pad_inputs_left,
      config.data.length_window, render=None if demos is None else demos.train_feature,
  )
  unlabeled = experiment.unlabeled_features(exp)
  unlabeled_iter = None if unlabeled is None else pipeline.train_iterator(
      unlabeled, config.data.unlabeled_batch_size or config.batch_size, config.seed + 1, config.data.max_input_len,
      config.data.max_target_len, tuple(config.data.bucket_lengths), jax.process_index(), jax.process_count(),
      exp.backbone.codec.pad_inputs_left,
  )
  best = BestTracker(config.best_metric, best_mode)
  latest = checkpoints.latest_step()
  if latest is None:
    state = exp.init_state(params)
  else:
    state, data_state = checkpoints.restore(latest, exp.abstract_state, meta)
    exp.pretrained = {}  # the checkpoint holds the trained weights: the pretrained copies can go
    train_iter.set_state(data_state["iterator"])
    if unlabeled_iter is not None:
      unlabeled_iter.set_state(data_state["unlabeled_iterator"])
    best = BestTracker(config.best_metric, best_mode, data_state["best"])
    log.info("resumed from %s at step %d", workdir / "checkpoints", latest)

  train_step, eval_step = exp.train_step(), exp.eval_step()
  writer = MetricsWriter(workdir)
  progress = Progress(config.num_steps, config.batch_size)
  preemption = PreemptionWatcher()
  step = int(state.step)
  pending: tuple[int, dict] | None = None  # the last dispatched step's metrics, read one step late
  eval_metrics: dict[str, float] = {}

  def report(pending):
    done_step, metrics = pending
    values = _host_metrics(done_step, metrics)
    if done_step % config.log_every == 0 or done_step == config.num_steps:
      writer.write(done_step, values)
      progress.update(done_step, values["train/loss"])

  def save(metrics: dict | None, force: bool = False):
    data_state = {"iterator": train_iter.get_state(), "best": best.state()}
    if unlabeled_iter is not None:
      data_state["unlabeled_iterator"] = unlabeled_iter.get_state()
    checkpoints.save(state, data_state, meta, metrics, force=force)
    if exp.method is not None:
      export_prompt(workdir, f"step_{step}", exp.method.export(state.params))

  def export_best():
    if exp.method is not None:
      export_prompt(workdir, "best", exp.method.export(state.params))
    if exp.trainable_paths:  # the fine-tuned backbone as a Hugging Face directory
      export_backbone(exp, state.backbone, workdir / "backbone_best")

  try:
    with sharding_lib.activate(exp.mesh, exp.rules):
      while step < config.num_steps:
        batch = pipeline.to_global(next(train_iter), exp.batch_sharding)
        if unlabeled_iter is not None:  # PET: one unlabeled batch beside each labelled one
          batch.update(pipeline.unlabeled_keys(pipeline.to_global(next(unlabeled_iter), exp.batch_sharding)))
        state, metrics = train_step(state, exp.frozen, batch, dropout_rng)
        if pending is not None:
          report(pending)  # after dispatching this step, so the host never stalls the device
        pending, step = (step + 1, metrics), step + 1

        is_eval = step % config.eval_every == 0 or step == config.num_steps
        stop = preemption.requested(step)
        if is_eval or stop or step % config.checkpoint_every == 0:
          report(pending)
          pending = None
          if is_eval:
            eval_metrics = evaluate(eval_step, state.params, exp.merged(state.backbone), eval_features, exp)
            writer.write(step, eval_metrics)
            log.info("step %d: %s", step, eval_metrics)
            if best.update(step, eval_metrics):
              export_best()
          save(eval_metrics if is_eval else None, force=stop)
        if stop:
          log.warning("preemption requested: saved step %d, exiting", step)
          break
        if config.early_stopping_patience and best.evals_since >= config.early_stopping_patience:
          log.info("early stopping at step %d: no new best %s since step %s", step, config.best_metric, best.step)
          break
      if pending is not None:
        report(pending)
  finally:
    checkpoints.close()
    writer.close()
    preemption.close()
  return {"step": step, "eval": eval_metrics, "best_step": best.step, "best_value": best.value}
