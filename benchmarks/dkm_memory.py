"""Naive vs memory-bounded DKM: forward + gradient time and peak memory (k = 256, 5 iterations).

Each (variant, n, d) case runs in a fresh subprocess so the process max RSS is per case. Memory is
XLA's compiled temp bytes and the max RSS. Usage:
  python benchmarks/dkm_memory.py [--quick] [--skip-naive-above GIB] [--chunk-size N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

K = 256
ITERS = 5
TAU = 0.5
GIB = 2**30
CASES = [(125_000, 4), (125_000, 8), (250_000, 4), (250_000, 8), (1_000_000, 4), (1_000_000, 8)]


def naive_estimate_bytes(n: int) -> int:
  """Measured rule of thumb for naive DKM temporaries: (3 * iters + 4) * n * k * 4 bytes."""
  return (3 * ITERS + 4) * n * K * 4


def run_case(variant: str, n: int, d: int, chunk_size: int, repeats: int) -> dict:
  """Compile and time one case in this process (called in a child); returns the measurements."""
  import resource
  import time

  import jax
  import jax.numpy as jnp

  from lr2vq_jax.core.dkm import dkm, dkm_naive

  kz, kc = jax.random.split(jax.random.key(0))
  z = jax.random.normal(kz, (n, d), jnp.float32)
  c = z[jax.random.choice(kc, n, (K,), replace=False)]
  fn = dkm_naive if variant == "naive" else dkm
  kw = {} if variant == "naive" else {"chunk_size": chunk_size}

  def loss(z):
    z_soft, _ = fn(z, c, tau=TAU, iters=ITERS, **kw)
    return jnp.sum(z_soft**2)

  compiled = jax.jit(jax.value_and_grad(loss)).lower(z).compile()
  temp = compiled.memory_analysis().temp_size_in_bytes
  jax.block_until_ready(compiled(z))  # warm-up
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(z))
    times.append(time.perf_counter() - t0)
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
  return {"temp_gib": temp / GIB, "time_s": min(times), "rss_gib": rss / GIB}


def spawn(variant: str, n: int, d: int, chunk_size: int, repeats: int) -> dict:
  cmd = [
    sys.executable,
    __file__,
    "--child",
    variant,
    str(n),
    str(d),
    str(chunk_size),
    str(repeats),
  ]
  root = str(Path(__file__).resolve().parents[1])
  env = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
  }
  proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
  lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
  if proc.returncode != 0 or not lines:
    raise RuntimeError(f"case {variant} n={n} d={d} failed:\n{proc.stderr[-3000:]}")
  return json.loads(lines[-1])


def fmt(value: float | None, spec: str) -> str:
  return "skipped" if value is None else format(value, spec)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="only n=250k, d=8")
  parser.add_argument(
    "--skip-naive-above",
    type=float,
    default=16.0,
    metavar="GIB",
    help="skip naive cases whose estimated memory (3*iters+4)*n*k*4 bytes exceeds GIB (16)",
  )
  parser.add_argument("--chunk-size", type=int, default=4096, help="bounded DKM chunk (4096)")
  parser.add_argument("--repeats", type=int, default=3, help="timed runs per case, best kept")
  parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    variant, n, d, chunk, repeats = args.child
    print(json.dumps(run_case(variant, int(n), int(d), int(chunk), int(repeats))), flush=True)
    return

  cases = [(250_000, 8)] if args.quick else CASES
  rows = []
  for n, d in cases:
    bounded = spawn("bounded", n, d, args.chunk_size, args.repeats)
    naive = None
    if naive_estimate_bytes(n) <= args.skip_naive_above * GIB:
      naive = spawn("naive", n, d, args.chunk_size, args.repeats)
    row = {
      "n": n,
      "d": d,
      "naive_gib": naive and naive["temp_gib"],
      "bounded_gib": bounded["temp_gib"],
      "naive_s": naive and naive["time_s"],
      "bounded_s": bounded["time_s"],
      "naive_rss_gib": naive and naive["rss_gib"],
      "bounded_rss_gib": bounded["rss_gib"],
    }
    rows.append(row)
    print(
      f"n={n} d={d} naive_gib={fmt(row['naive_gib'], '.3f')} "
      f"bounded_gib={row['bounded_gib']:.3f} naive_s={fmt(row['naive_s'], '.2f')} "
      f"bounded_s={row['bounded_s']:.2f} naive_rss_gib={fmt(row['naive_rss_gib'], '.3f')} "
      f"bounded_rss_gib={row['bounded_rss_gib']:.3f}",
      flush=True,
    )

  print()
  print(f"k={K}, iters={ITERS}, chunk_size={args.chunk_size}, forward+grad of sum(z_soft**2)")
  print()
  print(
    "| n | d | naive temp GiB | bounded temp GiB | mem ratio | naive s | bounded s | time ratio "
    "| naive RSS GiB | bounded RSS GiB |"
  )
  print("|---|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    mem_ratio = r["naive_gib"] / r["bounded_gib"] if r["naive_gib"] else None
    time_ratio = r["bounded_s"] / r["naive_s"] if r["naive_s"] else None
    print(
      f"| {r['n']:,} | {r['d']} | {fmt(r['naive_gib'], '.3f')} | {r['bounded_gib']:.3f} "
      f"| {fmt(mem_ratio, '.1f')} | {fmt(r['naive_s'], '.2f')} | {r['bounded_s']:.2f} "
      f"| {fmt(time_ratio, '.2f')} | {fmt(r['naive_rss_gib'], '.3f')} "
      f"| {r['bounded_rss_gib']:.3f} |"
    )
  ref = next((r for r in rows if r["n"] == 250_000 and r["d"] == 8 and r["naive_gib"]), None)
  if ref is not None:
    print(
      f"RESULT mem_ratio_250k_d8={ref['naive_gib'] / ref['bounded_gib']:.2f} "
      f"time_ratio_250k_d8={ref['bounded_s'] / ref['naive_s']:.2f}"
    )
  else:
    print("RESULT mem_ratio_250k_d8=skipped time_ratio_250k_d8=skipped")


if __name__ == "__main__":
  main()
