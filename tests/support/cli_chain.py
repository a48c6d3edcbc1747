"""Several commands run one after another in one Python process, each reading what the one before
wrote (checkpoints, artifact): one start-up, one import of jax and one jax.distributed handshake
instead of one per command (absl's global flags are reset before each, so several `train` commands
can follow one another). The output (stdout, stderr, or both merged) is split per command at
marker lines.
"""

from __future__ import annotations

import json
import re
import sys
import textwrap

SCRIPT = textwrap.dedent(
  """
  import json, sys, traceback
  from lr2vq_jax.cli import main

  def mark(line):  # on both streams: each can be split alone, or both merged into one
    for stream in (sys.stdout, sys.stderr):
      print(f"=== {line}", file=stream, flush=True)

  def fresh_flags():  # absl's flags are global: a second `train` would meet the first's overrides
    from absl import flags
    for field in [f for f in flags.FLAGS if f.startswith("config.")]:
      delattr(flags.FLAGS, field)
    flags.FLAGS.unparse_flags()

  keep_going = sys.argv[2:] == ["--keep-going"]
  for name, argv in json.loads(sys.argv[1]):
    mark(name)
    fresh_flags()
    try:
      if argv[0] == "-c":  # a snippet, as `python -c CODE ARGS...` runs it
        sys.argv = ["-c", *argv[2:]]
        exec(compile(argv[1], name, "exec"), {"__name__": "__main__"})
        rc = 0
      else:  # `lr2vq ARGV...`; absl's config flags read their overrides from sys.argv
        sys.argv = ["lr2vq", *argv]
        rc = main(argv)
    except SystemExit as e:  # `train` ends through absl's app.run
      rc = e.code if isinstance(e.code, int) or e.code is None else 1
      if isinstance(e.code, str):
        print(e.code, file=sys.stderr)
    except Exception:
      traceback.print_exc()
      rc = 1
    sys.stdout.flush()
    sys.stderr.flush()
    mark(f"exit {rc or 0}")
    if rc and not keep_going:
      raise SystemExit(rc)
  """
)


def command(steps: list[tuple[str, list[str]]], *, keep_going: bool = False) -> list[str]:
  """The command line running `steps`, (name, argv) pairs: argv is an `lr2vq` command line
  (`["export", "--out", ...]`) or `["-c", CODE, *args]`; the first failure ends the chain unless
  `keep_going` (commands expected to fail, each on its own)."""
  return [
    sys.executable,
    "-c",
    SCRIPT,
    json.dumps(steps),
    *(["--keep-going"] if keep_going else []),
  ]


def split(out: str) -> dict[str, tuple[int | None, str]]:
  """A chain's output as {name: (exit code or None if it did not end, its output)} (merged
  streams show each marker twice: the second opens the command's text)."""
  parts = re.split(r"^=== (.+)\n", out, flags=re.M)
  found: dict[str, tuple[int | None, str]] = {}
  name = None
  for marker, text in zip(parts[1::2], parts[2::2], strict=True):
    if (m := re.fullmatch(r"exit (\d+)", marker)) and name is not None:
      found[name] = (int(m.group(1)), found[name][1])
    else:
      name = marker
      found[name] = (None, text)
  return found
