"""What every workdir command (`python -m jaxprompt.train`, `.pet`, `.lm_bff`) checks and sets first."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from absl import app


def start(argv: Sequence[str], workdir: str | None) -> None:
  """Refuses stray arguments and a missing --workdir; quiets the libraries' INFO logs."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if workdir is None:
    raise app.UsageError("--workdir is required")
  logging.getLogger().setLevel(logging.WARNING)  # Orbax and grain are chatty at INFO
  logging.getLogger("jaxprompt").setLevel(logging.INFO)
