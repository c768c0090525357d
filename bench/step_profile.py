"""Where a compiled step's time goes: a jax.profiler trace, its ops grouped by what they compute.

Each XLA op in the trace carries the name of the JAX operation it came from (its HLO metadata), e.g.
`jit(train_step)/jvp(T5)/T5.encode/encoder/layers_3/mlp/wi_0/dot_general`; the op's device time is
credited to the part of the model that name points at. Times are summed over ops, so where the
runtime overlaps independent ops (XLA:CPU runs them on its thread pool) shares are of busy time,
not of wall time.
"""

from __future__ import annotations

import collections
import gzip
import json
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import jax

# First match wins; checked against the op's JAX name.
PARTS = (
    # XLA:CPU's matmul kernels take a weight in one layout; the backward pass's dx = dy W^T copies
    # each frozen kernel transposed (ops named after the parameter itself).
    ("frozen-weight layout copies", r"^frozen\["),
    ("vocabulary projection + loss", r"logits_dense|log_softmax|take_along_axis|token_log_likelihood|embedder.attend"),
    ("position bias", r"relpos_bias"),
    ("attention projections", r"attention(\.keys_values)?/(query|key|value|out)/"),
    ("attention scores, softmax, values", r"attention"),
    ("feed-forward", r"/mlp/"),
    ("layer norms", r"norm"),
    ("soft prompt placement", r"SoftPrompt|place_soft_tokens|concatenate"),
    ("optimizer update", r"adam|optax|apply_updates|clip|global_norm|/div|/mul"),
)
OTHER = "copies, broadcasts, layer-loop bookkeeping"


def part_of(jax_name: str) -> str:
  for part, pattern in PARTS:
    if re.search(pattern, jax_name):
      return part
  return OTHER


# Ops that only call other computations: their trace spans cover the ops inside them.
_CONTAINERS = ("while", "call", "conditional")


def _leaf_ops(hlo_text: str) -> dict[str, str]:
  """HLO instruction name -> the JAX name in its metadata ("" if none), for every instruction of
  every computation that does work itself."""
  ops = {}
  for line in hlo_text.splitlines():
    match = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = .*?\s([a-z][\w\-]*)\(", line)
    if match and match.group(2) not in _CONTAINERS:
      jax_name = re.search(r'op_name="([^"]+)"', line)
      ops.setdefault(match.group(1), jax_name.group(1) if jax_name else "")
  return ops


def _op_durations(trace_dir: str) -> collections.Counter:
  """Microseconds per trace event name, summed (complete events only)."""
  (trace,) = Path(trace_dir).rglob("*perfetto_trace.json.gz")
  with gzip.open(trace) as f:
    events = json.load(f)
  events = events["traceEvents"] if isinstance(events, dict) else events
  totals = collections.Counter()
  for event in events:
    if event.get("ph") == "X":
      totals[event["name"]] += event["dur"]
  return totals


def profile(run_step: Callable[[], object], hlo_text: str, steps: int = 3) -> dict[str, float]:
  """Busy milliseconds per step of each part, from `steps` calls of `run_step` (already warm)."""
  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
      for _ in range(steps):
        run_step()
    durations = _op_durations(trace_dir)
  ops = _leaf_ops(hlo_text)
  parts = collections.Counter()
  for op, microseconds in durations.items():
    if op in ops:  # trace events also name runtime and Python spans: only XLA ops count
      parts[part_of(ops[op])] += microseconds
  return {part: round(us / steps / 1e3, 1) for part, us in parts.most_common()}
