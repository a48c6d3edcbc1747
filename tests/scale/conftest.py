"""The scale-out tests' shared runs: the quick pipeline's float + lowrank stages (a copy of the
session's `quick_run`); the quantize stage trained from them by one process with 4 devices is
the session's `reference_4dev` (tests/conftest.py: trained in the background, once per run of the
suite, as soon as the quick run is done)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.devices import copy_workdir


@pytest.fixture(scope="session")
def prepared(quick_run, tmp_path_factory) -> Path:
  """A workdir holding the finished float and lowrank stages (one process, one device)."""
  workdir = copy_workdir(quick_run, tmp_path_factory.mktemp("prepared") / "run")
  shutil.rmtree(workdir / "quantize")
  return workdir
