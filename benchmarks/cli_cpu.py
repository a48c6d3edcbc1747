"""CPU seconds of the README's sizing commands (`lr2vq plan`, `estimate-dim`, `report`, `eval`),
each a fresh process as a user runs it, with its stdout and written files hashed.

The commands read one finished quick digits run (`--run`, made first by `lr2vq train --config
configs/default.py:quick` when missing, and its quantize stage exported). Each runs `--repeat`
times; the table has the best child CPU s (user + sys, `resource.getrusage`) and a hash of what it
printed and wrote, so two checkouts (`--tree`) are compared on both. No persistent compilation
cache. With the test suite's settings:

  JAX_PLATFORMS=cpu JAX_DEFAULT_PRNG_IMPL=rbg XLA_FLAGS="--xla_backend_optimization_level=0 \
    --xla_cpu_use_fusion_emitters=false" python benchmarks/cli_cpu.py --run /tmp/quick --tree DIR
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = f"{ROOT / 'configs/default.py'}:quick"


def commands(run: Path, out: Path) -> dict[str, list[str]]:
  """name → argv (after `python -m lr2vq_jax.cli`) of the README's sizing commands."""
  float_dir = str(run / "float")
  return {
    "plan": [
      "plan",
      "--config",
      CONFIG,
      "--float-dir",
      float_dir,
      "--target-bytes",
      "13800",
      "--out",
      str(out / "plan.rules"),
      "--png",
      str(out / "plan.png"),
    ],  # fmt: skip
    "estimate-dim --model": ["estimate-dim", "--model", "resnet18", "--layer", "layer1_0/conv1"],
    "estimate-dim --config": ["estimate-dim", "--config", CONFIG, "--float-dir", float_dir],
    "report --model": ["report", "--model", "resnet18", "--preset", "resnet18_large_blocks"],
    "report --config": ["report", "--config", CONFIG],
    "eval": ["eval", "--artifact", str(run / "art")],
  }


def _cli(tree: Path, argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
  env = {**os.environ, "PYTHONPATH": str(tree)}
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  # -P and a cwd outside any checkout: `--tree`'s lr2vq_jax is the one imported
  return subprocess.run([sys.executable, "-P", "-m", "lr2vq_jax.cli", *argv], cwd=cwd, env=env,
                        capture_output=True, text=True, check=False)  # fmt: skip


def ensure_run(tree: Path, run: Path) -> None:
  """A finished quick run in `run`, its quantize stage exported to `run/art`."""
  if not (run / "float").is_dir():
    subprocess.run([sys.executable, "-P", "-m", "lr2vq_jax.main", f"--config={CONFIG}",
                    f"--workdir={run}"], cwd=run.parent, env={**os.environ, "PYTHONPATH": str(tree)},
                   check=True, capture_output=True)  # fmt: skip
  if not (run / "art").is_dir():
    argv = ["export", "--config", CONFIG, "--workdir", str(run), "--out", str(run / "art")]
    assert _cli(tree, argv, run.parent).returncode == 0


def measure(tree: Path, run: Path, argv: list[str], out: Path) -> tuple[float, str]:
  """(child CPU s, hash of exit status, stdout, stderr and the files written to `out`)."""
  shutil.rmtree(run / "dim", ignore_errors=True)  # estimate-dim --config's scratch runs
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  proc = _cli(tree, argv, run.parent)
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
  digest = hashlib.sha256(f"{proc.returncode}\n{proc.stdout}\n{proc.stderr}".encode())
  for path in sorted(out.iterdir()):
    digest.update(path.read_bytes())
  return cpu, digest.hexdigest()[:12]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--run", required=True, help="quick run dir (made when missing)")
  parser.add_argument("--tree", default=str(ROOT), help="checkout whose lr2vq_jax runs")
  parser.add_argument("--repeat", type=int, default=2)
  parser.add_argument("--only", default=None, help="comma-separated command names")
  args = parser.parse_args()
  tree, run = Path(args.tree).resolve(), Path(args.run).resolve()
  ensure_run(tree, run)
  out = run / "bench_out"
  rows, total = [], 0.0
  for name, argv in commands(run, out).items():
    if args.only and name not in args.only.split(","):
      continue
    results = []
    for _ in range(args.repeat):
      shutil.rmtree(out, ignore_errors=True)
      out.mkdir()
      results.append(measure(tree, run, argv, out))
    cpu = min(c for c, _ in results)
    hashes = sorted({h for _, h in results})
    rows.append((name, cpu, ",".join(hashes)))
    total += cpu
  print(f"tree {tree}\n| command | best CPU s | output hash |\n|---|---|---|")
  for name, cpu, digest in rows:
    print(f"| {name} | {cpu:.2f} | {digest} |")
  print(f"RESULT total_cpu_s={total:.2f} commands={len(rows)} repeat={args.repeat}")


if __name__ == "__main__":
  main()
