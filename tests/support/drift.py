"""Whether two runs of the same training agree: parameter drift against measured rounding bounds."""

from __future__ import annotations

from pathlib import Path

from tests.support.paths import QUICK


def final_params(workdir: Path, stage: str = "quantize") -> dict:
  """Host params of a stage's last checkpoint, restored onto this process's devices."""
  import jax

  from lr2vq_jax.train import trainer
  from lr2vq_jax.train.config import load_config

  config = load_config(QUICK)
  st = trainer.build_stage(config, stage, str(workdir))
  return jax.device_get(trainer.restore_final(st, st.workdir).params)


# Two runs of the same quantize stage that differ only in summation order (devices, processes)
# are not expected to agree leaf by leaf: a ReLU input within rounding of 0 switches side in one
# run only, and Adam turns that into ~lr-sized noise on a few entries (a BatchNorm bias most).
# Measured on the quick digits stage, 6 steps: one process with its initial params perturbed by
# 1 ulp: whole vector ≤ 5.0e-5, worst leaf (bn2 bias) ≤ 9.7e-4, loss ≤ 9.7e-6; two processes vs
# one (AMD EPYC, AVX-512; default ISA and --xla_cpu_max_isa=AVX2): whole vector 1.0e-4, median
# leaf 4.4e-5, worst leaf (bn1 bias) 2.3e-3, loss 8.9e-5. The same run on other batches (data
# seed 1: what a wrong shard or process split looks like) is 2.4e-2 whole vector, every leaf
# ≥ 1.8e-3, loss 3e-3–4e-2. The bounds sit between the two, ~7–10× above the rounding drift.
DRIFT_TOTAL, DRIFT_MEDIAN_LEAF, DRIFT_LOSS = 1e-3, 3e-4, 5e-4


def param_drift(a: dict, b: dict) -> dict[str, float | str]:
  """‖a − b‖ / ‖b‖ over the whole parameter vector, the median leaf's and the worst leaf's."""
  import jax
  import numpy as np

  leaves_a, leaves_b = (
    jax.tree_util.tree_leaves_with_path(a),
    jax.tree_util.tree_leaves_with_path(b),
  )
  errs, num, den = {}, 0.0, 0.0
  for (path, x), (_, y) in zip(leaves_a, leaves_b, strict=True):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    num, den = num + float(np.sum((x - y) ** 2)), den + float(np.sum(y**2))
    errs[jax.tree_util.keystr(path)] = float(np.linalg.norm(x - y) / max(np.linalg.norm(y), 1e-30))
  worst = max(errs, key=errs.get)
  return {
    "total": (num / den) ** 0.5,
    "median_leaf": float(np.median(list(errs.values()))),
    "worst_leaf": worst,
    "worst": errs[worst],
  }


def assert_same_training(a: dict, b: dict) -> None:
  """Params of two runs of the same training: close where rounding cannot reach (see above)."""
  d = param_drift(a, b)
  assert d["total"] <= DRIFT_TOTAL and d["median_leaf"] <= DRIFT_MEDIAN_LEAF, d
