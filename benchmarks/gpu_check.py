"""DKM memory at ResNet-50 scale: XLA temp bytes and time of forward + gradient, bounded vs naive.

The Python half of benchmarks/gpu_check.sh (meant for one H200; runs on CPU with --tiny). The
bounded `lq.dkm` (chunks of rows in `lax.scan`, recomputed in the backward pass) is compiled for
each --chunks value; the naive reference only where its estimated temporaries,
(3·iters + 4)·n·k·4 bytes, stay under --naive-max-gib. Temp bytes are XLA's compiled
`memory_analysis()`; peak is the device allocator's `peak_bytes_in_use` (GPU only).

  python benchmarks/gpu_check.py                       # n = 3M, d̃ = 8, k = 256, 3 iterations
  python benchmarks/gpu_check.py --tiny                # n = 20k: a CPU check of the logic
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from timing import timed_runs  # noqa: E402

from lr2vq_jax.core.dkm import dkm, dkm_naive  # noqa: E402

GIB = 2**30


def naive_estimate_gib(n: int, k: int, iters: int) -> float:
  return (3 * iters + 4) * n * k * 4 / GIB


def peak_gib() -> float | None:
  stats = jax.devices()[0].memory_stats() or {}
  peak = stats.get("peak_bytes_in_use")
  return None if peak is None else peak / GIB


def measure(variant: str, z, c, *, iters: int, chunk: int, repeats: int) -> dict:
  """Compile forward + gradient (w.r.t. z and centroids) of sum(z_soft²); time `repeats` runs."""

  def loss(z, c):
    if variant == "naive":
      z_soft, _ = dkm_naive(z, c, tau=0.5, iters=iters)
    else:
      z_soft, _ = dkm(z, c, tau=0.5, iters=iters, chunk_size=chunk)
    return jnp.sum(z_soft.astype(jnp.float32) ** 2)

  t0 = time.perf_counter()
  compiled = jax.jit(jax.value_and_grad(loss, argnums=(0, 1))).lower(z, c).compile()
  compile_s = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  temp = getattr(mem, "temp_size_in_bytes", None) if mem is not None else None
  times = timed_runs(compiled, z, c, repeats=repeats)
  return {
    "variant": variant,
    "chunk": chunk if variant != "naive" else "-",
    "temp_gib": None if temp is None else temp / GIB,
    "time_s": float(np.median(times)),
    "compile_s": compile_s,
    "peak_gib": peak_gib(),
  }


def fmt(x, spec: str) -> str:
  return "n/a" if x is None else format(x, spec)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--n", type=int, default=3_000_000, help="rows of Z (ResNet-50 large ≈ 3M)")
  ap.add_argument("--d", type=int, default=8)
  ap.add_argument("--k", type=int, default=256)
  ap.add_argument("--iters", type=int, default=3, help="DKM iterations (QuantConfig default)")
  ap.add_argument("--chunks", default="4096,65536")
  ap.add_argument("--naive-max-gib", type=float, default=100.0)
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--tiny", action="store_true", help="n = 20,000: CPU check of this script")
  args = ap.parse_args()
  if args.tiny:
    args.n, args.chunks, args.repeats = 20_000, "4096", 2
  dev = jax.devices()[0]
  print(
    f"jax {jax.__version__}, device {dev.device_kind} ({dev.platform}); n={args.n:,} "
    f"d={args.d} k={args.k} iters={args.iters}",
    flush=True,
  )
  kz, kc = jax.random.split(jax.random.key(0))
  z = jax.random.normal(kz, (args.n, args.d), jnp.float32)
  c = z[jax.random.choice(kc, args.n, (args.k,), replace=False)]
  rows = []
  for chunk in [int(x) for x in args.chunks.split(",")]:
    rows.append(measure("bounded", z, c, iters=args.iters, chunk=chunk, repeats=args.repeats))
    print(f"  {rows[-1]}", flush=True)
  est = naive_estimate_gib(args.n, args.k, args.iters)
  if est <= args.naive_max_gib:
    try:
      rows.append(measure("naive", z, c, iters=args.iters, chunk=0, repeats=args.repeats))
      print(f"  {rows[-1]}", flush=True)
    except Exception as e:  # noqa: BLE001  (out of memory on a smaller card: report, go on)
      print(f"  naive failed: {type(e).__name__}: {str(e)[:200]}", flush=True)
  else:
    print(f"  naive skipped: estimated {est:.1f} GiB > --naive-max-gib {args.naive_max_gib}")

  print()
  print(
    f"DKM forward + grad, n={args.n:,}, d̃={args.d}, k={args.k}, iters={args.iters}, fp32 "
    f"(naive estimate {est:.1f} GiB)"
  )
  print("| variant | chunk | XLA temp GiB | device peak GiB | time ms | compile s |")
  print("|---|---|---|---|---|---|")
  for r in rows:
    print(
      f"| {r['variant']} | {r['chunk']} | {fmt(r['temp_gib'], '.3f')} "
      f"| {fmt(r['peak_gib'], '.2f')} | {r['time_s'] * 1e3:.1f} | {r['compile_s']:.1f} |"
    )
  bounded = min((r for r in rows if r["variant"] == "bounded"), key=lambda r: r["time_s"])
  naive = next((r for r in rows if r["variant"] == "naive"), None)
  mem_ratio = (
    naive["temp_gib"] / bounded["temp_gib"]
    if naive and naive["temp_gib"] and bounded["temp_gib"]
    else None
  )
  print(
    f"RESULT dkm_bounded_temp_gib={fmt(bounded['temp_gib'], '.3f')} "
    f"dkm_bounded_ms={bounded['time_s'] * 1e3:.1f} "
    f"dkm_naive_temp_gib={fmt(naive and naive['temp_gib'], '.3f')} "
    f"dkm_naive_ms={fmt(naive and naive['time_s'] * 1e3, '.1f')} "
    f"mem_ratio={fmt(mem_ratio, '.1f')}"
  )


if __name__ == "__main__":
  main()
