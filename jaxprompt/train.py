"""`python -m jaxprompt.train --config=configs/t5_xxl_prompt.py --workdir=DIR`: prompt tuning.

Re-running the same command resumes from the workdir's latest checkpoint. SIGTERM (a preemption
notice) saves a checkpoint at the next step and exits cleanly. The loop is jaxprompt.training. On a
TPU pod slice or a multi-node GPU job every process runs the same command (jaxprompt.distributed).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
from absl import app, flags
from ml_collections import config_flags

from jaxprompt import cli, distributed
from jaxprompt.training import train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file("config", None, "Run config file (configs/*.py[:args]).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and exported prompts go.")
# Multi-process runs on TPU pods, SLURM or Open MPI need none of these: JAX reads the launcher's
# environment. Give them to run several processes by hand (e.g. on one machine).
_COORDINATOR = flags.DEFINE_string("coordinator_address", "", "host:port of process 0's coordinator.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 0, "How many processes the run has.")
_PROCESS_ID = flags.DEFINE_integer("process_id", -1, "This process's index, 0..num_processes-1.")


def main(argv: Sequence[str]) -> None:
  cli.start(argv, _WORKDIR.value)
  distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  result = train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  if jax.process_index() == 0:
    print(f"done at step {result['step']}; best {_CONFIG.value.best_metric} = {result['best_value']} "
          f"at step {result['best_step']}; last eval: {result['eval']}")


if __name__ == "__main__":
  app.run(main)
