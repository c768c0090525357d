"""Where metrics go: TensorBoard event files and metrics.jsonl in the workdir, and a progress line.

Only process 0 writes; the other processes get a writer that does nothing.
"""

from __future__ import annotations

import json
import sys
import time
from typing import TextIO

from etils import epath
import jax


class MetricsWriter:
  """Scalars to TensorBoard (tensorboardX, no TensorFlow needed; a gs:// workdir needs the
  google-cloud-storage package) and one JSON line per write in metrics.jsonl.

  The JSON lines are kept and the file rewritten whole at each write: object stores (gs://) cannot
  append, and a run logs a few hundred lines.
  """

  def __init__(self, workdir: str | epath.PathLike, enabled: bool | None = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self._tensorboard = None
    workdir = epath.Path(workdir)
    self._jsonl = workdir / "metrics.jsonl"
    self._lines: list[str] = []
    if self.enabled:
      from tensorboardX import SummaryWriter

      workdir.mkdir(parents=True, exist_ok=True)
      self._tensorboard = SummaryWriter(str(workdir / "tensorboard"))
      if self._jsonl.exists():  # a resumed run goes on after the earlier lines
        self._lines = self._jsonl.read_text(encoding="utf-8").splitlines(keepends=True)

  def write(self, step: int, metrics: dict[str, float]) -> None:
    if not self.enabled:
      return
    for name, value in metrics.items():
      self._tensorboard.add_scalar(name, value, step)
    self._lines.append(json.dumps({"step": step, **{k: float(v) for k, v in metrics.items()}}) + "\n")
    self._jsonl.write_text("".join(self._lines), encoding="utf-8")

  def close(self) -> None:
    if self.enabled:
      self._tensorboard.close()


class Progress:
  """A live one-line summary: step, loss, examples/s and ETA, redrawn in place on a terminal."""

  def __init__(self, total_steps: int, batch_size: int, stream: TextIO = sys.stdout):
    self.total_steps, self.batch_size, self.stream = total_steps, batch_size, stream
    self._last_time: float | None = None
    self._last_step = 0
    self._examples_per_s: float | None = None
    self.enabled = jax.process_index() == 0

  def update(self, step: int, loss: float) -> str:
    now = time.perf_counter()
    if self._last_time is not None and step > self._last_step:
      rate = (step - self._last_step) * self.batch_size / (now - self._last_time)
      # Smoothed, so one slow step (an eval, a checkpoint) does not swing the ETA.
      self._examples_per_s = rate if self._examples_per_s is None else 0.8 * self._examples_per_s + 0.2 * rate
    self._last_time, self._last_step = now, step
    line = f"step {step}/{self.total_steps} | loss {loss:.4f}"
    if self._examples_per_s:
      eta = (self.total_steps - step) * self.batch_size / self._examples_per_s
      line += f" | {self._examples_per_s:.1f} examples/s | ETA {_duration(eta)}"
    if self.enabled:
      end = "\r" if self.stream.isatty() else "\n"
      print(line.ljust(80), end=end, file=self.stream, flush=True)
    return line


def _duration(seconds: float) -> str:
  seconds = int(seconds)
  hours, rest = divmod(seconds, 3600)
  return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"
