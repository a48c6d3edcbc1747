#!/usr/bin/env bash
# Cloud TPU VM pod slice: create it, install on every worker, train on all workers, delete it.
#
#   launch/tpu_pod.sh [--dry-run] create|setup|run|delete|all [-- EXTRA MAIN FLAGS]
#
# Settings (environment): TPU_NAME (lr2vq-pod), ZONE (us-central2-b), ACCELERATOR_TYPE (v4-32),
# RUNTIME_VERSION (tpu-ubuntu2204-base), PROJECT (gcloud default), SPOT=1 for spot capacity,
# CONFIG (configs/imagenet_resnet18_small_lr2vq.py), WORKDIR (required by run: a folder mounted at
# the same path on every worker, e.g. Filestore NFS or a gcsfuse mount; all workers write
# checkpoints there, worker 0 writes metrics, results and artifacts), TFDS_DATA_DIR (optional,
# e.g. gs://bucket/tensorflow_datasets), JAX_VERSION (0.10.2), REMOTE_DIR (lr2vq-jax, relative to
# the home folder on the workers).
#
#   create  gcloud compute tpus tpu-vm create
#   setup   copies this checkout's committed HEAD (git archive: commit local changes first) to
#           every worker and installs jax[tpu] and the package into ~/lr2vq-venv there
#   run     `gcloud compute tpus tpu-vm ssh --worker=all` runs lr2vq_jax.main with
#           LR2VQ_DISTRIBUTED=1 (jax.distributed.initialize() finds the pod's workers itself)
#   delete  deletes the TPU VM
#   all     create, setup, run, delete
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

action=""
extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    create|setup|run|delete|all) action="$1" ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
  shift
done
[[ -n "${action}" ]] || die "say create, setup, run, delete or all (see --help)"

TPU_NAME="${TPU_NAME:-lr2vq-pod}"
ZONE="${ZONE:-us-central2-b}"
ACCELERATOR_TYPE="${ACCELERATOR_TYPE:-v4-32}"
RUNTIME_VERSION="${RUNTIME_VERSION:-tpu-ubuntu2204-base}"
CONFIG="${CONFIG:-configs/imagenet_resnet18_small_lr2vq.py}"
JAX_VERSION="${JAX_VERSION:-0.10.2}"
REMOTE_DIR="${REMOTE_DIR:-lr2vq-jax}"
gcloud_tpu=(gcloud compute tpus tpu-vm)
where=("--zone=${ZONE}")
[[ -n "${PROJECT:-}" ]] && where+=("--project=${PROJECT}")

create() {
  local spot=()
  [[ "${SPOT:-0}" == "1" ]] && spot=(--spot)
  run "${gcloud_tpu[@]}" create "${TPU_NAME}" "${where[@]}" \
    "--accelerator-type=${ACCELERATOR_TYPE}" "--version=${RUNTIME_VERSION}" "${spot[@]}"
}

setup() {
  local tarball="/tmp/lr2vq-jax-src.tar.gz"
  run git -C "${LR2VQ_ROOT}" archive --format=tar.gz -o "${tarball}" HEAD
  run "${gcloud_tpu[@]}" scp "${tarball}" "${TPU_NAME}:~/lr2vq-jax-src.tar.gz" "${where[@]}" \
    --worker=all
  local remote
  remote="set -e; rm -rf ~/${REMOTE_DIR} && mkdir -p ~/${REMOTE_DIR}"
  remote+=" && tar xzf ~/lr2vq-jax-src.tar.gz -C ~/${REMOTE_DIR}"
  remote+=" && python3 -m venv ~/lr2vq-venv && ~/lr2vq-venv/bin/pip install -q --upgrade pip"
  remote+=" && ~/lr2vq-venv/bin/pip install -q 'jax[tpu]==${JAX_VERSION}'"
  remote+=" && ~/lr2vq-venv/bin/pip install -q -e ~/${REMOTE_DIR}'[train]'"
  run "${gcloud_tpu[@]}" ssh "${TPU_NAME}" "${where[@]}" --worker=all --command "${remote}"
}

train() {
  [[ -n "${WORKDIR:-}" ]] || die "set WORKDIR to a folder shared by all workers (see --help)"
  local env_part="LR2VQ_DISTRIBUTED=1"
  [[ -n "${TFDS_DATA_DIR:-}" ]] && env_part+=" TFDS_DATA_DIR=$(quote "${TFDS_DATA_DIR}")"
  local remote
  remote="cd ~/${REMOTE_DIR} && ${env_part} ~/lr2vq-venv/bin/python -m lr2vq_jax.main"
  remote+=" $(quote --config "${CONFIG}" --workdir "${WORKDIR}" "${extra[@]}")"
  run "${gcloud_tpu[@]}" ssh "${TPU_NAME}" "${where[@]}" --worker=all --command "${remote}"
}

delete() {
  run "${gcloud_tpu[@]}" delete "${TPU_NAME}" "${where[@]}" --quiet
}

case "${action}" in
  create) create ;;
  setup) setup ;;
  run) train ;;
  delete) delete ;;
  all) create; setup; train; delete ;;
esac
