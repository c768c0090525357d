"""Evaluation of a prompt on a task's eval data: loss, rank classification, greedy exact match."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from jaxprompt.tasks import features as features_lib
from jaxprompt.tasks import metrics as metrics_lib
from jaxprompt.tasks import pipeline


def evaluate(
    eval_step: Callable[..., dict[str, jax.Array]],
    prompt_params: Any,
    frozen: Any,
    eval_features: Sequence[features_lib.Feature],
    exp: Any,
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
