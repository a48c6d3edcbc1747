#!/usr/bin/env bash
# Cloud TPU VM pod slice with its work in a bucket: bucket, TPU VM, install, prepare, train, export.
#
#   launch/tpu_pod.sh [--dry-run] bucket|create|grant|setup|prepare|run|export|delete|all
#                     [-- EXTRA MAIN FLAGS]
#
# Settings (environment): BUCKET (gs://NAME, required: the work directory, datasets and
# artifacts live there, since a TPU VM's disk goes with the slice), PROJECT (gcloud default),
# TPU_NAME (lr2vq-pod), ZONE (us-central2-b), LOCATION (the bucket's region: ZONE less its last
# letter), ACCELERATOR_TYPE (v4-32), RUNTIME_VERSION (tpu-ubuntu2204-base), SPOT=1 for spot
# capacity, CONFIG (configs/imagenet_resnet18_small_lr2vq.py), WORKDIR ($BUCKET/runs/<config
# name>; every worker writes its checkpoint shards there, worker 0 metrics, TensorBoard,
# results.json), TFDS_DATA_DIR ($BUCKET/tensorflow_datasets), MANUAL_DIR ($BUCKET/imagenet: the
# two ImageNet tars), SERVICE_ACCOUNT (the TPU VM's, looked up by `grant`), JAX_VERSION (0.10.2),
# REMOTE_DIR (lr2vq-jax, relative to the home folder on the workers).
#
#   bucket  gcloud storage buckets create $BUCKET (once; same region as the TPU)
#   create  gcloud compute tpus tpu-vm create
#   grant   gives the TPU VM's service account roles/storage.objectAdmin on $BUCKET (read, write,
#           delete objects) and roles/storage.legacyBucketReader (storage.buckets.get, which
#           orbax's checkpoint listing calls)
#   setup   copies this checkout's committed HEAD (git archive: commit local changes first) to
#           every worker and installs jax[tpu] and the package into ~/lr2vq-venv there
#   prepare on worker 0: lr2vq prepare imagenet2012 from $MANUAL_DIR into $TFDS_DATA_DIR (once;
#           hours; reads the tars from the bucket, writes TFRecords there)
#   run     `gcloud compute tpus tpu-vm ssh --worker=all` runs lr2vq_jax.main with
#           LR2VQ_DISTRIBUTED=1 (jax.distributed.initialize() finds the pod's workers itself):
#           every stage, then $WORKDIR/<stage>/artifact and $WORKDIR/results.json; rerunning it
#           resumes from the last committed checkpoint in $WORKDIR
#   export  on all workers: lr2vq export of the finished quantize stage to EXPORT_DIR
#           ($BUCKET/artifacts/<config name>), then lr2vq eval --artifact of it
#   delete  deletes the TPU VM (the bucket and everything in it stay)
#   all     create, grant, setup, run, export, delete
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

action=""
extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    bucket|create|grant|setup|prepare|run|export|delete|all) action="$1" ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,34p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
  shift
done
[[ -n "${action}" ]] || die "say bucket, create, grant, setup, prepare, run, export, delete or all (see --help)"

TPU_NAME="${TPU_NAME:-lr2vq-pod}"
ZONE="${ZONE:-us-central2-b}"
ACCELERATOR_TYPE="${ACCELERATOR_TYPE:-v4-32}"
RUNTIME_VERSION="${RUNTIME_VERSION:-tpu-ubuntu2204-base}"
CONFIG="${CONFIG:-configs/imagenet_resnet18_small_lr2vq.py}"
JAX_VERSION="${JAX_VERSION:-0.10.2}"
REMOTE_DIR="${REMOTE_DIR:-lr2vq-jax}"
LOCATION="${LOCATION:-${ZONE%-*}}"
gcloud_tpu=(gcloud compute tpus tpu-vm)
where=("--zone=${ZONE}")
project=()
[[ -n "${PROJECT:-}" ]] && project=("--project=${PROJECT}")
where+=("${project[@]}")

# bucket_paths: checks BUCKET and fills WORKDIR, TFDS_DATA_DIR and MANUAL_DIR from it.
bucket_paths() {
  [[ -n "${BUCKET:-}" ]] || die "set BUCKET=gs://NAME: the pod's work, data and artifacts live there"
  [[ "${BUCKET}" == gs://* ]] || die "BUCKET must be gs://NAME, got ${BUCKET}"
  BUCKET="${BUCKET%/}"
  WORKDIR="${WORKDIR:-${BUCKET}/runs/$(basename "${CONFIG}" .py)}"
  TFDS_DATA_DIR="${TFDS_DATA_DIR:-${BUCKET}/tensorflow_datasets}"
  MANUAL_DIR="${MANUAL_DIR:-${BUCKET}/imagenet}"
}

# on_workers WHICH COMMAND: runs COMMAND in ~/REMOTE_DIR with the venv's python, on WHICH (all|0).
on_workers() {
  local which="$1" remote="cd ~/${REMOTE_DIR} && $2"
  run "${gcloud_tpu[@]}" ssh "${TPU_NAME}" "${where[@]}" "--worker=${which}" --command "${remote}"
}

make_bucket() {
  bucket_paths
  run gcloud storage buckets create "${BUCKET}" "${project[@]}" "--location=${LOCATION}" \
    --uniform-bucket-level-access
}

grant() {
  bucket_paths
  local account="${SERVICE_ACCOUNT:-}"
  if [[ -z "${account}" ]]; then
    local describe=("${gcloud_tpu[@]}" describe "${TPU_NAME}" "${where[@]}"
      "--format=value(serviceAccount.email)")
    if [[ "${DRY_RUN}" == "1" ]]; then
      run "${describe[@]}"
      account='$SERVICE_ACCOUNT'  # what the line above prints
    else
      account="$("${describe[@]}")"
    fi
  fi
  [[ -n "${account}" ]] || die "no service account found for ${TPU_NAME}: set SERVICE_ACCOUNT"
  local role
  for role in roles/storage.objectAdmin roles/storage.legacyBucketReader; do
    run gcloud storage buckets add-iam-policy-binding "${BUCKET}" "${project[@]}" \
      "--member=serviceAccount:${account}" "--role=${role}"
  done
}

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

prepare() {
  bucket_paths
  on_workers 0 "~/lr2vq-venv/bin/lr2vq prepare imagenet2012 $(quote --manual_dir "${MANUAL_DIR}" \
    --data_dir "${TFDS_DATA_DIR}")"
}

train() {
  bucket_paths
  on_workers all "LR2VQ_DISTRIBUTED=1 TFDS_DATA_DIR=$(quote "${TFDS_DATA_DIR}") \
~/lr2vq-venv/bin/python -m lr2vq_jax.main $(quote --config "${CONFIG}" --workdir "${WORKDIR}" \
    "${extra[@]}")"
}

export_artifact() {
  bucket_paths
  local out="${EXPORT_DIR:-${BUCKET}/artifacts/$(basename "${CONFIG}" .py)}"
  local lr2vq="LR2VQ_DISTRIBUTED=1 TFDS_DATA_DIR=$(quote "${TFDS_DATA_DIR}") ~/lr2vq-venv/bin/lr2vq"
  on_workers all "${lr2vq} export $(quote --config "${CONFIG}" --workdir "${WORKDIR}" \
    --stage quantize --out "${out}") && ${lr2vq} eval $(quote --artifact "${out}")"
}

delete() {
  run "${gcloud_tpu[@]}" delete "${TPU_NAME}" "${where[@]}" --quiet
}

case "${action}" in
  bucket) make_bucket ;;
  create) create ;;
  grant) grant ;;
  setup) setup ;;
  prepare) prepare ;;
  run) train ;;
  export) export_artifact ;;
  delete) delete ;;
  all) create; grant; setup; train; export_artifact; delete ;;
esac
