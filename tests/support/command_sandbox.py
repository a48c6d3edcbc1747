"""Runs a documented command as printed, small, offline and local, from a sandbox folder.

The sandbox holds `configs/`, `benchmarks/` and `launch/` of this checkout, a tiny ImageNet in the
official tar layout and torchvision-layout weight files; tests/test_documented_commands.py lists
the substitutions that make each command small.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from tests.support.command_coverage import coverage_row
from tests.support.paths import ROOT, child_pythonpath

TIMEOUT = 600


@dataclasses.dataclass
class Started:
  """A command started ahead of its turn (`start_documented`): its process and output files."""

  argv: list[str]
  proc: subprocess.Popen
  stdout: Path
  stderr: Path


@dataclasses.dataclass
class Sandbox:
  root: Path
  data_dir: Path
  manual_dir: Path
  weights: dict[str, Path]
  runs: dict[str, str] = dataclasses.field(default_factory=dict)  # train args → workdir
  outputs: dict[int, str | None] = dataclasses.field(default_factory=dict)  # README index → stdout
  exported: dict[str, str] = dataclasses.field(default_factory=dict)  # README `export` lines
  started: dict[str, Started] = dataclasses.field(default_factory=dict)  # command → its process

  def env(self) -> dict[str, str]:
    path = os.path.dirname(sys.executable)  # this environment's `lr2vq` console script
    return {
      **{k: v for k, v in os.environ.items() if not k.startswith("LR2VQ_")},
      "PATH": f"{path}{os.pathsep}{os.environ.get('PATH', '')}",
      "PYTHONPATH": child_pythonpath(),
      "JAX_PLATFORMS": "cpu",
      "TF_CPP_MIN_LOG_LEVEL": "2",
    }

  def close(self) -> None:
    """Stops the commands started ahead that nobody waited for (an interrupted module)."""
    for started in self.started.values():
      if started.proc.poll() is None:
        started.proc.kill()
        started.proc.wait()


def make_sandbox(root: Path) -> Sandbox:
  """A sandbox in `root`: the checkout's folders linked, tiny ImageNet tars written and prepared."""
  from tests.support.tiny_imagenet import write_tiny_imagenet
  from tests.support.torchvision_weights import write_torchvision_weights

  for name in ("configs", "benchmarks", "launch"):
    (root / name).symlink_to(ROOT / name)
  manual = root / "data" / "imagenet_tars"
  write_tiny_imagenet(manual)
  weights = {
    m: write_torchvision_weights(
      root / "data" / f"{m}_torchvision.safetensors", f"{m}_width8_1block"
    )
    for m in ("resnet18", "resnet50")
  }
  box = Sandbox(root, root / "data" / "tensorflow_datasets", manual, weights)
  out = _run(box, ["lr2vq", "prepare", "imagenet2012", "--manual_dir", str(manual),
                   "--data_dir", str(box.data_dir)])  # fmt: skip
  assert "train 14, validation 4 examples" in out
  return box


# The steps of each stage of a training that shares no program with the suite's other runs (a
# config's own argument, or the quick config with its own d̃, rules, m or k): every step size and
# schedule is baked into its own programs anyway, and a stage of 2 steps runs the same code as one
# of 6 (the first and last step, a log row, the final checkpoint and evaluation). x_d2 (CPU s, warm
# cache, 2-core EPYC): 13.7 -> 12.0.
SHORT = [f"--config.{s}.num_steps=2" for s in ("float", "lowrank", "quantize", "pq", "dkm")]
SHORT_KMEANS = ["--config.quant.kmeans_iters=2"]
# Overrides after which a quick run's stages compile programs of their own.
OWN_PROGRAMS = ("--config.d=", "--config.rules=", "--config.m=", "--config.k=")


def _config_suffix(spec: str) -> tuple[str, list[str]]:
  """`configs/X.py` → (`configs/X.py:quick|:runlocal`, []) or (spec, step-shortening overrides)."""
  path, _, arg = spec.partition(":")
  header = (ROOT / path).read_text(encoding="utf-8")
  for mode in ("quick", "runlocal"):
    if not arg and f"{path}:{mode}" in header:
      return f"{path}:{mode}", []
  return spec, SHORT + SHORT_KMEANS


def _own_programs(argv: list[str], spec: str) -> list[str]:
  """SHORT for a training of the quick config whose overrides give it programs of its own."""
  train = argv[:2] == ["lr2vq", "train"] or argv[1:3] == ["-m", "lr2vq_jax.main"]
  own = any(a.startswith(OWN_PROGRAMS) for a in argv) and "--show-config" not in argv
  return SHORT if train and own and spec.endswith(":quick") else []


def _substitute(box: Sandbox, argv: list[str]) -> list[str]:
  out, extra = [], []
  for i, a in enumerate(argv):
    prev = argv[i - 1] if i else ""
    if a.startswith("--config=configs/") or (prev == "--config" and a.startswith("configs/")):
      head = "--config=" if a.startswith("--config=") else ""
      spec, extra = _config_suffix(a[len(head) :])
      extra = extra or _own_programs(argv, spec)
      a = head + spec
    a = re.sub(r"gs://BUCKET/", "runs/", a)
    for prefix in ("/path/", "/data/"):
      if prefix in a and not a.split(prefix, 1)[0].endswith(str(box.root)):
        name = a.split(prefix, 1)[1]
        model = name.split("_torchvision")[0]
        target = {
          "tensorflow_datasets": box.data_dir,
          "imagenet_tars": box.manual_dir,
        }.get(name) or box.weights.get(model)
        assert target is not None, f"no sandbox file for {prefix}{name}"
        a = a.split(prefix, 1)[0] + str(target)
    out.append(a)
  return out + extra


def _workdir(argv: list[str]) -> str | None:
  workdir = next((a.split("=", 1)[1] for a in argv if a.startswith("--workdir=")), None)
  if workdir is None and "--workdir" in argv:
    workdir = argv[argv.index("--workdir") + 1]
  return workdir


def _link_repeated_run(box: Sandbox, argv: list[str]) -> bool:
  """A train whose arguments repeat an earlier one's but for --workdir: link that workdir (once
  that run, if started ahead, has finished)."""
  if argv[:2] != ["lr2vq", "train"] and argv[1:3] != ["-m", "lr2vq_jax.main"]:
    return False
  workdir = _workdir(argv)
  rest = [a for a in argv if a not in (workdir, "--workdir", f"--workdir={workdir}")]
  key = " ".join(rest[2:] if argv[0] == "lr2vq" else rest[3:])
  if key in box.runs and workdir:
    for started in box.started.values():
      if _workdir(started.argv) == box.runs[key]:
        _wait_started(started)
    target = box.root / workdir
    if box.runs[key] == workdir:  # the very same command again: its run is done
      return True
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(box.root / box.runs[key], target_is_directory=True)
    return True
  box.runs[key] = workdir or ""
  return False


def _checked(argv: list[str], returncode: int, stdout: str, stderr: str) -> str:
  text = stdout + stderr
  assert returncode == 0, f"`{shlex.join(argv)}` exited {returncode}:\n{text[-4000:]}"
  assert "Traceback" not in text, text[-4000:]
  return stdout


def _run(box: Sandbox, argv: list[str]) -> str:
  proc = subprocess.run(argv, cwd=box.root, env=box.env(), capture_output=True, text=True,
                        timeout=TIMEOUT)  # fmt: skip
  return _checked(argv, proc.returncode, proc.stdout, proc.stderr)


def _validate(box: Sandbox, argv: list[str]) -> str:
  """`lr2vq train` flag parsing (absl + config overrides) and config validation, in-process."""
  from absl import flags
  from ml_collections import config_flags

  from lr2vq_jax.train.validate import validate_config

  flag_argv = ["lr2vq train", *argv[2:]]
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, flag_values=fv, sys_argv=flag_argv)
  flags.DEFINE_string("workdir", None, "", flag_values=fv)
  fv(flag_argv)
  cwd = os.getcwd()
  try:
    os.chdir(box.root)
    validate_config(fv.config, str(box.root / fv.workdir))
  finally:
    os.chdir(cwd)
  return ""


def _exports(command: str) -> dict[str, str]:
  """{name: value} of an `export A=B C=D` line."""
  return dict(word.split("=", 1) for word in shlex.split(command)[1:])


def _dry_run(box: Sandbox, command: str) -> str:
  """A launcher line with DRY_RUN=1 and the exported variables: it must print gcloud commands."""
  env = {**box.env(), **box.exported, "DRY_RUN": "1"}
  proc = subprocess.run(["bash", "-c", command], cwd=box.root, env=env, capture_output=True,
                        text=True, timeout=60)  # fmt: skip
  assert proc.returncode == 0, f"`{command}` (dry run) exited {proc.returncode}:\n{proc.stderr}"
  printed = [ln for ln in proc.stdout.splitlines() if ln.startswith("+ ")]
  assert printed and all(ln.startswith(("+ gcloud ", "+ git ")) for ln in printed), proc.stdout
  return proc.stdout


def _makefile_recipe(target: str) -> str:
  lines = (ROOT / "Makefile").read_text(encoding="utf-8").splitlines()
  start = next(i for i, ln in enumerate(lines) if ln.startswith(f"{target}:"))
  recipe = lines[start + 1].strip()
  return recipe.replace("$(BIN)/python", "python")


def _argv(box: Sandbox, command: str) -> list[str]:
  """The command's argv with the sandbox's substitutions (`python` = this interpreter)."""
  argv = _substitute(box, shlex.split(command))
  return [sys.executable, *argv[1:]] if argv[0] == "python" else argv


def start_documented(box: Sandbox, command: str) -> None:
  """Starts a RUN command ahead of its turn, in the background; `run_documented` waits for it and
  checks it as if it ran then. Only for a command that needs nothing later commands make."""
  row = coverage_row(command)
  assert row is not None and not (row.skip or row.env or row.dry or row.validate), command
  assert not command.startswith("make ") and command not in box.started, command
  argv = _argv(box, command)
  assert not _link_repeated_run(box, argv), command
  logs = box.root / "logs"
  logs.mkdir(exist_ok=True)
  out, err = logs / f"{len(box.started)}.out", logs / f"{len(box.started)}.err"
  with open(out, "w") as stdout, open(err, "w") as stderr:
    proc = subprocess.Popen(argv, cwd=box.root, env=box.env(), stdout=stdout, stderr=stderr)
  box.started[command] = Started(argv, proc, out, err)


def _wait_started(started: Started) -> str:
  try:
    started.proc.wait(timeout=TIMEOUT)
  finally:
    if started.proc.poll() is None:
      started.proc.kill()
  stdout, stderr = started.stdout.read_text(), started.stderr.read_text()
  return _checked(started.argv, started.proc.wait(), stdout, stderr)


def run_documented(box: Sandbox, command: str) -> str | None:
  """Runs one documented command (COVERAGE says how); its stdout, or None when skipped. A command
  started ahead (`start_documented`) is waited for and checked the same way."""
  if command in box.started:
    return _wait_started(box.started[command])
  row = coverage_row(command)
  assert row is not None, command
  if row.skip:
    return None
  if row.env:
    box.exported.update(_exports(command))
    return ""
  if row.dry:
    return _dry_run(box, command)
  if row.validate:
    return _validate(box, _substitute(box, shlex.split(command)))
  if command.startswith("make "):
    command = _makefile_recipe(command.split()[1])
  argv = _argv(box, command)
  if _link_repeated_run(box, argv):
    return ""
  return _run(box, argv)
