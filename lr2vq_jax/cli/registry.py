"""The subcommand registry of the `lr2vq` command line, and its one user-facing error.

Each subcommand is one function decorated with `@command(name, help, *arguments)`; `main` builds
the parser from `COMMANDS` in registration order.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from typing import Any


class CLIError(Exception):
  """A user-facing error: one line of message, one line of hint."""

  def __init__(self, message: str, hint: str | None = None):
    super().__init__(message)
    self.hint = hint


@dataclasses.dataclass(frozen=True)
class _Command:
  name: str
  help: str
  arguments: tuple[tuple[tuple[str, ...], dict[str, Any]], ...]
  run: Callable[[argparse.Namespace], int | None]


COMMANDS: dict[str, _Command] = {}


def arg(*flags: str, **kwargs) -> tuple[tuple[str, ...], dict[str, Any]]:
  """One `add_argument` call, declared next to its subcommand."""
  return flags, kwargs


def command(name: str, help_text: str, *arguments):
  """Register `fn(args) -> exit status | None` as subcommand `name`."""

  def register(fn):
    COMMANDS[name] = _Command(name, help_text, tuple(arguments), fn)
    return fn

  return register
