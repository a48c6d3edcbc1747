"""Per-layer candidates (k, m, d̃) with their exact bytes and clustered-SVD weight error.

A candidate compresses one kernel's subvectors X (n, m) (PQF order) with k centroids (a power of
two the PQF clamp leaves as is) in the first d̃ coordinates of X's right-singular basis: the weight
error is ‖X − C[a]·P‖² = Σ_{i>d̃} σ_i² + ‖Z_d̃ − C[a]‖² (see `lr2vq_jax.core.dimension`), measured
by k-means. The "float" candidate keeps the kernel at fp32 (error 0). Bytes follow
`core.accounting` exactly: n·ceil(log2 k) code bits / 8 plus the fp16 table(s).

k-means runs in numpy on at most `max_rows` sampled subvectors (SSE scaled to all n): candidates
differ in (rows, k, m), so a jitted k-means would compile once per candidate. k above an eighth of
the sample is not measured but extrapolated by the high-resolution law (error ∝ k^(−2/d̃)).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from lr2vq_jax.core import codec, subvectors
from lr2vq_jax.core.accounting import table_bytes

DEFAULT_MS = (1, 2, 3, 4, 6, 8, 9, 12, 16, 18, 24, 32, 36)
DEFAULT_KS = tuple(2**b for b in range(1, 12))  # 2 .. 2048


@dataclasses.dataclass(frozen=True)
class Candidate:
  """One way to store a layer: k = None means fp32 (d̃ and m unused)."""

  k: int | None
  m: int
  d: int
  bytes: float  # exact: code bits / 8 + fp16 table, or 4 · params
  error: float  # ‖W − Ŵ‖_F² (0 for fp32)

  @property
  def is_float(self) -> bool:
    return self.k is None


def d_for(m: int, d: int | float | None) -> int:
  """d̃ of a candidate with subvector length m: m (None), min(d, m) (int) or round(d·m) ≥ 1."""
  if d is None:
    return m
  if isinstance(d, float):
    return max(1, min(m, round(d * m)))
  return max(1, min(int(d), m))


def _kmeans_sse(z: np.ndarray, k: int, rng: np.random.Generator, iters: int) -> float:
  """SSE of Lloyd's k-means (k-means++ seeding) on rows z (float32)."""
  n = len(z)
  if k >= n:
    return 0.0
  c = np.empty((k, z.shape[1]), np.float32)
  c[0] = z[rng.integers(n)]
  d2 = np.sum((z - c[0]) ** 2, axis=1)
  for i in range(1, k):
    total = float(d2.sum())
    idx = rng.choice(n, p=d2 / total) if total > 0 else rng.integers(n)
    c[i] = z[idx]
    d2 = np.minimum(d2, np.sum((z - c[i]) ** 2, axis=1))
  zz = np.sum(z * z, axis=1)

  def dist(c):  # (n, k) squared distances, ||z||^2 - 2 z.c + ||c||^2
    return zz[:, None] - 2.0 * (z @ c.T) + np.sum(c * c, axis=1)[None, :]

  for _ in range(iters):
    a = np.argmin(dist(c), axis=1)
    counts = np.bincount(a, minlength=k).astype(np.float32)
    sums = np.zeros_like(c)
    np.add.at(sums, a, z)
    keep = counts > 0
    c[keep] = sums[keep] / counts[keep, None]
  final = dist(c)  # the SSE after `iters` steps
  return float(np.maximum(final[np.arange(n), np.argmin(final, axis=1)], 0.0).sum())


def layer_errors(
  kernel: np.ndarray,
  m: int,
  d: int,
  ks: Sequence[int],
  *,
  rng: np.random.Generator,
  max_rows: int,
  iters: int,
) -> dict[int, float]:
  """‖X − C[a]·P‖² at (k, m, d̃) for each k, from one SVD and one row sample."""
  x = np.asarray(subvectors.to_subvectors(np.asarray(kernel, np.float32), m), np.float64)
  n = len(x)
  evals, evecs = np.linalg.eigh(x.T @ x)  # ascending; XᵀX = V Σ² Vᵀ
  order = np.argsort(evals)[::-1]
  evals, basis = np.maximum(evals[order], 0.0), evecs[:, order]
  lowrank = float(evals[d:].sum())
  rows = min(n, max_rows)
  idx = rng.choice(n, rows, replace=False) if rows < n else np.arange(n)
  z = (x[idx] @ basis[:, :d]).astype(np.float32)
  scale = n / rows
  measured = [k for k in ks if rows == n or 8 * k <= rows] or [min(ks)]
  cluster = {k: scale * _kmeans_sse(z, k, rng, iters) for k in measured}
  top = max(measured)
  for k in ks:  # beyond the sample: the high-resolution law, error ∝ k^(−2/d̃), from the top k
    if k not in cluster:
      cluster[k] = cluster[top] * (k / top) ** (-2.0 / d)
  return {k: lowrank + cluster[k] for k in ks}


def layer_candidates(
  kernel: np.ndarray,
  *,
  ms: Sequence[int] = DEFAULT_MS,
  ks: Sequence[int] = DEFAULT_KS,
  d: int | float | None = None,
  store: str = "codebook",
  allow_float: bool = True,
  rng: np.random.Generator,
  max_rows: int = 2048,
  iters: int = 8,
) -> list[Candidate]:
  """Every valid (k, m, d̃) of this kernel (m divides the row length, n ≥ 8, k ≤ the clamp)."""
  shape = tuple(kernel.shape)
  length = subvectors.row_length(shape)
  out = [Candidate(None, 0, 0, 4.0 * math.prod(shape), 0.0)] if allow_float else []
  for m in sorted({int(m) for m in ms if length % int(m) == 0}):
    n = subvectors.num_subvectors(shape, m)
    if n < 8:
      continue
    limit = subvectors.clamp_k(codec.MAX_K, n)
    valid = [int(k) for k in ks if int(k) <= limit and int(k) & (int(k) - 1) == 0 and k >= 2]
    if not valid:
      continue
    dd = d_for(m, d)
    errors = layer_errors(kernel, m, dd, valid, rng=rng, max_rows=max_rows, iters=iters)
    for k in valid:
      bits = n * codec.bits_per_code(k)
      out.append(Candidate(k, m, dd, bits / 8 + table_bytes(k, m, dd, store), errors[k]))
  return out
