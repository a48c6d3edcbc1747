"""Work made once per run of the suite and shared by its pytest-xdist workers.

Under xdist every worker is its own pytest session, so a session fixture runs once per worker.
The expensive ones (training runs) are made once per suite run instead, as pytest-xdist documents:
the first worker to take a FileLock in the folder all workers share makes the result, the others
wait on the lock and then read it. Without xdist the folder is this session's own temp dir.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from filelock import FileLock

from tests.support import devices

DONE = ".done"  # written when a shared result is complete; holds the producer's return code


def shared_root(config: pytest.Config) -> Path:
  """A folder every worker of this suite run sees: the controller's basetemp under xdist (each
  worker's basetemp is a folder in it), else this session's basetemp."""
  base = config._tmp_path_factory.getbasetemp()  # the factory behind `tmp_path_factory`
  return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def once_per_run(config: pytest.Config, name: str, produce: Callable[[Path], None]) -> Path:
  """`shared_root/name`, filled by `produce(folder)` in exactly one worker (the first to ask).
  A producer that failed leaves no `.done`: the next worker to ask tries again from scratch."""
  folder = shared_root(config) / name
  _fill_once(folder, lambda f: produce(f) or 0)
  return folder


def _fill_once(folder: Path, produce: Callable[[Path], int]) -> None:
  """Under the folder's FileLock: unless `.done` is there, `produce(folder)` into a fresh folder,
  then `.done` records its return code (an exception leaves none)."""
  with FileLock(f"{folder}.lock"):
    if not (folder / DONE).exists():
      shutil.rmtree(folder, ignore_errors=True)
      folder.mkdir(parents=True)
      (folder / DONE).write_text(str(produce(folder)))


class BackgroundRun:
  """A training subprocess started early (at collection) that one worker runs for all of them.

  Each worker starts a thread that takes the run's FileLock: the first trains (the lock held until
  the process ends and `.done` records its return code), the others find `.done` and return.
  `result()` joins this worker's thread and checks the run succeeded."""

  def __init__(self, name: str, command: Callable[[Path], tuple[list[str], dict[str, str]]]):
    self.name, self.command = name, command
    self.folder: Path | None = None
    self.proc = None
    self.thread: threading.Thread | None = None

  def start(self, config: pytest.Config) -> None:
    if self.thread is None:
      self.folder = shared_root(config) / self.name
      self.thread = threading.Thread(target=self._train_once, name=self.name, daemon=True)
      self.thread.start()

  def _train_once(self) -> None:
    assert self.folder is not None
    _fill_once(self.folder, self._train)

  def _train(self, folder: Path) -> int:
    """The training process's return code (killed after `devices.TIMEOUT`)."""
    cmd, env = self.command(folder)
    self.proc = devices.start(cmd, env, folder / "log.txt")
    try:
      self.proc.wait(timeout=devices.TIMEOUT)
    except subprocess.TimeoutExpired:
      pass  # killed below; `.done` records its code
    finally:
      if self.proc.poll() is None:
        self.proc.kill()
    return self.proc.wait()

  def result(self, config: pytest.Config) -> Path:
    """The run's folder once it finished with exit code 0 (a failure shows the end of its log)."""
    self.start(config)
    assert self.thread is not None and self.folder is not None
    self.thread.join(timeout=2 * devices.TIMEOUT)
    done, log = self.folder / DONE, self.folder / "log.txt"
    assert done.exists(), f"the shared {self.name} did not finish (log: {log})"
    text = log.read_text() if log.exists() else ""
    rc = done.read_text()
    assert rc == "0", f"the shared {self.name} failed ({rc}):\n{text[-6000:]}"
    return self.folder

  def stop(self, *, wait: bool) -> None:
    """At session end: a run this worker trains is waited for (other workers may still need it),
    or killed when the session was interrupted."""
    if self.proc is not None and self.proc.poll() is None:
      if not wait:
        self.proc.kill()
      if self.thread is not None:
        self.thread.join(timeout=2 * devices.TIMEOUT)
