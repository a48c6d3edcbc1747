"""The `lr2vq` entry point: the parser built from the registered subcommands, and `main`.

Errors print one line and a hint on stderr and exit with status 2 (`--verbose` shows the
traceback). Heavy imports (flax, models) happen inside the subcommands.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from lr2vq_jax.cli import runs, sizing
from lr2vq_jax.cli.registry import COMMANDS, CLIError

GROUPS = (sizing, runs)  # importing them registers their subcommands; `--help` lists them so


def _commands():
  """The registered subcommands, group by group, each group's in registration order."""
  order = [group.__name__ for group in GROUPS]
  return sorted(COMMANDS.values(), key=lambda cmd: order.index(cmd.run.__module__))


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="lr2vq", description="LR²VQ model compression: sizes, d̃ estimation, (train, export)."
  )
  common = argparse.ArgumentParser(add_help=False)
  common.add_argument("--verbose", action="store_true", help="show tracebacks on errors")
  sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
  for cmd in _commands():
    p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help, parents=[common])
    for flags, kwargs in cmd.arguments:
      p.add_argument(*flags, **kwargs)
    p.set_defaults(run=cmd.run)
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  """Entry point of the `lr2vq` console script; returns the exit status."""
  argv = list(sys.argv[1:] if argv is None else argv)
  if argv[:1] == ["train"] and not {"-h", "--help"} & set(argv[1:2]):
    from lr2vq_jax import main as train_main

    train_main.run(["lr2vq train", *argv[1:]])
    return 0
  args = build_parser().parse_args(argv)
  try:
    return int(args.run(args) or 0)
  except (CLIError, ValueError, KeyError, TypeError, OSError) as e:
    if args.verbose:
      traceback.print_exc()
    message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    hint = (
      getattr(e, "hint", None) or f"see `lr2vq {args.command} --help` (add --verbose for details)"
    )
    print(f"lr2vq {args.command}: error: {message}", file=sys.stderr)
    print(f"hint: {hint}", file=sys.stderr)
    return 2
