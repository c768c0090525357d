#!/usr/bin/env bash
# Prompt tuning on one machine with several GPUs: one process sees every local GPU, and the config's
# mesh (data x fsdp x tensor, one axis -1) spans them all.
#
#   launch/gpu_single_node.sh configs/t5_xxl_prompt.py:task=rte /data/runs/rte-xxl [--config.key=value ...]
set -euo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: $0 CONFIG[:args] WORKDIR [--config.key=value ...]" >&2
  exit 2
fi
config=$1
workdir=$2
shift 2
# Overlap collectives with compute, and let XLA take most of each GPU's memory up front.
export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_latency_hiding_scheduler=true"
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.95}"
exec python -m jaxprompt.train --config="$config" --workdir="$workdir" "$@"
