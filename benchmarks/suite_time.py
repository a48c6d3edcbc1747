"""`make test` of two revisions on this machine, back to back: how long the suite takes, then and now.

Each revision is cloned from this checkout into a temporary folder (committed code only: local
edits are not in a clone), gets its own venv by its own `make install` (not timed), then runs its
own `make test` as a user would (timed). The rounds alternate (base, head, base, head, ...) so both
see the same machine state. Per run: tests passed and failed, pytest's own duration, the wall
time of `make test` and its CPU seconds (user + sys of every process it waited for).
The default base, d4a742c, is the suite of 2026-11-29 (356 tests in one pytest process), the one
the goal "the suite in at most half the time" was set against (measured here:
benchmarks/results/suite_time.txt). Run it on an idle machine: the suite uses every core. A failed
test is reported in the table, not fatal: the base may fail on a CPU it was not tuned for.

  python benchmarks/suite_time.py [--base d4a742c] [--head HEAD] [--rounds 1] [--keep DIR]
"""

from __future__ import annotations

import argparse
import re
import resource
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE = "d4a742c"
SUMMARY = re.compile(r"=* ?(?P<body>.*\b(?:passed|failed)\b.*) in (?P<seconds>[\d.]+)s")


def parse_summary(output: str) -> dict:
  """Tests passed, failed (failures + errors) and pytest's seconds from its last summary line."""
  for line in reversed(output.splitlines()):
    match = SUMMARY.search(line)
    if match:
      counts = {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", match["body"])}
      failed = counts.get("failed", 0) + counts.get("error", 0) + counts.get("errors", 0)
      return dict(passed=counts.get("passed", 0), failed=failed, pytest_s=float(match["seconds"]))
  raise ValueError("no pytest summary line ('N passed ... in Xs') in the output")


def resolve(rev: str) -> str:
  """The full commit of `rev` in this checkout (one clear error if it names none)."""
  out = subprocess.run(
    ["git", "-C", str(ROOT), "rev-parse", "--verify", f"{rev}^{{commit}}"],
    capture_output=True,
    text=True,
  )
  if out.returncode:
    raise SystemExit(f"suite_time: {rev!r} is not a commit of {ROOT}")
  return out.stdout.strip()


def prepare(commit: str, clone: Path) -> Path:
  """A clone of this checkout at `commit` in `clone`, its venv made by its own `make install`."""
  subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
  subprocess.run(["git", "-C", str(clone), "checkout", "-q", commit], check=True)
  subprocess.run(["make", "-C", str(clone), "install"], check=True, capture_output=True)
  return clone


def run_suite(clone: Path) -> dict:
  """One `make test` in `clone`: parse_summary's fields plus wall and CPU seconds."""
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  start = time.monotonic()
  out = subprocess.run(["make", "-C", str(clone), "test"], capture_output=True, text=True)
  wall = time.monotonic() - start
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
  (clone / "suite_time.log").write_text(out.stdout + out.stderr)
  try:
    summary = parse_summary(out.stdout)
  except ValueError as e:
    tail = "\n".join((out.stdout + out.stderr).splitlines()[-15:])
    raise SystemExit(
      f"suite_time: {e} of make test in {clone} (rc {out.returncode}):\n{tail}"
    ) from None
  return dict(summary, wall_s=wall, cpu_s=cpu)


def report(runs: list[tuple[str, dict]], base: str, head: str) -> None:
  """Table of every run, then RESULT with head/base ratios of the median pytest and CPU seconds."""
  print("| revision | commit | passed | failed | pytest s | make test wall s | CPU s |")
  print("|---|---|---|---|---|---|---|")
  for name, r in runs:
    print(
      f"| {name} | {r['commit'][:9]} | {r['passed']} | {r['failed']} | {r['pytest_s']:.1f} "
      f"| {r['wall_s']:.1f} | {r['cpu_s']:.0f} |"
    )

  def median(name: str, field: str) -> float:
    values = sorted(r[field] for n, r in runs if n == name)
    return values[len(values) // 2]

  print(
    f"RESULT suite_time_ratio={median(head, 'pytest_s') / median(base, 'pytest_s'):.3f} "
    f"cpu_ratio={median(head, 'cpu_s') / median(base, 'cpu_s'):.3f} "
    f"base_s={median(base, 'pytest_s'):.1f} head_s={median(head, 'pytest_s'):.1f}"
  )


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--base", default=BASE, help="the revision to compare against")
  parser.add_argument("--head", default="HEAD", help="the revision measured")
  parser.add_argument("--rounds", type=int, default=1, help="alternating (base, head) rounds")
  parser.add_argument("--keep", help="make the clones (and their logs) here and keep them")
  args = parser.parse_args()
  if args.rounds < 1:
    raise SystemExit(f"suite_time: --rounds must be >= 1, got {args.rounds}")
  commits = {name: resolve(name) for name in (args.base, args.head)}
  with tempfile.TemporaryDirectory(prefix="suite_time-") as tmp:
    folder = Path(args.keep or tmp)
    folder.mkdir(parents=True, exist_ok=True)
    clones = {
      name: prepare(commit, folder / f"{i}-{commit[:12]}")
      for i, (name, commit) in enumerate(commits.items())
    }
    runs = []
    for _ in range(args.rounds):
      for name, clone in clones.items():
        runs.append((name, dict(run_suite(clone), commit=commits[name])))
        r = runs[-1][1]
        print(
          f"{name}: {r['passed']} passed, {r['failed']} failed, {r['pytest_s']:.1f} s", flush=True
        )
  report(runs, args.base, args.head)


if __name__ == "__main__":
  main()
