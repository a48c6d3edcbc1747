#!/usr/bin/env bash
# One-GPU check (NVIDIA H200): ResNet-50 float vs LR²VQ quantize-step throughput (bf16 compute,
# synthetic data) and DKM memory at ResNet-50 scale (n = 3M, d̃ = 8, k = 256; bounded vs naive).
#
#   bash benchmarks/gpu_check.sh            # from the repo root; ~4-6 min on an H200
#   bash benchmarks/gpu_check.sh --tiny     # CPU smoke test of the same logic, tiny sizes
#
# Python: the first of $PYTHON, python3 whose jax sees a GPU is used as is (the device image ships
# jax with CUDA and has no network). Otherwise a fresh venv gets `pip install -e . jax[cuda12]`,
# from $WHEELS (a folder of wheels, offline) when set. ml_collections (an annotation-only import of
# lr2vq_jax.train.step) is stubbed by step_time.py when missing. Logs go to $OUT (or /tmp).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
TINY=0
[[ "${1:-}" == "--tiny" ]] && TINY=1
LOG_DIR="${OUT:-/tmp/lr2vq_gpu_check}"
mkdir -p "$LOG_DIR"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TF_CPP_MIN_LOG_LEVEL=2 XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}"
START=$(date +%s)

echo "== machine"
date -u
uname -srm
(nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader) \
  2>/dev/null || echo "nvidia-smi: not available"

has_jax() {  # $1: python; $2: "gpu" to require a GPU backend
  "$1" - "$2" <<'EOF' >/dev/null 2>&1
import sys, jax, flax, optax, numpy
sys.exit(0 if sys.argv[1] != "gpu" or jax.default_backend() == "gpu" else 1)
EOF
}

WANT=gpu
[[ $TINY == 1 ]] && WANT=any
PY=""
for cand in ${PYTHON:-} python3 python; do
  if command -v "$cand" >/dev/null 2>&1 && has_jax "$cand" "$WANT"; then PY="$cand"; break; fi
done
if [[ -z "$PY" ]]; then
  echo "== no python with a working jax (${WANT}); creating a venv (needs network or \$WHEELS)"
  VENV=/tmp/lr2vq_gpu_venv
  python3 -m venv "$VENV"
  PIP=("$VENV/bin/pip" install -q)
  [[ -n "${WHEELS:-}" ]] && PIP+=(--no-index --find-links "$WHEELS")
  timeout 600 "${PIP[@]}" -e . "jax[cuda12]" || { echo "install failed (offline?): set WHEELS"; exit 2; }
  PY="$VENV/bin/python"
fi

echo "== versions ($PY)"
"$PY" - <<'EOF'
import sys, jax, jaxlib, flax, optax, numpy
print("python", sys.version.split()[0], "| jax", jax.__version__, "| jaxlib", jaxlib.__version__,
      "| flax", flax.__version__, "| optax", optax.__version__, "| numpy", numpy.__version__)
print("backend", jax.default_backend(), "| devices", jax.devices())
EOF

if [[ $TINY == 1 ]]; then
  STEP_ARGS=(--models resnet50 --variants float,lr2vq --image-size 32 --batch 2 --steps 1
             --dtype float32)
  DKM_ARGS=(--tiny)
else
  STEP_ARGS=(--models resnet50 --variants float,lr2vq --image-size 224 --batch 128 --steps 10
             --dtype bfloat16 --profile --profile-scope all --profile-chunks 4096,65536)
  DKM_ARGS=(--n 3000000 --d 8 --k 256 --iters 3 --chunks 4096,65536 --naive-max-gib 100)
fi

status=0
echo "== ResNet-50 train-step throughput (float vs LR²VQ quantize)"
timeout 330 "$PY" benchmarks/step_time.py "${STEP_ARGS[@]}" 2>&1 | grep -v '^[IW][0-9]' \
  | tee "$LOG_DIR/step_time.txt" || status=$?
echo "== DKM memory at ResNet-50 scale"
timeout 150 "$PY" benchmarks/gpu_check.py "${DKM_ARGS[@]}" 2>&1 | grep -v '^[IW][0-9]' \
  | tee "$LOG_DIR/dkm_memory.txt" || status=$?

echo "== summary ($(( $(date +%s) - START )) s; logs in $LOG_DIR)"
grep -h '^|' "$LOG_DIR/step_time.txt" "$LOG_DIR/dkm_memory.txt" || true
grep -h '^RESULT' "$LOG_DIR/step_time.txt" "$LOG_DIR/dkm_memory.txt" || true
exit "$status"
