"""Shared helpers of the reliability tests: run the training entry point in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from lr2vq_jax.train import checkpointing

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QUICK = os.path.join(ROOT, "configs", "default.py") + ":quick"


def train_cmd(workdir, *overrides: str, config: str = QUICK) -> list[str]:
  return [
    sys.executable, "-m", "lr2vq_jax.main", f"--config={config}", f"--workdir={workdir}", *overrides
  ]  # fmt: skip


def env() -> dict:
  return {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT}


def start(cmd: list[str], log: str) -> subprocess.Popen:
  out = open(log, "wb")  # noqa: SIM115 -- closed with the process
  return subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=out, stderr=subprocess.STDOUT)


def run(cmd: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
  return subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=timeout)


def checkpoint_steps(stage_dir) -> list[int]:
  """Steps orbax calls committed (locally a renamed-into-place step dir; on gs:// one with its
  commit_success.txt), read without opening a manager."""
  return checkpointing.committed_steps(checkpointing.checkpoint_dir(stage_dir))


def wait_for_checkpoint(proc: subprocess.Popen, stage_dir, min_step: int, timeout: float = 180):
  """Polls until a checkpoint at step >= min_step exists; fails if the process ends first."""
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    steps = checkpoint_steps(stage_dir)
    if steps and steps[-1] >= min_step:
      return steps[-1]
    if proc.poll() is not None:
      raise AssertionError(f"process ended (rc {proc.returncode}) before step {min_step}")
    time.sleep(0.02)
  raise AssertionError(f"no checkpoint >= {min_step} after {timeout}s")


def metrics_text(stage_dir) -> str:
  with open(os.path.join(stage_dir, "metrics.jsonl"), encoding="utf-8") as f:
    return f.read()


def metrics_rows(stage_dir) -> list[dict]:
  return [json.loads(line) for line in metrics_text(stage_dir).splitlines() if line.strip()]
