"""The `lr2vq` command as a package: every entry point runs the same parser, subcommands in order."""

from __future__ import annotations

import contextlib
import io
import os
import runpy
import sys
import tomllib

import pytest

from lr2vq_jax import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORDER = ["report", "estimate-dim", "plan", "train", "export", "eval", "prepare"]


def _help(*module_and_args: str) -> str:
  """`python -m MODULE ARGS --help`'s output, run in this process the way `-m` runs a module
  (runpy; the real `python -m lr2vq_jax` subprocess is tests/test_cli.py::test_python_dash_m)."""
  module, *args = module_and_args
  with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(io.StringIO()) as out:
    mp.setenv("COLUMNS", "100")
    mp.setattr(sys, "argv", [module, *args, "--help"])
    with pytest.raises(SystemExit) as info:
      runpy.run_module(module, run_name="__main__", alter_sys=True)
  assert info.value.code in (0, None)
  return out.getvalue()


def test_subcommands_are_listed_in_their_order():
  parser = cli.build_parser()
  sub = next(a for a in parser._actions if a.dest == "command")
  assert list(sub.choices) == ORDER
  text = parser.format_help()
  assert [text.index(f"    {name}") for name in ORDER] == sorted(
    text.index(f"    {name}") for name in ORDER
  )


def test_every_entry_point_is_the_same_command():
  with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
    scripts = tomllib.load(f)["project"]["scripts"]
  assert scripts == {"lr2vq": "lr2vq_jax.cli:main"}
  package, module = _help("lr2vq_jax"), _help("lr2vq_jax.cli")
  assert package == module and package.startswith("usage: lr2vq ")
  assert all(name in package for name in ORDER)
  assert "--stage {quantize,pq,dkm}" in _help("lr2vq_jax.cli", "export")
