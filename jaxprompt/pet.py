"""`python -m jaxprompt.pet --config=configs/pet.py:task=agnews --workdir=DIR`: PET or iPET, whole.

An ensemble of one model per pattern and repetition (per generation, for iPET), merged into soft
labels of the unlabeled set, distilled into one sequence classifier (jaxprompt/fewshot/pet_pipeline.py).
Re-running the same command resumes: finished models are never retrained, an unfinished one goes
on from its last checkpoint. The report is DIR/report.md.
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import app, flags
from etils import epath
from ml_collections import config_flags

from jaxprompt import cli
from jaxprompt.fewshot.pet_pipeline import Pipeline

_CONFIG = config_flags.DEFINE_config_file("config", None, "Pipeline config file (configs/pet.py[:args]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where every model's run, the scores and the report go.")


def main(argv: Sequence[str]) -> None:
  cli.start(argv, _WORKDIR.value)
  numbers = Pipeline(_CONFIG.value, epath.Path(_WORKDIR.value)).run()
  print((epath.Path(_WORKDIR.value) / "report.md").read_text())
  print(f"ensemble {numbers['ensemble']}; distilled {numbers['distilled']}")


if __name__ == "__main__":
  app.run(main)
