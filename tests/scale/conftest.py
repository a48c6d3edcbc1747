"""The scale-out tests' shared runs: the quick pipeline's float + lowrank stages (a copy of the
session's `quick_run`) and the quantize stage trained from them by one process with 4 devices
(once per run of the suite, shared by the pytest-xdist workers)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support import cli_chain
from tests.support.devices import QUICK, child_env, copy_workdir, run
from tests.support.shared_runs import once_per_run

REF4 = "ref4"  # the 4-device reference's folder in the suite's shared root


@pytest.fixture(scope="session")
def prepared(quick_run, tmp_path_factory) -> Path:
  """A workdir holding the finished float and lowrank stages (one process, one device)."""
  workdir = copy_workdir(quick_run, tmp_path_factory.mktemp("prepared") / "run")
  shutil.rmtree(workdir / "quantize")
  return workdir


def _quantize_argv(workdir: Path) -> list[str]:
  """`lr2vq train` of the quick config's quantize stage in `workdir`, for a cli_chain."""
  return ["train", QUICK, f"--workdir={workdir}", "--config.stages=quantize"]


@pytest.fixture(scope="session")
def reference_4dev_beside(prepared, request):
  """`beside(workdir)`: the quantize stage trained by one process with 4 devices (the multi-host
  reference; once per run of the suite, under pytest-xdist by the first worker that asks) and,
  when this call makes it and `workdir` is given, `workdir`'s quantize stage trained right after
  it in the same 4-device process (tests/support/cli_chain: one start-up and import for both; the
  second loads the first's programs). Returns the reference's workdir and that second run's (exit
  code, output), or None when it did not run (the caller then runs it alone)."""

  def beside(workdir: Path | None) -> tuple[Path, tuple[int | None, str] | None]:
    found: dict[str, tuple[int | None, str]] = {}

    def train(base: Path) -> None:
      steps = [("reference", _quantize_argv(copy_workdir(prepared, base / "run")))]
      if workdir is not None:
        steps.append(("beside", _quantize_argv(workdir)))
      out = run(cli_chain.command(steps, keep_going=True), child_env(4, base), base / "log.txt")
      ran = cli_chain.split(out)
      rc, text = ran.get("reference", (None, out))
      assert rc == 0, f"the 4-device reference failed ({rc}):\n{text[-6000:]}"
      if workdir is not None:
        found["beside"] = ran.get("beside", (None, out))

    return once_per_run(request.config, REF4, train) / "run", found.get("beside")

  return beside


@pytest.fixture(scope="session")
def reference_4dev(reference_4dev_beside) -> Path:
  """The 4-device reference alone (see `reference_4dev_beside`)."""
  return reference_4dev_beside(None)[0]
