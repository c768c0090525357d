"""Which backbone weights train (prompt-based fine-tuning: PET, LM-BFF), and how they leave the frozen tree.

`config.model.trainable` is "none" (prompt methods on a frozen backbone), "all", or a regular
expression searched in each weight's '/'-joined path, e.g. "bias$" (BitFit: biases only),
"mlm_head/" (the LM head), "encoder/layers_(22|23)/" (the top two layers; with
`model.scan_layers` resolved to True, every layer is one stacked array, so per-layer patterns
need the layers unrolled: "auto" unrolls below 0.5B layer weights).

The chosen weights move out of the frozen pytree when the run is built: the step differentiates
w.r.t. them (and the prompt) only, never by masking gradients of the whole model. They train as
float32 master copies, in the weights' own sharding; the frozen rest keeps its dtype.
"""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
from flax import traverse_util

Flat = dict[str, Any]  # '/'-joined param path -> array


def flat_params(frozen: Any) -> Flat:
  return traverse_util.flatten_dict(frozen["params"], sep="/")


def select(frozen: Any, spec: str) -> tuple[str, ...]:
  """The paths `spec` chooses, sorted; an error when a pattern chooses nothing or is not a regex."""
  paths = sorted(flat_params(frozen))
  if spec == "none":
    return ()
  if spec == "all":
    return tuple(paths)
  try:
    pattern = re.compile(spec)
  except re.error as error:
    raise ValueError(f"config.model.trainable={spec!r} is not 'none', 'all' or a regular expression: {error}") from None
  chosen = tuple(p for p in paths if pattern.search(p))
  if not chosen:
    shown = ", ".join(paths[:12]) + (", ..." if len(paths) > 12 else "")
    raise ValueError(f"config.model.trainable={spec!r} matches none of the backbone's weights: {shown}")
  return chosen


def split(frozen: Any, paths: tuple[str, ...]) -> tuple[Any, Flat]:
  """(the frozen tree without `paths`, those weights as they are), sharing the arrays."""
  flat = flat_params(frozen)
  chosen = set(paths)
  rest = {p: x for p, x in flat.items() if p not in chosen}
  return {"params": traverse_util.unflatten_dict(rest, sep="/")}, {p: flat[p] for p in paths}


def merge(frozen: Any, trained: Flat) -> Any:
  """The whole backbone: the frozen rest with the trained weights in their places (no copies)."""
  if not trained:
    return frozen
  flat = flat_params(frozen)
  flat.update(trained)
  return {"params": traverse_util.unflatten_dict(flat, sep="/")}


def master_copies(weights: Flat) -> Flat:
  """Float32 copies to train (bf16 weights would round small updates away), in each weight's own
  sharding. `weights` are donated: the run keeps one copy of each trained weight."""
  to_f32 = jax.jit(lambda tree: jax.tree.map(lambda x: x.astype(jnp.float32), tree),
                   out_shardings=jax.tree.map(lambda x: x.sharding, weights), donate_argnums=0)
  return to_f32(weights)


def describe(paths: tuple[str, ...]) -> str:
  """A short description of a trainable set for error messages."""
  if not paths:
    return "none (the frozen backbone)"
  return f"{len(paths)} weights: " + ", ".join(paths[:6]) + (", ..." if len(paths) > 6 else "")
