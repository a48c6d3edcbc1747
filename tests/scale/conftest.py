"""The scale-out tests' shared runs: the quick pipeline's float + lowrank stages (a copy of the
session's `quick_run`) and the quantize stage trained from them by one process with 4 devices
(once per run of the suite, shared by the pytest-xdist workers)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.devices import child_env, copy_workdir, main_cmd, run
from tests.support.shared_runs import once_per_run


@pytest.fixture(scope="session")
def prepared(quick_run, tmp_path_factory) -> Path:
  """A workdir holding the finished float and lowrank stages (one process, one device)."""
  workdir = copy_workdir(quick_run, tmp_path_factory.mktemp("prepared") / "run")
  shutil.rmtree(workdir / "quantize")
  return workdir


@pytest.fixture(scope="session")
def reference_4dev(prepared, request) -> Path:
  """The quantize stage trained by one process with 4 devices (the multi-host reference); once
  per run of the suite (under pytest-xdist, by the first worker that asks)."""

  def train(base: Path) -> None:
    workdir = copy_workdir(prepared, base / "run")
    run(main_cmd(workdir, "--config.stages=quantize"), child_env(4, base), base / "log.txt")

  return once_per_run(request.config, "ref4", train) / "run"
