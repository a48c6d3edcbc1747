"""The checkout's root and its configs as absolute paths: tests run from any working directory."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"


def config(spec: str) -> str:
  """`"default.py:quick"` → the absolute `…/configs/default.py:quick` that `load_config` reads."""
  return str(CONFIGS / spec)


QUICK = config("default.py:quick")


def child_pythonpath() -> str:
  """PYTHONPATH for a child process: this checkout first, then this process's own entries."""
  return os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
