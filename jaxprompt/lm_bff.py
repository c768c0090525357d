"""`python -m jaxprompt.lm_bff --config=configs/lm_bff.py:task=sst2,kshot=DIR,test=FILE --workdir=DIR`.

LM-BFF's variants on every K-shot split, each split's best dev step evaluated on the test set, and
the report (DIR/report.md) of mean (std) over the splits (jaxprompt/fewshot/lm_bff_pipeline.py).
Re-running the same command resumes: finished runs are skipped, an unfinished one continues.
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import app, flags
from etils import epath
from ml_collections import config_flags

from jaxprompt import cli
from jaxprompt.fewshot.lm_bff_pipeline import Pipeline

_CONFIG = config_flags.DEFINE_config_file("config", None, "Pipeline config file (configs/lm_bff.py[:args]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where every run and the report go.")


def main(argv: Sequence[str]) -> None:
  cli.start(argv, _WORKDIR.value)
  Pipeline(_CONFIG.value, epath.Path(_WORKDIR.value)).run()
  print((epath.Path(_WORKDIR.value) / "report.md").read_text())


if __name__ == "__main__":
  app.run(main)
