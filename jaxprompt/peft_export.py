"""`python -m jaxprompt.peft_export --config=... --prompt=PATH --out=DIR`: a trained prompt as a
Hugging Face PEFT adapter folder (adapter_config.json, adapter_model.safetensors), which
`peft.PeftModel.from_pretrained(model, DIR)` loads onto the transformers model of the backbone.

--config is the run's config (as for `python -m jaxprompt.evaluate`: a workdir keeps no config);
PATH is a workdir (its best checkpoint, else the latest), a checkpoint directory or an exported
.npy/.npz. Prompt tuning with placement=prefix and prefix tuning where PEFT puts prefixes (T5: the
decoder's self-attention; decoders: every layer) are exported; anything else is refused, saying why.

`--adapter=DIR --out=OUT` goes the other way: a PEFT prompt-tuning, P-tuning or prefix-tuning
adapter as our exported prompt OUT/prompts/peft.npy (.npz for prefixes), checked against the
config's backbone; it prints the path and the config overrides with which
`python -m jaxprompt.evaluate --prompt=OUT/prompts/peft.npy` evaluates it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from absl import app, flags
from ml_collections import config_flags

from jaxprompt import peft_adapters

_CONFIG = config_flags.DEFINE_config_file("config", None, "The run config the prompt was trained with.",
                                          lock_config=True)
_PROMPT = flags.DEFINE_string("prompt", None, "A workdir, a checkpoint directory, or an exported .npy/.npz.")
_ADAPTER = flags.DEFINE_string("adapter", None, "A PEFT adapter folder to import (instead of --prompt).")
_OUT = flags.DEFINE_string("out", None, "The adapter folder to write (--prompt); the folder whose prompts/ gets"
                           " peft.npy|npz (--adapter).")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if (_PROMPT.value is None) == (_ADAPTER.value is None) or _OUT.value is None:
    raise app.UsageError("give --out and one of --prompt (export) or --adapter (import)")
  logging.getLogger().setLevel(logging.WARNING)  # Orbax and grain are chatty at INFO
  logging.getLogger("jaxprompt").setLevel(logging.INFO)
  if _PROMPT.value is not None:
    result = {"adapter": _OUT.value, **peft_adapters.export_run(_CONFIG.value, _PROMPT.value, _OUT.value)}
  else:
    result = peft_adapters.import_run(_CONFIG.value, _ADAPTER.value, _OUT.value)
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  app.run(main)
