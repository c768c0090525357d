"""JAX's multi-process runtime, started when a run is one of several processes.

A TPU pod slice runs the same command on every host; a multi-node GPU job runs one process per node
(SLURM's srun, Open MPI's mpirun). Each process must call `jax.distributed.initialize()` before it
touches a device, and JAX then finds the coordinator, the process count and its own index in the
environment those launchers set. Anywhere else (one machine, one process) nothing starts. The
coordinator can also be given explicitly (`--coordinator_address`, `--num_processes`,
`--process_id`), e.g. for several processes on one machine.
"""

from __future__ import annotations

import logging
import os

import jax

log = logging.getLogger(__name__)


def launched_as_one_of_many() -> str | None:
  """The launcher whose environment says this process is one of several, else None."""
  if len([h for h in os.environ.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1:
    return "a TPU pod slice"
  if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in os.environ:
    return "SLURM"
  if int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
    return "Open MPI"
  if os.environ.get("JAX_COORDINATOR_ADDRESS"):
    return "JAX_COORDINATOR_ADDRESS"
  return None


def slurm_node_gpus() -> list[int] | None:
  """Every GPU of the node when SLURM runs one process per node (launch/slurm_multinode_gpu.sbatch);
  None (JAX's default) otherwise. Left to itself, JAX's SLURM detection assumes one process per GPU
  and hands each process only GPU $SLURM_LOCALID."""
  gpus = os.environ.get("SLURM_GPUS_ON_NODE", "")
  if os.environ.get("SLURM_NTASKS_PER_NODE") == "1" and gpus.isdigit():
    return list(range(int(gpus)))
  return None


def initialize(coordinator_address: str = "", num_processes: int = 0, process_id: int = -1) -> None:
  """Starts the multi-process runtime when asked to (explicit coordinator) or launched as one of
  several processes; otherwise does nothing."""
  explicit = bool(coordinator_address)
  if explicit != (num_processes > 0) or explicit != (process_id >= 0):
    raise ValueError(
        "give --coordinator_address, --num_processes and --process_id together (or none of them), got "
        f"{coordinator_address!r}, {num_processes}, {process_id}"
    )
  if explicit:
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  else:
    launcher = launched_as_one_of_many()
    if launcher is None:
      return
    # The coordinator and this process's index come from `launcher`'s environment.
    jax.distributed.initialize(local_device_ids=slurm_node_gpus() if launcher == "SLURM" else None)
  log.info("process %d of %d: %d local devices of %d", jax.process_index(), jax.process_count(),
           jax.local_device_count(), jax.device_count())
