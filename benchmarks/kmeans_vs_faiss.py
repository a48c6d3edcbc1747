"""lq.kmeans vs faiss.Kmeans: final SSE and wall time, same k and number of Lloyd iterations.

Two protocols per case:
  same init  both start from the same k-means++ centroids (lq.core.kmeans.kmeans_plusplus, not
             timed), so only the Lloyd iterations are compared: lq.kmeans(init=...) vs
             faiss.Kmeans.train(init_centroids=...).
  own init   each with its own default: lq.kmeans (batched D^2 seeding, timed) vs faiss.Kmeans
             (k random points, nredo=1).
faiss runs without subsampling (max_points_per_centroid = n). SSE is recomputed for both in float64
from the returned centroids (exact nearest centroid). lq times exclude compilation; all times are the
median of --repeats runs. Data: subvectors of the trained digits CNN (runs/demo/float if present,
else a short float training run), the low-rank Z of runs/demo/lowrank if present, and Gaussian
mixtures from 10k x 9 (k = 16) to 1M x 8 (k = 256) and 200k x 8 (k = 4096), and heavy-tailed
Student-t rows standing in for large trained layers.

  python benchmarks/kmeans_vs_faiss.py [--iters 25] [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import faiss  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import logging  # noqa: E402

import lr2vq_jax as lq  # noqa: E402
from lr2vq_jax.core.kmeans import kmeans_plusplus  # noqa: E402


def exact_sse(x: np.ndarray, c: np.ndarray, chunk: int = 32768) -> float:
  """Sum of squared distances to the nearest centroid, in float64 (argmin, then exact differences)."""
  x64, c64 = x.astype(np.float64), c.astype(np.float64)
  total = 0.0
  for i in range(0, len(x64), chunk):
    xb = x64[i : i + chunk]
    idx = ((c64**2).sum(1)[None, :] - 2 * xb @ c64.T).argmin(1)
    total += float(((xb - c64[idx]) ** 2).sum())
  return total


def median_time(fn, repeats: int):
  out, times = None, []
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = fn()
    times.append(time.perf_counter() - t0)
  return out, float(np.median(times))


def run_lq(x, k, iters, key, init, repeats):
  xj = jax.device_put(x)

  def go():
    res = lq.kmeans(xj, k, key=key, iters=iters, init=init)
    return np.asarray(jax.block_until_ready(res.centroids))

  go()  # compile
  return median_time(go, repeats)


def run_faiss(x, k, iters, seed, init, repeats):
  def go():
    km = faiss.Kmeans(
      x.shape[1], k, niter=iters, seed=seed, max_points_per_centroid=len(x), verbose=False
    )
    km.train(x, init_centroids=init)
    return km.centroids.copy()

  return median_time(go, repeats)


def gaussian_mixture(n: int, d: int, components: int, seed: int) -> np.ndarray:
  rng = np.random.default_rng(seed)
  centers = rng.normal(size=(components, d))
  weights = rng.dirichlet(np.ones(components))
  labels = rng.choice(components, size=n, p=weights)
  scales = rng.uniform(0.1, 0.5, size=components)
  return (centers[labels] + rng.normal(size=(n, d)) * scales[labels, None]).astype(np.float32)


def trained_weights() -> tuple[dict, dict | None, str]:
  """(float params, lowrank params or None, source) of the digits CNN."""
  from lr2vq_jax.train.config import load_config
  from lr2vq_jax.train.trainer import build_stage, restore_final, run_stage

  config = load_config(str(ROOT / "configs" / "default.py"))
  demo = ROOT / "runs" / "demo"
  try:
    params = restore_final(build_stage(config, "float", str(demo)), str(demo / "float")).params
    source = "runs/demo/float"
  except (FileNotFoundError, ValueError):
    config.float.num_steps = 300
    workdir = tempfile.mkdtemp(prefix="kmeans_bench_")
    params = run_stage(config, "float", workdir)[0].params
    source = f"{workdir} (300-step float run)"
  try:
    low = restore_final(build_stage(config, "lowrank", str(demo)), str(demo / "lowrank")).params
  except (FileNotFoundError, ValueError):
    low = None
  return jax.device_get(params), jax.device_get(low) if low is not None else None, source


def cases(quick: bool) -> list[tuple[str, np.ndarray, int]]:
  params, low, source = trained_weights()
  print(f"trained weights: {source}")
  out = []
  for layer, m, k in (("conv2", 9, 16), ("conv3", 9, 16), ("conv3", 18, 16), ("conv3", 9, 256)):
    x = np.asarray(lq.to_subvectors(params[layer]["kernel"], m))
    out.append((f"digits {layer} m={m}", x, k))
  if low is not None:
    z = np.asarray(low["conv3"]["z"], np.float32)
    out.append((f"digits conv3 low-rank Z d={z.shape[1]}", z, 16))
  gm = (
    [(10_000, 9, 16), (100_000, 4, 256), (50_000, 8, 2048)]
    if quick
    else [
      (10_000, 9, 16),
      (100_000, 9, 256),
      (262_144, 8, 256),
      (1_000_000, 8, 256),
      (128_000, 4, 2048),  # the ResNet-18 fc layer's Z (n, d̃ = 4) at k = 2048
      (200_000, 8, 4096),
    ]
  )
  for n, d, k in gm:
    out.append((f"gauss mix n={n} d={d}", gaussian_mixture(n, d, 64, seed=n + d), k))
  # Trained weights are heavy-tailed: Student-t rows (3 dof) stand in for large trained layers.
  for n, d, k in [(262_144, 9, 256)] if not quick else [(50_000, 9, 256)]:
    x = np.random.default_rng(n).standard_t(3, size=(n, d)).astype(np.float32) * 0.05
    out.append((f"student-t(3) n={n} d={d}", x, k))
  return out


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--iters", type=int, default=25)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--quick", action="store_true", help="smaller Gaussian mixtures")
  args = ap.parse_args()
  logging.set_verbosity(logging.WARNING)
  print(
    f"jax {jax.__version__} ({jax.devices()[0].platform}), faiss {faiss.__version__}, "
    f"{os.cpu_count()} CPUs, faiss omp threads {faiss.omp_get_max_threads()}, "
    f"iters={args.iters}"
  )
  rows = []
  for name, x, k in cases(args.quick):
    x = np.ascontiguousarray(x, np.float32)
    k = min(k, lq.clamp_k(k, len(x)))
    key = jax.random.key(0)
    init = np.asarray(kmeans_plusplus(x, k, key=key))
    c_lq, t_lq = run_lq(x, k, args.iters, key, init, args.repeats)
    c_fa, t_fa = run_faiss(x, k, args.iters, 0, init, args.repeats)
    c_lq2, t_lq2 = run_lq(x, k, args.iters, key, None, args.repeats)
    c_fa2, t_fa2 = run_faiss(x, k, args.iters, 0, None, args.repeats)
    sse = [exact_sse(x, c) for c in (c_lq, c_fa, c_lq2, c_fa2)]
    rows.append(dict(name=name, n=len(x), d=x.shape[1], k=k, sse=sse, t=[t_lq, t_fa, t_lq2, t_fa2]))
    r = rows[-1]
    print(
      f"  {name}: same-init SSE ratio {sse[0] / sse[1]:.4f} time {t_lq:.3f}/{t_fa:.3f}s; "
      f"own-init SSE ratio {sse[2] / sse[3]:.4f} time {t_lq2:.3f}/{t_fa2:.3f}s",
      flush=True,
    )

  print()
  print(
    "| data | n | d | k | same init: SSE lq/faiss | time lq s | time faiss s | ratio "
    "| own init: SSE lq/faiss | time lq s | time faiss s | ratio |"
  )
  print("|---|---|---|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    s, t = r["sse"], r["t"]
    print(
      f"| {r['name']} | {r['n']:,} | {r['d']} | {r['k']} | {s[0] / s[1]:.4f} | {t[0]:.3f} "
      f"| {t[1]:.3f} | {t[0] / t[1]:.2f} | {s[2] / s[3]:.4f} | {t[2]:.3f} | {t[3]:.3f} "
      f"| {t[2] / t[3]:.2f} |"
    )

  def geo(vals):
    return float(np.exp(np.mean(np.log(vals))))

  same_sse = max(r["sse"][0] / r["sse"][1] for r in rows)
  same_t = geo([r["t"][0] / r["t"][1] for r in rows])
  own_sse = max(r["sse"][2] / r["sse"][3] for r in rows)
  own_t = geo([r["t"][2] / r["t"][3] for r in rows])
  big = [r for r in rows if r["n"] >= 100_000]
  big_t = geo([r["t"][0] / r["t"][1] for r in big]) if big else float("nan")
  own_worst_t = max(r["t"][2] / r["t"][3] for r in big) if big else float("nan")
  print("\nsse_ratio: worst case over the rows (same init); time_ratio: geometric mean (same init)")
  print("own init, n >= 100k: worst time ratio (the goal is <= 2 at sse_ratio_own_init <= 1.01)")
  print(
    f"RESULT sse_ratio={same_sse:.4f} time_ratio={same_t:.2f} time_ratio_n100k+={big_t:.2f} "
    f"sse_ratio_own_init={own_sse:.4f} time_ratio_own_init={own_t:.2f} "
    f"worst_time_ratio_own_init_n100k+={own_worst_t:.2f}"
  )


if __name__ == "__main__":
  main()
