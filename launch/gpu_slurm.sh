#!/usr/bin/env bash
#SBATCH --job-name=lr2vq
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --output=slurm-%x-%j.out
# SLURM, several GPU nodes: one process per node using all of its GPUs.
#
#   launch/gpu_slurm.sh --install                     # once, on a login node (shared VENV)
#   WORKDIR=/shared/runs/r18 sbatch launch/gpu_slurm.sh [-- EXTRA MAIN FLAGS]
#   launch/gpu_slurm.sh --dry-run [-- EXTRA MAIN FLAGS]   # print the srun command
#
# Settings (environment): WORKDIR (required: a folder on a file system all nodes share; all
# processes write checkpoints there, process 0 writes metrics, results and artifacts), CONFIG
# (configs/imagenet_resnet18_small_lr2vq.py), VENV (~/lr2vq-venv, on the shared file system),
# JAX_EXTRA (cuda12), JAX_VERSION (0.10.2). Under srun every task gets LR2VQ_DISTRIBUTED=1, and
# jax.distributed.initialize() reads the coordinator, process count and id from SLURM's
# variables. Change the #SBATCH lines (or pass sbatch --nodes=...) for other sizes; for one task per
# GPU use --ntasks-per-node=8 --gpus-per-task=1 (JAX then gives each process its local GPU).
set -euo pipefail
if [[ -n "${SLURM_SUBMIT_DIR:-}" && -f "${SLURM_SUBMIT_DIR}/launch/common.sh" ]]; then
  source "${SLURM_SUBMIT_DIR}/launch/common.sh"  # sbatch runs a copy of this file elsewhere
else
  source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
fi

install=0
extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --install) install=1 ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '9,24p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
  shift
done

cd "${LR2VQ_ROOT}"
VENV="${VENV:-${HOME}/lr2vq-venv}"
JAX_EXTRA="${JAX_EXTRA:-cuda12}"
JAX_VERSION="${JAX_VERSION:-0.10.2}"
CONFIG="${CONFIG:-configs/imagenet_resnet18_small_lr2vq.py}"

if [[ "${install}" == "1" ]]; then
  run python3 -m venv "${VENV}"
  run "${VENV}/bin/pip" install --upgrade pip
  run "${VENV}/bin/pip" install "jax[${JAX_EXTRA}]==${JAX_VERSION}"
  run "${VENV}/bin/pip" install -e ".[train]"
  exit 0
fi

if [[ -z "${WORKDIR:-}" ]]; then
  [[ "${DRY_RUN}" == "1" ]] || die "set WORKDIR to a folder all nodes share (see --help)"
  WORKDIR="/shared/runs/lr2vq"
fi
if [[ "${DRY_RUN}" != "1" && -z "${SLURM_JOB_ID:-}" ]]; then
  die "submit with sbatch (or use --dry-run to see the command)"
fi
run srun --kill-on-bad-exit=1 --ntasks-per-node="${SLURM_NTASKS_PER_NODE:-1}" \
  env LR2VQ_DISTRIBUTED=1 "${VENV}/bin/python" -m lr2vq_jax.main \
  --config "${CONFIG}" --workdir "${WORKDIR}" "${extra[@]}"
