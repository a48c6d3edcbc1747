"""Child processes with N simulated CPU devices: environment, command lines, start and wait.

Each child gets `--xla_force_host_platform_device_count=N` added to the parent's other XLA_FLAGS
(so e.g. `--xla_cpu_max_isa=AVX2` reaches the children; the pytest process keeps its own devices) and a TMPDIR inside the test's temporary folder. The float + lowrank checkpoints of the
quick digits pipeline are made once per run of the suite (shared by the pytest-xdist workers);
runs copy that workdir and train only `quantize`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from tests.support.paths import QUICK as QUICK_SPEC
from tests.support.paths import ROOT, child_pythonpath

QUICK = f"--config={QUICK_SPEC}"
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
    PYTHONPATH=child_pythonpath(),
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


def run_script(script: str, *args: str, devices: int, tmp: Path, timeout: int = TIMEOUT) -> str:
  """Runs `python -c script args...` with `devices` simulated devices; its stdout, or a failure
  with the end of its stderr."""
  proc = subprocess.run(
    [sys.executable, "-c", script, *args],
    cwd=ROOT,
    env=child_env(devices, tmp),
    capture_output=True,
    text=True,
    timeout=timeout,
  )
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
  return proc.stdout


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def copy_workdir(src: Path, dst: Path) -> Path:
  """A copy of a workdir's stages, without the results.json of the run that made it."""
  shutil.copytree(src, dst, ignore=shutil.ignore_patterns("results.json"))
  return dst
