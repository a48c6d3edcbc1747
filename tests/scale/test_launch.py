"""launch/*.sh: valid bash, and their dry runs print the expected commands."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.scale.conftest import ROOT

SCRIPTS = sorted((ROOT / "launch").glob("*.sh"))


def _dry(script: str, *args: str, **env: str) -> str:
  full_env = {**os.environ, **env}
  proc = subprocess.run(
    ["bash", str(ROOT / "launch" / script), "--dry-run", *args],
    capture_output=True,
    text=True,
    env=full_env,
    cwd=ROOT,
    check=False,
    timeout=60,
  )
  assert proc.returncode == 0, proc.stderr
  return proc.stdout


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bash_syntax(script):
  subprocess.run(["bash", "-n", str(script)], check=True)


def test_single_host():
  out = _dry("single_host.sh", "--cpu-devices", "8", "--", "--config.stages=float")
  assert "XLA_FLAGS=--xla_force_host_platform_device_count=8" in out
  assert "-m lr2vq_jax.main --config configs/default.py --workdir runs/single_host" in out
  assert out.rstrip().endswith("--config.stages=float")


def test_gpu_multinode_env_and_local():
  out = _dry(
    "gpu_multinode.sh",
    "--workdir",
    "/shared/w",
    COORDINATOR="n0:1234",
    NUM_PROCESSES="2",
    PROCESS_ID="1",
  )
  assert "LR2VQ_COORDINATOR=n0:1234 LR2VQ_NUM_PROCESSES=2 LR2VQ_PROCESS_ID=1" in out
  out = _dry("gpu_multinode.sh", "--local", "2", "--cpu-devices", "2")
  lines = [ln for ln in out.splitlines() if ln.startswith("+")]
  assert len(lines) == 2 and "LR2VQ_PROCESS_ID=0" in lines[0] and "LR2VQ_PROCESS_ID=1" in lines[1]
  out = _dry("gpu_multinode.sh", "--install", COORDINATOR="a:1", NUM_PROCESSES="1", PROCESS_ID="0")
  assert "jax\\[cuda12\\]==0.10.2" in out


def test_gpu_slurm():
  out = _dry("gpu_slurm.sh", "--", "--config.stages=quantize", WORKDIR="/shared/w")
  assert out.startswith("+ srun ")
  assert "env LR2VQ_DISTRIBUTED=1" in out and "--workdir /shared/w --config.stages=quantize" in out


def test_tpu_pod():
  assert "tpu-vm create lr2vq-pod" in _dry("tpu_pod.sh", "create")
  out = _dry("tpu_pod.sh", "setup")
  assert "--worker=all" in out and "jax\\[tpu\\]==0.10.2" in out
  out = _dry("tpu_pod.sh", "run", WORKDIR="/mnt/shared/w")
  assert "tpu-vm ssh lr2vq-pod" in out and "--worker=all" in out and "LR2VQ_DISTRIBUTED=1" in out
  assert "tpu-vm delete lr2vq-pod" in _dry("tpu_pod.sh", "delete")
