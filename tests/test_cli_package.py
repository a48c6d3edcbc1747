"""The `lr2vq` command as a package: every entry point runs the same parser, subcommands in order."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib

from lr2vq_jax import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORDER = ["report", "estimate-dim", "plan", "train", "export", "eval", "prepare"]


def _help(*module_and_args: str) -> str:
  env = {**os.environ, "COLUMNS": "100", "PYTHONPATH": ROOT}
  out = subprocess.run(
    [sys.executable, "-m", *module_and_args, "--help"],
    capture_output=True,
    text=True,
    env=env,
    cwd=ROOT,
    check=True,
  )
  return out.stdout


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
