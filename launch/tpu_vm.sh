#!/usr/bin/env bash
# Prompt tuning on a Cloud TPU VM or TPU pod slice: create the VM(s), install jaxprompt on every
# worker, run the same training command on every worker at once, delete the VM(s).
#
#   export TPU_NAME=rte-xxl ZONE=us-central2-b ACCELERATOR=v4-32    # QUEUED=1: through a queued resource
#   launch/tpu_vm.sh create [extra gcloud flags, e.g. --spot]
#   launch/tpu_vm.sh install [GIT_URL [BRANCH]]                      # no URL: this checkout is copied
#   launch/tpu_vm.sh run configs/t5_xxl_prompt.py:task=rte gs://my-bucket/rte-xxl [--config.key=value ...]
#   launch/tpu_vm.sh delete
#
# - A pod slice (v4-16 and up, v5e-16 and up, ...) has several hosts ("workers"), each a VM with its
#   own TPU chips. `run` starts one process on each (`--worker=all`), all with the same command:
#   jax.distributed.initialize(), which jaxprompt.train calls when it is one of several processes,
#   finds the slice's workers and this process's rank from the TPU VM's metadata, and the config's
#   mesh then spans every chip of the slice. Nothing is passed per worker.
# - WORKDIR must be one place that every worker sees: a gs:// bucket (in the TPU's region; the VMs'
#   default service account needs write access to it) or a gcsfuse / Filestore mount at the same path
#   on every worker. A local path would give each worker its own partial checkpoints.
# - Several workers at once over SSH need your key in an agent first:
#   `ssh-add ~/.ssh/google_compute_engine` (gcloud creates that key on the first `tpu-vm ssh`).
# - The runtime images run Python 3.10 and jaxprompt needs 3.11 or newer, so `install` puts a
#   uv-made Python $PYTHON_VERSION virtual environment in ~/$VENV on every worker.
# - Every gcloud command is printed before it runs; DRY_RUN=1 only prints them.
set -euo pipefail

# Settings: environment variables, with these defaults.
TPU_NAME=${TPU_NAME:-jaxprompt}                    # the TPU VM (node) name
ZONE=${ZONE:-us-central2-b}
ACCELERATOR=${ACCELERATOR:-v4-8}                   # v4-8: one host; v4-32: a 4-host pod slice
RUNTIME_VERSION=${RUNTIME_VERSION:-tpu-ubuntu2204-base}  # v5e: v2-alpha-tpuv5-lite, v5p: v2-alpha-tpuv5, v6e: v2-alpha-tpuv6e
PROJECT=${PROJECT:-}                               # empty: gcloud's configured project
QUEUED=${QUEUED:-0}                                # 1: create/delete through a queued resource
QR_NAME=${QR_NAME:-${TPU_NAME}-qr}                 # the queued resource's name (QUEUED=1)
PYTHON_VERSION=${PYTHON_VERSION:-3.11}
REMOTE_DIR=${REMOTE_DIR:-jaxprompt}                # the code, under each worker's home directory
VENV=${VENV:-jaxprompt-venv}                       # the virtual environment, under each worker's home
DETACH=${DETACH:-0}                                # 1: `run` returns at once; output in ~/jaxprompt-train.log
DRY_RUN=${DRY_RUN:-0}
# libtpu wheels for jax[tpu] (newer ones are on PyPI too; the index does no harm there).
LIBTPU_INDEX=https://storage.googleapis.com/jax-releases/libtpu_releases.html

usage() {
  cat >&2 <<EOF
usage: $0 create [gcloud flags ...]
       $0 install [GIT_URL [BRANCH]]
       $0 run CONFIG[:args] WORKDIR [--config.key=value ...]
       $0 ssh [COMMAND]          (COMMAND on every worker; none: a shell on worker 0)
       $0 delete [gcloud flags ...]
settings: TPU_NAME=$TPU_NAME ZONE=$ZONE ACCELERATOR=$ACCELERATOR RUNTIME_VERSION=$RUNTIME_VERSION
          PROJECT=${PROJECT:-(gcloud default)} QUEUED=$QUEUED QR_NAME=$QR_NAME DETACH=$DETACH DRY_RUN=$DRY_RUN
EOF
  exit 2
}

# Print one gcloud command (single-quoting what needs it, so it can be pasted), then run it unless
# DRY_RUN=1.
gc() {
  local cmd=(gcloud "$@") arg line="+"
  if [[ -n $PROJECT ]]; then cmd+=("--project=$PROJECT"); fi
  for arg in "${cmd[@]}"; do
    if [[ $arg =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then line+=" $arg"; else line+=" '${arg//\'/\'\\\'\'}'"; fi
  done
  echo "$line" >&2
  if [[ $DRY_RUN != 1 ]]; then "${cmd[@]}"; fi
}

# One shell command line, run by the login shell of every worker at the same time.
on_all_workers() {
  gc compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command="$1"
}

create() {
  if [[ $QUEUED == 1 ]]; then
    gc compute tpus queued-resources create "$QR_NAME" --node-id="$TPU_NAME" --zone="$ZONE" \
      --accelerator-type="$ACCELERATOR" --runtime-version="$RUNTIME_VERSION" "$@"
    if [[ $DRY_RUN == 1 ]]; then return; fi
    # The request waits in a queue; the VMs exist once it is ACTIVE.
    local state
    while :; do
      state=$(gc compute tpus queued-resources describe "$QR_NAME" --zone="$ZONE" --format='value(state.state)')
      echo "$(date +%T) $QR_NAME: $state" >&2
      case $state in
        ACTIVE) return ;;
        FAILED | SUSPENDING | SUSPENDED) exit 1 ;;
      esac
      sleep 60
    done
  else
    gc compute tpus tpu-vm create "$TPU_NAME" --zone="$ZONE" --accelerator-type="$ACCELERATOR" \
      --version="$RUNTIME_VERSION" "$@"
  fi
}

# This checkout as a tarball: the files git tracks or would track (.gitignore'd venvs, workdirs and
# caches stay behind), working-tree edits included.
pack() {
  local root
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  if git -C "$root" rev-parse --is-inside-work-tree > /dev/null 2>&1; then
    (cd "$root" && git ls-files -z --cached --others --exclude-standard |
      while IFS= read -r -d '' f; do if [[ -e $f ]]; then printf '%s\0' "$f"; fi; done |
      tar --null -T - -czf "$1")
  else
    tar -C "$root" --exclude=.git --exclude=__pycache__ --exclude='*.egg-info' --exclude=.venv \
      --exclude=venv -czf "$1" .
  fi
}

install() {
  local fetch
  if [[ $# -ge 1 ]]; then
    fetch="rm -rf ~/$REMOTE_DIR && git clone --depth=1 ${2:+--branch=$(printf %q "$2") }$(printf %q "$1") ~/$REMOTE_DIR"
  else
    pack_dir=$(mktemp -d)  # global: the EXIT trap runs after this function has returned
    trap 'rm -rf "$pack_dir"' EXIT
    pack "$pack_dir/jaxprompt.tgz"
    gc compute tpus tpu-vm scp "$pack_dir/jaxprompt.tgz" "$TPU_NAME:" --zone="$ZONE" --worker=all
    fetch="rm -rf ~/$REMOTE_DIR && mkdir -p ~/$REMOTE_DIR && tar -xzf ~/jaxprompt.tgz -C ~/$REMOTE_DIR && rm ~/jaxprompt.tgz"
  fi
  # uv (from PyPI, into ~/.local; PIP_BREAK_SYSTEM_PACKAGES lets that pass on images that mark the
  # system Python as externally managed) fetches a Python >= 3.11; --seed puts pip in the venv.
  # jax[tpu] at the version requirements.txt pins pulls in the matching libtpu.
  on_all_workers "$fetch && cd ~/$REMOTE_DIR \
&& PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --user --quiet --upgrade uv \
&& rm -rf ~/$VENV && python3 -m uv venv --seed --python $PYTHON_VERSION ~/$VENV \
&& ~/$VENV/bin/pip install -r requirements.txt -e . \"jax[tpu]==\$(sed -n 's/^jax==//p' requirements.txt)\" -f $LIBTPU_INDEX \
&& ~/$VENV/bin/python -c 'import jax; print(jax.process_index(), jax.local_device_count(), jax.device_count())'"
}

run() {
  if [[ $# -lt 2 ]]; then usage; fi
  local args train
  printf -v args ' %q' "--config=$1" "--workdir=$2" "${@:3}"
  # The ~ is the worker's: it expands there, in the remote shell.
  # shellcheck disable=SC2088
  train="~/$VENV/bin/python -m jaxprompt.train$args"
  if [[ $DETACH == 1 ]]; then
    # Survives the SSH session ending; follow it with: launch/tpu_vm.sh ssh 'tail -n 20 ~/jaxprompt-train.log'
    train="nohup $train > ~/jaxprompt-train.log 2>&1 < /dev/null &"
  fi
  on_all_workers "cd ~/$REMOTE_DIR && $train"
}

ssh_() {
  if [[ $# -ge 1 ]]; then
    on_all_workers "$*"
  else
    gc compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=0
  fi
}

delete() {
  if [[ $QUEUED == 1 ]]; then
    # --force: delete the queued resource's TPU VMs with it.
    gc compute tpus queued-resources delete "$QR_NAME" --zone="$ZONE" --force "$@"
  else
    gc compute tpus tpu-vm delete "$TPU_NAME" --zone="$ZONE" "$@"
  fi
}

if [[ $# -lt 1 ]]; then usage; fi
subcommand=$1
shift
case $subcommand in
  create) create "$@" ;;
  install) install "$@" ;;
  run) run "$@" ;;
  ssh) ssh_ "$@" ;;
  delete) delete "$@" ;;
  *) usage ;;
esac
