"""Checkpoints of what trains: Orbax over the state (prompt, the backbone weights a run fine-tunes,
optimizer state, step), the data iterator state, and metadata (frozen backbone fingerprint, method,
shapes, trainable set). Never the frozen rest of the backbone.

Layout of a run's workdir:

    checkpoints/<step>/{state, data, meta}   Orbax, asynchronous; last N plus the best by metric
    prompts/step_<step>.npy|npz, prompts/best.*  the exported (collapsed) prompt, for infer/evaluate

Resume order: this workdir's latest finished checkpoint, else the pretrained backbone and a fresh
prompt. Orbax writes into a temporary directory and renames it when done, so a checkpoint that was
killed mid-save is never picked up (and is deleted when the manager opens).
"""

from __future__ import annotations

import io
import math
from typing import Any

from etils import epath
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import traverse_util
from orbax.checkpoint import checkpoint_managers

from jaxprompt.models import layer_scan
from jaxprompt.models.quantized import QuantizedKernel
from jaxprompt.steps import TrainState
from jaxprompt.trainable import describe


class CheckpointMismatchError(ValueError):
  """A checkpoint that belongs to another backbone, method or prompt shape."""


def backbone_fingerprint(model_config: Any, frozen: Any) -> dict[str, Any]:
  """What identifies a frozen backbone: its config, per-tensor sums (cheap, works sharded; of the
  weights a quantised kernel stands for) and the quantisation schemes of its kernels."""
  flat = traverse_util.flatten_dict(frozen["params"], sep="/")
  as_float = lambda v: v.dequantize(jnp.float32) if isinstance(v, QuantizedKernel) else v

  def sums_of(v, stacked: bool):  # [2], or [layers, 2] for a scanned stack: one pair per layer
    v = as_float(v)
    axes = tuple(range(1, v.ndim)) if stacked else None
    return jnp.stack([jnp.sum(v, axes, dtype=jnp.float32), jnp.sum(jnp.abs(v), axes, dtype=jnp.float32)], -1)

  sums = jax.jit(lambda t: {k: sums_of(v, layer_scan.is_scanned_path(k)) for k, v in t.items()})(flat)
  per_tensor = {}
  for name, pairs in sums.items():
    pairs = np.asarray(pairs)
    if pairs.ndim == 1:
      per_tensor[name] = pairs
    else:  # named as the unrolled layout names each layer, so prompts move between the layouts
      per_tensor.update({layer_scan.unrolled_path(name, i): pair for i, pair in enumerate(pairs)})
  return {
      "config": {k: v for k, v in vars(model_config).items() if k not in ("dtype", "scan_layers", "remat_policy", "dropout_rate", "param_dtype")},
      "tensor_sums": {k: [float(x) for x in v] for k, v in sorted(per_tensor.items())},
      "quantized": sorted({v.scheme for v in flat.values() if isinstance(v, QuantizedKernel)}),
  }


def param_shapes(params: Any) -> dict[str, list[int]]:
  return {k: list(np.shape(v)) for k, v in traverse_util.flatten_dict(params, sep="/").items()}


def check_compatible(saved: dict[str, Any], current: dict[str, Any], where: str) -> None:
  """Raises with both sides when a checkpoint's metadata does not fit this run."""
  problems = []
  saved_trainable, current_trainable = saved.get("trainable", []), current["trainable"]
  if saved_trainable != current_trainable:
    problems.append(f"trainable backbone weights: checkpoint {describe(tuple(saved_trainable))}, this run"
                    f" {describe(tuple(current_trainable))}")
    scanned = lambda paths: any(map(layer_scan.is_scanned_path, paths))
    if scanned(saved_trainable) != scanned(current_trainable):
      problems.append(f"layer layout: the checkpoint's trained weights are {'scanned' if scanned(saved_trainable) else 'unrolled'};"
                      f" set config.model.scan_layers={scanned(saved_trainable)} to resume it")
  if saved["method"] != current["method"]:
    problems.append(f"prompt method: checkpoint {saved['method']!r}, this run {current['method']!r}")
  if saved["param_shapes"] != current["param_shapes"]:
    for name in sorted(set(saved["param_shapes"]) | set(current["param_shapes"])):
      a, b = saved["param_shapes"].get(name), current["param_shapes"].get(name)
      if a != b:
        problems.append(f"prompt param {name}: checkpoint shape {a}, this run {b}")
  saved_fp, current_fp = saved["fingerprint"], current["fingerprint"]
  for key in sorted(set(saved_fp["config"]) | set(current_fp["config"])):
    a, b = saved_fp["config"].get(key), current_fp["config"].get(key)
    if a != b:
      problems.append(f"backbone {key}: checkpoint {a!r}, this run {b!r}")
  # A prompt trained on a quantised backbone restores onto the float one, and back: rounded weights
  # move the sums by more than reduction order does, so only the configs are compared then.
  same_precision = saved_fp.get("quantized", []) == current_fp.get("quantized", [])
  if not problems and same_precision:
    # Same shapes: compare the weights themselves (float sums; tolerance for reduction order).
    for name, a in saved_fp["tensor_sums"].items():
      b = current_fp["tensor_sums"].get(name)
      if b is None or not all(math.isclose(x, y, rel_tol=1e-3, abs_tol=1e-3) for x, y in zip(a, b)):
        problems.append(f"backbone weights differ at {name}: checkpoint sums {a}, this run {b}")
        break
  if problems:
    raise CheckpointMismatchError(f"{where} does not fit this run:\n  " + "\n  ".join(problems))


class PromptCheckpoints:
  """The Orbax CheckpointManager of one run: save, find, restore, export."""

  def __init__(self, workdir: str | epath.PathLike, keep: int, best_metric: str | None, best_mode: str = "max",
               asynchronous: bool = True):
    self.workdir = epath.Path(workdir)
    self.best_metric = best_metric
    policies = [checkpoint_managers.LatestN(n=keep)]
    if best_metric:
      policies.append(checkpoint_managers.BestN(
          get_metric_fn=lambda metrics: metrics[best_metric], reverse=best_mode == "min", n=1,
          keep_checkpoints_without_metrics=False,
      ))
    options = ocp.CheckpointManagerOptions(
        enable_async_checkpointing=asynchronous,
        preservation_policy=checkpoint_managers.AnyPreservationPolicy(policies),
        cleanup_tmp_directories=True,
        best_fn=(lambda metrics: metrics[best_metric]) if best_metric else None,
        best_mode=best_mode,
    )
    directory = self.workdir / "checkpoints"
    # Orbax wants an absolute path; a gs:// one already is (absolute() would make it a local folder).
    directory = directory if "://" in str(directory) else directory.absolute()
    self.manager = ocp.CheckpointManager(directory, options=options)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def best_step(self) -> int | None:
    return self.manager.best_step() if self.best_metric else None

  def save(self, state: TrainState, data_state: dict, meta: dict, metrics: dict | None = None,
           force: bool = False) -> bool:
    step = int(state.step)
    args = ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state), meta=ocp.args.JsonSave(meta)
    )
    return self.manager.save(step, args=args, metrics=metrics, force=force)

  def read_meta(self, step: int) -> dict:
    return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

  def restore(self, step: int, abstract_state: TrainState, current_meta: dict) -> tuple[TrainState, dict]:
    """(state, data iterator state) of `step`, after checking that it fits this run."""
    check_compatible(self.read_meta(step), current_meta, f"checkpoint {self.workdir / 'checkpoints' / str(step)}")
    restored = self.manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore())
    )
    return restored["state"], restored["data"]

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def export_prompt(workdir: str | epath.PathLike, name: str, arrays: dict[str, np.ndarray]) -> epath.Path:
  """Writes a method's export as prompts/<name>.npy (a soft prompt) or .npz (several arrays, e.g.
  per-layer keys/values), float32, on process 0 only. The workdir may be a gs:// bucket."""
  arrays = {k: np.asarray(jax.device_get(v), np.float32) for k, v in arrays.items()}
  single = list(arrays) == ["embeddings"]
  path = epath.Path(workdir) / "prompts" / f"{name}.{'npy' if single else 'npz'}"
  if jax.process_index() == 0:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()  # numpy writes to a local buffer; the path may be remote
    if single:
      np.save(buffer, arrays["embeddings"])
    else:
      np.savez(buffer, **arrays)
    path.write_bytes(buffer.getvalue())
  return path


def load_export(path: str | epath.PathLike) -> dict[str, np.ndarray]:
  """The arrays of an exported prompt (.npy: a soft prompt; .npz: named arrays)."""
  path = epath.Path(path)
  buffer = io.BytesIO(path.read_bytes())
  if path.suffix == ".npy":
    return {"embeddings": np.load(buffer)}
  with np.load(buffer) as data:
    return {k: data[k] for k in data.files}
