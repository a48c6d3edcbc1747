#!/usr/bin/env bash
# Multi-node GPU (or CPU) training without a scheduler: start this once per node (process).
#
#   COORDINATOR=host0:12345 NUM_PROCESSES=2 PROCESS_ID=<0|1> \
#     launch/gpu_multinode.sh [--dry-run] [--install] [--config FILE] [--workdir DIR] [-- FLAGS]
#   launch/gpu_multinode.sh [--dry-run] --local N [--cpu-devices M] ...   # N processes on this host
#
# Each process gets LR2VQ_COORDINATOR / LR2VQ_NUM_PROCESSES / LR2VQ_PROCESS_ID, which
# lr2vq_jax/train/distributed.py hands to jax.distributed.initialize; process 0's host must accept
# connections on the coordinator port. Every process uses all GPUs of its node. --workdir must be
# the same shared folder (NFS, Filestore, ...) on every node: all processes write checkpoints there,
# only process 0 writes metrics, results and artifacts. --install creates VENV (default ~/lr2vq-venv)
# with jax[JAX_EXTRA] (default cuda12) and this package. --local N starts N processes on 127.0.0.1
# (a free port), each with M simulated CPU devices when --cpu-devices M is given: the setup of
# tests/scale/test_multihost.py.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

config="configs/default.py"
workdir="runs/multinode"
install=0
local_n=""
cpu_devices=""
extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --install) install=1 ;;
    --local) local_n="${2:?--local needs a process count}"; shift ;;
    --cpu-devices) cpu_devices="${2:?--cpu-devices needs a number}"; shift ;;
    --config) config="${2:?--config needs a file}"; shift ;;
    --workdir) workdir="${2:?--workdir needs a folder}"; shift ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
  shift
done

cd "${LR2VQ_ROOT}"
VENV="${VENV:-${HOME}/lr2vq-venv}"
JAX_EXTRA="${JAX_EXTRA:-cuda12}"
JAX_VERSION="${JAX_VERSION:-0.10.2}"
if [[ "${install}" == "1" ]]; then
  run python3 -m venv "${VENV}"
  run "${VENV}/bin/pip" install --upgrade pip
  run "${VENV}/bin/pip" install "jax[${JAX_EXTRA}]==${JAX_VERSION}"
  run "${VENV}/bin/pip" install -e ".[train]"
fi
if [[ -z "${PYTHON:-}" ]]; then  # the --install venv, else this checkout's .venv, else python3
  PYTHON=python3
  [[ -x .venv/bin/python ]] && PYTHON=.venv/bin/python
  [[ "${install}" == "1" || -x "${VENV}/bin/python" ]] && PYTHON="${VENV}/bin/python"
fi
FREE_PORT_PY='import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
main=("${PYTHON}" -m lr2vq_jax.main --config "${config}" --workdir "${workdir}" "${extra[@]}")

if [[ -n "${local_n}" ]]; then
  port="${PORT:-}"
  if [[ -z "${port}" ]]; then
    port="$("${PYTHON}" -c "${FREE_PORT_PY}" 2>/dev/null || echo 12355)"
  fi
  dev_env=()
  if [[ -n "${cpu_devices}" ]]; then
    dev_env=(JAX_PLATFORMS=cpu "XLA_FLAGS=--xla_force_host_platform_device_count=${cpu_devices}")
  fi
  pids=()
  for ((i = 0; i < local_n; i++)); do
    if [[ "${DRY_RUN}" == "1" ]]; then
      run env "${dev_env[@]}" "LR2VQ_COORDINATOR=127.0.0.1:${port}" "LR2VQ_NUM_PROCESSES=${local_n}" \
        "LR2VQ_PROCESS_ID=${i}" "${main[@]}"
    else
      env "${dev_env[@]}" "LR2VQ_COORDINATOR=127.0.0.1:${port}" "LR2VQ_NUM_PROCESSES=${local_n}" \
        "LR2VQ_PROCESS_ID=${i}" "${main[@]}" &
      pids+=("$!")
    fi
  done
  status=0
  for pid in "${pids[@]}"; do
    wait "${pid}" || status=$?
  done
  exit "${status}"
fi

: "${COORDINATOR:?set COORDINATOR=host:port (the address of process 0)}"
: "${NUM_PROCESSES:?set NUM_PROCESSES (one process per node)}"
: "${PROCESS_ID:?set PROCESS_ID (0 .. NUM_PROCESSES-1; 0 runs the coordinator)}"
run env "LR2VQ_COORDINATOR=${COORDINATOR}" "LR2VQ_NUM_PROCESSES=${NUM_PROCESSES}" \
  "LR2VQ_PROCESS_ID=${PROCESS_ID}" "${main[@]}"
