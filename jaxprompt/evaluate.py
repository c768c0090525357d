"""`python -m jaxprompt.evaluate --config=... [--prompt=PATH]`: evaluate a frozen backbone.

With `--prompt`, a trained prompt: PATH is a run's workdir (its best checkpoint, else the latest),
one checkpoint directory (`workdir/checkpoints/<step>`), or an exported prompt (`.npy`, e.g.
`workdir/prompts/best.npy`). A checkpoint must match the backbone (fingerprint), the method and the
prompt's shape; a `.npy` must match the prompt's shape.

Without `--prompt`, the frozen model alone: zero-shot, or GPT-3-style k-shot with
`--config.icl.num_shots=k` (demonstrations drawn, seeded, from the config's training data).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from jaxprompt import experiment
from jaxprompt import sharding as sharding_lib
from jaxprompt.checkpoint import CheckpointMismatchError, PromptCheckpoints
from jaxprompt.evaluation import evaluate

_CONFIG = config_flags.DEFINE_config_file("config", None, "The run config the prompt was trained with.", lock_config=True)
_PROMPT = flags.DEFINE_string("prompt", None, "A workdir, a checkpoint directory, or a prompt .npy; none: zero/k-shot.")


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


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.getLogger().setLevel(logging.WARNING)  # Orbax and grain are chatty at INFO
  logging.getLogger("jaxprompt").setLevel(logging.INFO)
  print(json.dumps(evaluate_prompt(_CONFIG.value, _PROMPT.value), indent=2))


if __name__ == "__main__":
  app.run(main)
