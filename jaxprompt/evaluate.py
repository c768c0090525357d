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

from absl import app, flags
from ml_collections import config_flags

from jaxprompt.evaluation import evaluate_prompt

_CONFIG = config_flags.DEFINE_config_file("config", None, "The run config the prompt was trained with.", lock_config=True)
_PROMPT = flags.DEFINE_string("prompt", None, "A workdir, a checkpoint directory, or a prompt .npy; none: zero/k-shot.")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.getLogger().setLevel(logging.WARNING)  # Orbax and grain are chatty at INFO
  logging.getLogger("jaxprompt").setLevel(logging.INFO)
  print(json.dumps(evaluate_prompt(_CONFIG.value, _PROMPT.value), indent=2))


if __name__ == "__main__":
  app.run(main)
