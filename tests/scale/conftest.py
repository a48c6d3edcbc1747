"""Helpers for the scale-out tests: child processes with N simulated CPU devices, shared runs.

Each child gets `--xla_force_host_platform_device_count=N` added to the parent's other XLA_FLAGS
(so e.g. `--xla_cpu_max_isa=AVX2` reaches the children; the pytest process keeps its own devices) and a TMPDIR inside the test's temporary folder. The float + lowrank checkpoints of the
quick digits pipeline are made once per session; runs copy that workdir and train only `quantize`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
QUICK = f"--config={ROOT / 'configs' / 'default.py'}:quick"
TIMEOUT = 600


def xla_flags(devices: int) -> str:
  """The parent's XLA_FLAGS with the simulated device count set to `devices`."""
  kept = [f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f]
  return " ".join([*kept, f"--xla_force_host_platform_device_count={devices}"])


def child_env(devices: int, tmp: Path, **extra: str) -> dict[str, str]:
  tmpdir = tmp / "tmp"
  tmpdir.mkdir(parents=True, exist_ok=True)
  env = {k: v for k, v in os.environ.items() if not k.startswith("LR2VQ_")}
  env.update(
    XLA_FLAGS=xla_flags(devices),
    JAX_PLATFORMS="cpu",
    TMPDIR=str(tmpdir),
    PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    TF_CPP_MIN_LOG_LEVEL="2",
  )
  env.update(extra)
  return env


def main_cmd(workdir: Path, *flags: str) -> list[str]:
  return [sys.executable, "-m", "lr2vq_jax.main", QUICK, f"--workdir={workdir}", *flags]


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
  with open(log, "w") as f:
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen, log: Path) -> str:
  """Waits for `proc`; its output, or a failure with the end of it."""
  try:
    proc.wait(timeout=TIMEOUT)
  finally:
    if proc.poll() is None:
      proc.kill()
  text = log.read_text()
  assert proc.returncode == 0, f"{proc.args} failed ({proc.returncode}):\n{text[-6000:]}"
  return text


def run(cmd: list[str], env: dict[str, str], log: Path) -> str:
  return finish(start(cmd, env, log), log)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def copy_workdir(src: Path, dst: Path) -> Path:
  """A copy of a workdir's stages, without the results.json of the run that made it."""
  shutil.copytree(src, dst, ignore=shutil.ignore_patterns("results.json"))
  return dst


@pytest.fixture(scope="session")
def prepared(tmp_path_factory) -> Path:
  """A workdir holding the finished float and lowrank stages (one process, one device)."""
  base = tmp_path_factory.mktemp("prepared")
  workdir = base / "run"
  run(main_cmd(workdir, "--config.stages=float,lowrank"), child_env(1, base), base / "log.txt")
  return workdir


@pytest.fixture(scope="session")
def reference_4dev(prepared, tmp_path_factory) -> Path:
  """The quantize stage trained by one process with 4 devices (the multi-host reference)."""
  base = tmp_path_factory.mktemp("ref4")
  workdir = copy_workdir(prepared, base / "run")
  run(main_cmd(workdir, "--config.stages=quantize"), child_env(4, base), base / "log.txt")
  return workdir


def final_params(workdir: Path, stage: str = "quantize") -> dict:
  """Host params of a stage's last checkpoint, restored onto this process's devices."""
  import jax

  from configs.default import get_config
  from lr2vq_jax.train import trainer

  config = get_config("quick")
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
