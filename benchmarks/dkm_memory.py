"""Naive vs memory-bounded DKM: forward + gradient time and peak memory (k = 256, 5 iterations).

Each (variant, n, d) case runs in a fresh subprocess so the process max RSS is per case. Memory is
XLA's compiled temp bytes and the max RSS. Usage:
  python benchmarks/dkm_memory.py [--quick] [--skip-naive-above GIB] [--chunk-size N]
  python benchmarks/dkm_memory.py --sharded [--chunk-size N]   # rows of Z over 1, 2, 4, 8 devices

`--sharded` measures the row-sharded DKM of training (n = 250k, d̃ = 8): z sharded over a `data`
mesh of D simulated CPU devices (one subprocess per D), compiled per-device temp bytes of forward +
grad, split into a part linear in n and the rest (two points: n/2 and n).
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
SHARDED_N, SHARDED_D, SHARDED_DEVICES = 250_000, 8, (1, 2, 4, 8)
MIB = 2**20


def naive_estimate_bytes(n: int) -> int:
  """Measured rule of thumb for naive DKM temporaries: (3 * iters + 4) * n * k * 4 bytes."""
  return (3 * ITERS + 4) * n * K * 4


def run_case(variant: str, n: int, d: int, chunk_size: int, repeats: int) -> dict:
  """Compile and time one case in this process (called in a child); returns the measurements."""
  import resource

  import jax
  import jax.numpy as jnp
  from timing import timed_runs

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
  times = timed_runs(compiled, z, repeats=repeats)
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
  return {"temp_gib": temp / GIB, "time_s": min(times), "rss_gib": rss / GIB}


def run_sharded_case(n: int, d: int, chunk_size: int, repeats: int) -> dict:
  """Per-device temp bytes and time of sharded DKM forward + grad on all local devices (a child)."""

  import jax
  import jax.numpy as jnp
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P
  from timing import timed_runs

  from lr2vq_jax.core.dkm import dkm
  from lr2vq_jax.train.partitioning import DATA, make_mesh

  mesh = make_mesh()
  rows = NamedSharding(mesh, P(DATA, None))
  devices = mesh.shape[DATA]

  def compiled_for(n_rows: int):
    kz, kc = jax.random.split(jax.random.key(0))
    z = jax.device_put(jax.random.normal(kz, (n_rows, d), jnp.float32), rows)
    c = jax.random.normal(kc, (K, d), jnp.float32)

    def loss(z):
      z_soft, _ = dkm(z, c, tau=TAU, iters=ITERS, chunk_size=chunk_size, axis_name=DATA)
      return jnp.sum(z_soft**2)

    with jax.set_mesh(mesh):
      fn = jax.jit(jax.value_and_grad(loss), in_shardings=(rows,))
      return fn.lower(z).compile(), z

  compiled, z = compiled_for(n)
  temp = compiled.memory_analysis().temp_size_in_bytes
  half = compiled_for(n // 2)[0].memory_analysis().temp_size_in_bytes
  fixed = temp - 2 * (temp - half)  # temp = fixed + rows term linear in n (fit through n/2, n)
  hlo = compiled.as_text()
  times = timed_runs(compiled, z, repeats=repeats)
  return {
    "devices": devices,
    "rows_per_device": -(-n // devices),
    "temp_mib": temp / MIB,
    "fixed_mib": fixed / MIB,
    "all_reduces": hlo.count("all-reduce("),
    "all_gathers": hlo.count("all-gather("),
    "time_s": min(times),
  }


def spawn_sharded(devices: int, n: int, d: int, chunk_size: int, repeats: int) -> dict:
  """One sharded case in a child with `devices` simulated CPU devices."""
  cmd = [sys.executable, __file__, "--sharded-child", str(n), str(d), str(chunk_size), str(repeats)]
  root = str(Path(__file__).resolve().parents[1])
  flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"
  env = {
    **os.environ,
    "XLA_FLAGS": flags.strip(),
    "JAX_PLATFORMS": "cpu",
    "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
  }
  proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
  lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
  if proc.returncode != 0 or not lines:
    raise RuntimeError(f"sharded case devices={devices} failed:\n{proc.stderr[-3000:]}")
  return json.loads(lines[-1])


def sharded_main(chunk_size: int, repeats: int) -> None:
  """The `--sharded` table: per-device DKM memory on 1, 2, 4 and 8 simulated devices."""
  rows = []
  for devices in SHARDED_DEVICES:
    r = spawn_sharded(devices, SHARDED_N, SHARDED_D, chunk_size, repeats)
    rows.append(r)
    print(json.dumps(r), flush=True)
  base = rows[0]
  print()
  print(
    f"sharded DKM: n={SHARDED_N:,}, d={SHARDED_D}, k={K}, iters={ITERS}, chunk_size={chunk_size}, "
    "forward+grad of sum(z_soft**2), z rows on a `data` mesh (jax.shard_map + psum)"
  )
  print()
  print(
    "| devices | rows/device | temp MiB/device | n-independent MiB | n-dependent MiB "
    "| mem(1)/mem(D) | n-dep. mem(1)/mem(D) | all-reduces | fwd+grad s |"
  )
  print("|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    dep, dep1 = r["temp_mib"] - r["fixed_mib"], base["temp_mib"] - base["fixed_mib"]
    print(
      f"| {r['devices']} | {r['rows_per_device']:,} | {r['temp_mib']:.1f} | {r['fixed_mib']:.1f} "
      f"| {dep:.1f} | {base['temp_mib'] / r['temp_mib']:.2f} | {dep1 / max(dep, 1e-9):.2f} "
      f"| {r['all_reduces']} | {r['time_s']:.2f} |"
    )
  last = next(r for r in rows if r["devices"] == SHARDED_DEVICES[-1])
  print(f"RESULT sharded_mem_ratio_8={base['temp_mib'] / last['temp_mib']:.2f}")


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


def measure(n: int, d: int, chunk_size: int, repeats: int, skip_naive_above: float) -> dict:
  """One (n, d) case: bounded DKM always, naive DKM unless its estimate exceeds the GiB limit."""
  bounded = spawn("bounded", n, d, chunk_size, repeats)
  naive = None
  if naive_estimate_bytes(n) <= skip_naive_above * GIB:
    naive = spawn("naive", n, d, chunk_size, repeats)
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
  print(
    f"n={n} d={d} naive_gib={fmt(row['naive_gib'], '.3f')} "
    f"bounded_gib={row['bounded_gib']:.3f} naive_s={fmt(row['naive_s'], '.2f')} "
    f"bounded_s={row['bounded_s']:.2f} naive_rss_gib={fmt(row['naive_rss_gib'], '.3f')} "
    f"bounded_rss_gib={row['bounded_rss_gib']:.3f}",
    flush=True,
  )
  return row


def report(rows: list[dict], chunk_size: int) -> None:
  """The table of every case and the RESULT line (ratios at n = 250k, d = 8)."""
  print()
  print(f"k={K}, iters={ITERS}, chunk_size={chunk_size}, forward+grad of sum(z_soft**2)")
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
  parser.add_argument(
    "--sharded", action="store_true", help="row-sharded DKM memory on 1, 2, 4, 8 CPU devices"
  )
  parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
  parser.add_argument("--sharded-child", nargs=4, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.sharded_child:
    n, d, chunk, repeats = (int(v) for v in args.sharded_child)
    print(json.dumps(run_sharded_case(n, d, chunk, repeats)), flush=True)
    return
  if args.sharded:
    sharded_main(args.chunk_size, args.repeats)
    return
  if args.child:
    variant, n, d, chunk, repeats = args.child
    print(json.dumps(run_case(variant, int(n), int(d), int(chunk), int(repeats))), flush=True)
    return

  cases = [(250_000, 8)] if args.quick else CASES
  rows = [measure(n, d, args.chunk_size, args.repeats, args.skip_naive_above) for n, d in cases]
  report(rows, args.chunk_size)


if __name__ == "__main__":
  main()
