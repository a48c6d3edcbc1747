"""Loading an experiment config file ("path.py" or "path.py:arg"), one clear error per failure.

The file must be Python defining `get_config(arg=None)` that returns an `ml_collections.ConfigDict`
(the absl `--config` convention). Each way it can fail (missing, not Python, a syntax error, an
import or other error while running it, no `get_config`, `get_config` raising or returning
something else) is a `ConfigLoadError` whose message names the file and the cause in one line.
"""

from __future__ import annotations

import importlib.util
import os
import traceback

import ml_collections

HINT = (
  "--config takes FILE.py[:arg], a Python file whose get_config(arg) returns an "
  "ml_collections.ConfigDict (see configs/default.py)"
)


class ConfigLoadError(ValueError):
  """A config file that does not load; `str(e)` names the file and the cause."""

  hint = HINT


def _where(e: BaseException, path: str) -> str:
  """ " (line N)" of the deepest frame of `e` inside `path`, or ""."""
  if isinstance(e, SyntaxError) and e.lineno:
    return f" (line {e.lineno})"
  frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == path]
  return f" (line {frames[-1].lineno})" if frames else ""


def _cause(e: BaseException) -> str:
  text = " ".join(str(e.msg if isinstance(e, SyntaxError) else e).split())
  return f"{type(e).__name__}: {text}" if text else type(e).__name__


def load_config(spec: str) -> ml_collections.ConfigDict:
  """`get_config(arg)` of the config file `spec` = "path.py" or "path.py:arg"."""
  path, _, arg = spec.partition(":")
  if not path:
    raise ConfigLoadError("--config is empty")
  if not os.path.isfile(path):
    what = "is a directory" if os.path.isdir(path) else "does not exist"
    raise ConfigLoadError(f"config file {path} {what}")
  path = os.path.abspath(path)
  not_python = not path.endswith(".py")
  module_spec = importlib.util.spec_from_file_location("_lr2vq_config", path)
  if module_spec is None or module_spec.loader is None or not_python:
    raise ConfigLoadError(f"config file {path} is not a Python file (expected FILE.py)")
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
  except SyntaxError as e:
    raise ConfigLoadError(
      f"config file {path} is not valid Python{_where(e, path)}: {_cause(e)}"
    ) from e
  except Exception as e:  # noqa: BLE001 - any error while running the file is the file's
    raise ConfigLoadError(
      f"config file {path} failed while loading{_where(e, path)}: {_cause(e)}"
    ) from e
  get_config = getattr(module, "get_config", None)
  if not callable(get_config):
    raise ConfigLoadError(f"config file {path} defines no get_config() function")
  call = f"get_config({arg!r})" if arg else "get_config()"
  try:
    config = get_config(arg) if arg else get_config()
  except Exception as e:  # noqa: BLE001
    raise ConfigLoadError(f"config file {path}: {call} raised {_cause(e)}{_where(e, path)}") from e
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigLoadError(
      f"config file {path}: {call} returned {type(config).__name__}, "
      "not an ml_collections.ConfigDict"
    )
  return config
