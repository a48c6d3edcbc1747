"""How much Lloyd distance work exact bounds could skip: Hamerly vs Yinyang, offline in float64.

From lq's own seeds (`kmeans.seed`), plain Lloyd in float64 numpy; each step also tracks, per row,
  hamerly          an upper bound to its centroid and one lower bound to all others (less the
                   largest centroid drift): the share of rows that fail it (after tightening the
                   upper bound) and need all k distances;
  yinyang global   lower bounds per group of centroids (`--groups` spatial groups: 5 Lloyd steps on
                   the seeds, as Yinyang k-means does), each less its group's largest drift: the
                   share of rows whose smallest group bound fails (all k distances for them);
  yinyang groups   the share of (row, group) pairs that fail: the distance work left when only the
                   failing groups are recomputed.
Every row that passes is checked against the exact assignment. No timing: shares of work only.

  python benchmarks/kmeans_bounds.py [--n 32000] [--d 4] [--k 512] [--groups 16] [--iters 25]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from kmeans_vs_faiss import gaussian_mixture  # noqa: E402

from lr2vq_jax.core import seeding  # noqa: E402


def distances(x: np.ndarray, c: np.ndarray) -> np.ndarray:
  sq = (x * x).sum(1)[:, None] - 2 * x @ c.T + (c * c).sum(1)[None]
  return np.sqrt(np.maximum(sq, 0.0))


def spatial_groups(c: np.ndarray, groups: int, seed: int = 0) -> np.ndarray:
  """Group index per centroid: 5 Lloyd steps on the centroids themselves."""
  gc = c[np.random.default_rng(seed).choice(len(c), groups, replace=False)]
  for _ in range(5):
    gi = distances(c, gc).argmin(1)
    gc = np.stack([c[gi == g].mean(0) if (gi == g).any() else gc[g] for g in range(groups)])
  return distances(c, gc).argmin(1)


def exact_bounds(x, c, order, starts, chunk=8192):
  """(codes, distance to own, second distance, per-group minimum excluding own) of every row."""
  n = len(x)
  codes, own, second = np.empty(n, int), np.empty(n), np.empty(n)
  group_min = np.empty((n, len(starts)))
  for s in range(0, n, chunk):
    dist = distances(x[s : s + chunk], c)
    rows = np.arange(len(dist))
    a = dist.argmin(1)
    codes[s : s + chunk], own[s : s + chunk] = a, dist[rows, a]
    dist[rows, a] = np.inf
    second[s : s + chunk] = dist.min(1)
    group_min[s : s + chunk] = np.minimum.reduceat(dist[:, order], starts, axis=1)
  return codes, own, second, group_min


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--n", type=int, default=32_000)
  ap.add_argument("--d", type=int, default=4)
  ap.add_argument("--k", type=int, default=512)
  ap.add_argument("--groups", type=int, default=16)
  ap.add_argument("--iters", type=int, default=25)
  args = ap.parse_args()
  x = gaussian_mixture(args.n, args.d, 64, seed=args.n + args.d).astype(np.float64)
  x -= x.mean(0)
  c = np.asarray(seeding.seed(jax.device_put(x.astype(np.float32)), args.k, key=jax.random.key(0)))
  c = c.astype(np.float64)
  gi = spatial_groups(c, args.groups)
  order = np.argsort(gi, kind="stable")
  starts = np.searchsorted(gi[order], np.arange(args.groups))
  a, u, low, gmin = exact_bounds(x, c, order, starts)
  ham = dict(a=a.copy(), u=u.copy(), low=low.copy())
  yy = dict(a=a.copy(), u=u.copy(), low=gmin.copy())
  print(
    f"n={args.n} d={args.d} k={args.k} groups={args.groups} (spatial, sizes "
    f"{np.bincount(gi).min()}-{np.bincount(gi).max()})"
  )
  print("| step | hamerly: rows recomputed | yinyang global: rows | yinyang groups: work |")
  print("|---|---|---|---|")
  shares = []
  for t in range(1, args.iters + 1):
    counts = np.bincount(a, minlength=args.k)
    sums = np.zeros_like(c)
    np.add.at(sums, a, x)
    new = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], c)
    drift = np.linalg.norm(new - c, axis=1)
    c = new
    group_drift = np.array(
      [drift[gi == g].max() if (gi == g).any() else 0.0 for g in range(args.groups)]
    )
    a, u, low, gmin = exact_bounds(x, c, order, starts)
    # Hamerly
    ham["u"] += drift[ham["a"]]
    ham["low"] -= drift.max()
    tight = np.linalg.norm(x - c[ham["a"]], axis=1)
    fail_h = np.minimum(ham["u"], tight) > ham["low"]
    assert (ham["a"][~fail_h] == a[~fail_h]).all()
    ham = dict(
      a=np.where(fail_h, a, ham["a"]),
      u=np.where(fail_h, u, tight),
      low=np.where(fail_h, low, ham["low"]),
    )
    # Yinyang
    yy["u"] += drift[yy["a"]]
    yy["low"] -= group_drift[None]
    tight = np.linalg.norm(x - c[yy["a"]], axis=1)
    fail_y = np.minimum(yy["u"], tight) > yy["low"].min(1)
    fail_g = (tight[:, None] > yy["low"]) & fail_y[:, None]
    assert (yy["a"][~fail_y] == a[~fail_y]).all()
    yy = dict(
      a=np.where(fail_y, a, yy["a"]),
      u=np.where(fail_y, u, tight),
      low=np.where(fail_y[:, None], gmin, yy["low"]),
    )
    shares.append((fail_h.mean(), fail_y.mean(), fail_g.mean()))
    print(f"| {t} | {shares[-1][0]:.3f} | {shares[-1][1]:.3f} | {shares[-1][2]:.3f} |", flush=True)
  mean = np.mean(shares, axis=0)
  print(
    f"RESULT hamerly_rows_mean={mean[0]:.3f} yinyang_global_rows_mean={mean[1]:.3f} "
    f"yinyang_group_work_mean={mean[2]:.3f}"
  )


if __name__ == "__main__":
  main()
