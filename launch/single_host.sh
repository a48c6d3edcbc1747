#!/usr/bin/env bash
# One machine, one process, all of its accelerators (or N simulated CPU devices).
#
#   launch/single_host.sh [--dry-run] [--cpu-devices N] [--config FILE[:arg]] [--workdir DIR]
#                         [-- EXTRA MAIN FLAGS]
#
# Defaults: --config configs/default.py --workdir runs/single_host. PYTHON (default .venv/bin/python
# when present, else python3) runs `-m lr2vq_jax.main`. --cpu-devices N sets
# XLA_FLAGS=--xla_force_host_platform_device_count=N and JAX_PLATFORMS=cpu, to try the sharded
# code paths (batch and DKM rows over N devices) on a laptop.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

config="configs/default.py"
workdir="runs/single_host"
cpu_devices=""
extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --cpu-devices) cpu_devices="${2:?--cpu-devices needs a number}"; shift ;;
    --config) config="${2:?--config needs a file}"; shift ;;
    --workdir) workdir="${2:?--workdir needs a folder}"; shift ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
  shift
done

cd "${LR2VQ_ROOT}"
if [[ -z "${PYTHON:-}" ]]; then
  PYTHON=python3
  [[ -x .venv/bin/python ]] && PYTHON=.venv/bin/python
fi
env_args=()
if [[ -n "${cpu_devices}" ]]; then
  env_args=(JAX_PLATFORMS=cpu "XLA_FLAGS=--xla_force_host_platform_device_count=${cpu_devices}")
fi
run env "${env_args[@]}" "${PYTHON}" -m lr2vq_jax.main --config "${config}" --workdir "${workdir}" \
  "${extra[@]}"
