"""Evaluation of a prompt on a task's eval data: loss, rank classification, greedy exact match;
and restoring a trained prompt (checkpoint or .npy) onto the frozen backbone to evaluate it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from etils import epath
import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from jaxprompt import calibration, experiment
from jaxprompt import sharding as sharding_lib
from jaxprompt.checkpoint import CheckpointMismatchError, PromptCheckpoints, load_export
from jaxprompt.tasks import features as features_lib
from jaxprompt.tasks import metrics as metrics_lib
from jaxprompt.tasks import pipeline, task_spec


def evaluate(
    eval_step: Callable[..., dict[str, jax.Array]],
    prompt_params: Any,
    frozen: Any,
    eval_features: Mapping[str, Sequence[features_lib.Feature]],
    exp: experiment.Experiment,
) -> dict[str, float]:
  """Metrics under `eval/` (see evaluate_task) of every task of the run (eval_features is keyed by
  TaskData.name). A mixture reports each task under `eval/<name>/`, and under `eval/` the mean over
  tasks of every metric they all have (e.g. eval/accuracy) and the total number of examples."""
  per_task = {
      task.name: evaluate_task(eval_step, prompt_params, frozen, eval_features[task.name], task.spec, exp)
      for task in exp.tasks
  }
  if len(per_task) == 1:
    return {f"eval/{k}": v for k, v in next(iter(per_task.values())).items()}
  metrics = {f"eval/{name}/{k}": v for name, task_metrics in per_task.items() for k, v in task_metrics.items()}
  shared = set.intersection(*(set(m) for m in per_task.values())) - {"examples"}
  metrics.update({f"eval/{k}": float(np.mean([m[k] for m in per_task.values()])) for k in sorted(shared)})
  metrics["eval/examples"] = float(sum(m["examples"] for m in per_task.values()))
  return metrics


def evaluate_task(
    eval_step: Callable[..., dict[str, jax.Array]],
    prompt_params: Any,
    frozen: Any,
    eval_features: Sequence[features_lib.Feature],
    task: task_spec.TaskSpec,
    exp: experiment.Experiment,
) -> dict[str, float]:
  """One task's metrics: the loss per target token (per labelled example or token for a method with
  a head); the task metric, by rank classification of the verbalizer (or the head's argmax); and
  exact match: the greedy decoding starts with the target's tokens (for T5, whose targets end with
  EOS, it must also stop there). With config.calibration.enabled the task metric is that of the
  contextually calibrated class scores (calibration.py), and `uncalibrated/<metric>` that of the raw ones."""
  calibrating = exp.config.calibration.enabled
  if calibrating:
    calibration.check_task(task)  # before the eval pass, which a regression or tagging task would waste
  has_labels = task.num_classes > 0
  # Shortest first: no metric depends on the examples' order, and a batch of similar lengths pads to
  # a small bucket, where in the data's order most batches would hold one long input and pad to it.
  by_length = sorted(eval_features, key=lambda f: len(f.inputs))
  columns = _eval_columns(eval_step, prompt_params, frozen, by_length, task, exp)
  keep = np.concatenate(columns.pop("example_mask")).astype(bool)
  if "token_logits" in columns:
    return _tagging_metrics(columns, keep, task)
  cols = {name: np.concatenate(parts)[keep] for name, parts in columns.items()}
  if "generated" in cols:
    cols["class_logits"] = _generation_matches(cols.pop("generated"), cols.pop("referent"), exp)
  if exp.config.demonstrations.enabled:
    cols = _mean_over_demonstration_sets(cols)
  if task.bounds:
    return _regression_metrics(cols, task, float(len(cols["label"])))
  if "class_logits" in cols:
    logp = _log_softmax(cols["class_logits"])
    labelled = cols["label"] >= 0
    metrics = {"loss": float(-logp[labelled, cols["label"][labelled]].mean()) if labelled.any() else float("nan")}
    predictions = cols["class_logits"].argmax(axis=1)
  else:
    metrics = {"loss": float(-cols["target_logp"].sum() / max(cols["target_tokens"].sum(), 1))}
    predictions = cols["label_scores"].argmax(axis=1) if has_labels else None
    if cols["target_tokens"].any():
      metrics["exact_match"] = metrics_lib.exact_match(cols["decoded"], cols["targets"], cols["target_tokens"])
  if calibrating:
    uncalibrated = metrics_lib.task_metrics(task.metric, predictions, cols["label"], cols["group"])
    metrics.update({f"uncalibrated/{k}": v for k, v in uncalibrated.items()})
    # The same step scores the content-free inputs, in the examples' order: k-shot groups, mostly
    # their example's demonstrations, then come shortest first too and batches stay alike in length.
    free = _eval_columns(eval_step, prompt_params, frozen, calibration.content_free_features(exp, by_length), task, exp)
    key = "class_logits" if "class_logits" in cols else "label_scores"
    free_scores = np.concatenate(free[key])[np.concatenate(free["example_mask"]).astype(bool)]
    p_cf_GxC = calibration.content_free_probabilities(free_scores, len(exp.config.calibration.content_free))
    predictions = calibration.calibrate(cols[key], p_cf_GxC).argmax(axis=1)
  if predictions is not None:
    metrics.update(metrics_lib.task_metrics(task.metric, predictions, cols["label"], cols["group"]))
  metrics["examples"] = float(len(cols["label"]))
  return metrics


def _generation_matches(generated_BxK: np.ndarray, referent_BxK: np.ndarray, exp: experiment.Experiment) -> np.ndarray:
  """[B, 2] one-hot (no match, match): the generated words against the referent's, special tokens
  dropped (PET's WSC eval_step returns the same pair as its logits). PET compares with the
  referent's text; here its tokens decoded, which the comparison's lower-casing makes the same."""
  tokens, codec = exp.backbone.tokenizer, exp.backbone.codec
  special = {*codec.cloze.start_ids, *codec.cloze.middle_ids, *codec.cloze.end_ids, codec.cloze.mask_id, codec.pad_id}
  text = lambda ids: tokens.decode([int(i) for i in ids if i >= 0 and int(i) not in special])
  match = np.array([metrics_lib.words_match(text(g), text(r)) for g, r in zip(generated_BxK, referent_BxK)])
  return np.stack([~match, match], axis=-1).astype(np.float32)


def _mean_over_demonstration_sets(cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """One row per example (group) from its rows with several sets of demonstrations: their class
  scores averaged (LM-BFF's run.py averages the label-word logits; on T5 and decoders, the label
  texts' log-probabilities), the rest the first set's (so a text family's loss and exact match
  are its first set's)."""
  groups, first, which = np.unique(cols["group"], return_index=True, return_inverse=True)
  out = {name: values[first] for name, values in cols.items()}
  key = "class_logits" if "class_logits" in cols else "label_scores"
  sums = np.zeros((len(groups), cols[key].shape[1]), np.float64)
  np.add.at(sums, which, cols[key])
  out[key] = (sums / np.bincount(which)[:, None]).astype(np.float32)
  return out


def class_scores(
    eval_step: Callable[..., dict[str, jax.Array]],
    prompt_params: Any,
    frozen: Any,
    features: Sequence[features_lib.Feature],
    task: task_spec.TaskSpec,
    exp: experiment.Experiment,
) -> np.ndarray:
  """[N, C] class scores of `features`, in their order: what the eval step ranks (the verbalizer's
  or the choices' scores, a head's logits, or on T5 and decoders each label's log-probability).
  PET's ensemble members score unlabeled data so."""
  order = np.argsort([len(f.inputs) for f in features], kind="stable")  # short batches pad less
  columns = _eval_columns(eval_step, prompt_params, frozen, [features[i] for i in order], task, exp)
  keep = np.concatenate(columns["example_mask"]).astype(bool)
  # A head's or a masked LM's class logits; T5's and decoders' log-probabilities of each label's words.
  key = next((k for k in ("class_logits", "label_scores") if k in columns), None)
  if key is None:
    raise ValueError(f"task {task.name!r}: this run's eval step ranks no classes (no class_logits, no label_scores)")
  scores = np.concatenate(columns[key])[keep]
  unsorted = np.empty_like(scores)
  unsorted[order] = scores
  return unsorted


def _eval_columns(
    eval_step: Callable[..., dict[str, jax.Array]],
    prompt_params: Any,
    frozen: Any,
    features: Sequence[features_lib.Feature],
    task: task_spec.TaskSpec,
    exp: experiment.Experiment,
) -> dict[str, list[np.ndarray]]:
  """The eval step's outputs and the batches' label keys, batch by batch, for `features` in order."""
  config, codec = exp.config, exp.backbone.codec
  label_targets, label_mask = exp.label_targets(task) if task.num_classes > 0 else (None, None)
  columns: dict[str, list[np.ndarray]] = {}
  batches = pipeline.eval_batches(
      features, config.eval_batch_size, config.data.max_input_len, config.data.max_target_len,
      tuple(config.data.bucket_lengths), jax.process_index(), jax.process_count(), codec.pad_inputs_left,
  )
  for local in batches:
    batch = pipeline.to_global(local, exp.batch_sharding)
    out = eval_step(prompt_params, frozen, batch, label_targets, label_mask)
    out.update({k: batch[k] for k in ("targets", "label", "group", "example_mask", "score")})
    if "token_logits" in out:
      out["token_labels"] = batch["token_labels"]
    for name, value in out.items():
      # Gathered per batch: bucketed batches differ in length, so [B, L] columns cannot be stacked.
      columns.setdefault(name, []).append(np.asarray(multihost_utils.process_allgather(value, tiled=True)))
  return columns


def _regression_metrics(cols: dict[str, np.ndarray], task: task_spec.TaskSpec, examples: float) -> dict[str, float]:
  """A regression's prediction interpolates its poles by the high pole's probability (LM-BFF):
  Pearson and Spearman against the gold scores, and the KL loss per scored example."""
  low, high = task.bounds
  p_high = np.exp(_log_softmax(cols["class_logits"]))[:, 1]
  scored = np.isfinite(cols["score"])
  metrics = metrics_lib.regression_metrics(low + (high - low) * p_high, cols["score"])
  target = np.clip((cols["score"][scored] - low) / (high - low), 0.0, 1.0)
  logp = _log_softmax(cols["class_logits"][scored])
  xlogx = lambda x: np.where(x > 0, x * np.log(np.where(x > 0, x, 1.0)), 0.0)
  metrics["loss"] = float(np.mean(xlogx(target) + xlogx(1 - target) - target * logp[:, 1] - (1 - target) * logp[:, 0]))
  metrics["examples"] = examples
  return metrics


def _tagging_metrics(columns: dict[str, list[np.ndarray]], keep: np.ndarray, task: task_spec.TaskSpec) -> dict:
  """Span F1 and token accuracy of per-token predictions, and the loss per labelled token."""
  rows = np.split(np.arange(len(keep)), np.cumsum([len(part) for part in columns["token_labels"]])[:-1])
  predictions, labels, losses = [], [], []
  for logits, token_labels, index in zip(columns["token_logits"], columns["token_labels"], rows, strict=True):
    logits, token_labels = logits[keep[index]], token_labels[keep[index]]
    logp = _log_softmax(logits)
    labelled = token_labels >= 0
    losses.append(-np.take_along_axis(logp, np.maximum(token_labels, 0)[..., None], axis=-1)[..., 0][labelled])
    predictions.extend(logits.argmax(axis=-1))
    labels.extend(token_labels)
  width = max(len(row) for row in labels)
  pad = lambda rows: np.stack([np.pad(r, (0, width - len(r)), constant_values=-1) for r in rows])
  metrics = {"loss": float(np.concatenate(losses).mean())}
  metrics.update(metrics_lib.tagging_metrics(pad(predictions), pad(labels), task.token_label_names))
  metrics["examples"] = float(keep.sum())
  return metrics


def _log_softmax(logits: np.ndarray) -> np.ndarray:
  logits = logits.astype(np.float64)
  shifted = logits - logits.max(axis=-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def load_prompt_params(exp: experiment.Experiment, path: str) -> tuple[Any, Any, Any, str]:
  """(method, its params, the trained backbone weights, where they came from) for a saved prompt,
  checked against this run.

  An export (.npy / .npz) holds the collapsed prompt, so it comes with the method's collapsed form
  (and no backbone weights); a checkpoint holds the full trainable state: the method itself and the
  backbone weights the run fine-tuned.
  """
  path = epath.Path(path)
  fresh = exp.init_params(jax.random.key(0))
  if path.suffix in (".npy", ".npz"):
    if exp.method is None or exp.trainable_paths:
      raise ValueError(f"{path} is an exported prompt, which holds no fine-tuned backbone weights: evaluate the run's"
                       " workdir or checkpoint instead (or its backbone_best/ as config.model.checkpoint)")
    arrays = load_export(path)
    want = {k: tuple(v.shape) for k, v in exp.method.export(fresh).items()}
    got = {k: tuple(v.shape) for k, v in arrays.items()}
    if got != want:
      problems = [f"{name}: file {got.get(name)}, this run {want.get(name)}"
                  for name in sorted(set(got) | set(want)) if got.get(name) != want.get(name)]
      raise CheckpointMismatchError(f"prompt {path} does not fit this run's {exp.config.prompt.method}:\n  "
                                    + "\n  ".join(problems))
    method = exp.method.collapsed()
    return method, jax.device_put(method.params_from_export(arrays), exp.replicated), {}, str(path)
  if path.parent.name == "checkpoints" and path.name.isdigit():
    workdir, step = path.parent.parent, int(path.name)
  else:
    workdir, step = path, None
  if not (workdir / "checkpoints").is_dir():
    raise FileNotFoundError(f"{path} is neither an exported prompt (.npy/.npz), a run workdir, nor workdir/checkpoints/<step>")
  checkpoints = PromptCheckpoints(workdir, keep=1, best_metric=exp.config.best_metric, asynchronous=False)
  try:
    step = step if step is not None else checkpoints.best_step() or checkpoints.latest_step()
    if step is None:
      raise FileNotFoundError(f"{workdir / 'checkpoints'} holds no finished checkpoint")
    state, _ = checkpoints.restore(step, exp.abstract_state, exp.checkpoint_meta(fresh))
  finally:
    checkpoints.close()
  return exp.method, state.params, state.backbone, f"{workdir / 'checkpoints' / str(step)}"


def evaluate_prompt(config: ml_collections.ConfigDict, prompt_path: str | None,
                    beside: experiment.Experiment | None = None) -> dict[str, float]:
  """Eval metrics of the prompt at `prompt_path`, or of the frozen model alone when it is None;
  with `beside`, on that experiment's loaded backbone (experiment.beside)."""
  if prompt_path is None:
    config = config.copy_and_resolve_references()
    config.prompt.method = "none"
  exp = experiment.build(config) if beside is None else experiment.beside(beside, config)
  features = experiment.eval_features(exp)
  if prompt_path is None:
    method, params, where = None, {}, f"no prompt ({config.icl.num_shots}-shot)"
    trained = exp.pretrained  # the backbone as loaded, its trainable weights too
  else:
    method, params, trained, where = load_prompt_params(exp, prompt_path)
  logging.getLogger("jaxprompt").info("evaluating %s", where)
  eval_step = exp.eval_step_of(method)
  with sharding_lib.activate(exp.mesh, exp.rules):
    return evaluate(eval_step, params, exp.merged(trained), features, exp)
