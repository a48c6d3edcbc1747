"""Choosing d̃ before fine-tuning: low-rank error + clustering error per candidate d̃.

For X (n, m) = U Σ Vᵀ, Z_d = U_d Σ_d and P = V_dᵀ, quantizing Z_d with k centroids gives
‖X − C[a]·P‖² = Σ_{i>d} σ_i² + ‖Z_d − C[a]‖² exactly (the two residuals are orthogonal and P has
orthonormal rows), so `total` = `lowrank` + `cluster` is the real post-training error of
`compress_tensor` at that d̃, in the units of ‖X‖_F² (sums over all n subvectors).

`cluster` is measured by k-means on Z_d. Each d̃ runs a fresh k-means++ start and a warm start from
the next larger candidate's centroids truncated to d̃ dims, and keeps the lower SSE. Truncating a
solution never raises its SSE and Lloyd never raises it either, so the measured curve is
non-decreasing in d̃ (the last rounding-level wiggles are removed by a running minimum).
`model` is the high-resolution (Zador) prediction c·k^(−2/d̃)·Σ_{i≤d̃} σ_i² with one constant c
per layer fitted to `cluster` by least squares; it is reported alongside, never used for `.best`.

Every d̃ clusters Z at one width (m, or `width`) with the columns past d̃ zero: the same distances,
so one compiled k-means serves all candidates, and `estimate_dim_model` pads the layers that
cluster as many rows with the same k to their widest m, so that they share it too.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lr2vq_jax.core import kmeans as kmeans_lib
from lr2vq_jax.core import lowrank, subvectors
from lr2vq_jax.core.kmeans import kmeans
from lr2vq_jax.core.rules import Rule, kernels_by_path, plan_layers
from lr2vq_jax.core.seeding import kmeans_plusplus


def default_candidates(m: int) -> tuple[int, ...]:
  """Every d̃ in 1..m for m <= 32, else a geometric-ish subset ending at m."""
  if m <= 32:
    return tuple(range(1, m + 1))
  base = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256]
  return tuple(sorted({c for c in base if c < m} | {m}))


@dataclasses.dataclass(frozen=True)
class DimEstimate:
  """Per-candidate errors (float64 arrays aligned with `candidates`, units of ‖X‖_F²)."""

  candidates: np.ndarray
  lowrank: np.ndarray  # Σ_{i>d} σ_i²
  cluster: np.ndarray  # measured k-means SSE on Z_d
  model: np.ndarray  # c·k^(−2/d)·Σ_{i≤d} σ_i², c fitted to `cluster`
  model_scale: float  # c
  k: int
  m: int
  n: int
  energy: float  # ‖X‖_F² = Σ σ_i²

  @property
  def total(self) -> np.ndarray:
    return self.lowrank + self.cluster

  @property
  def model_total(self) -> np.ndarray:
    return self.lowrank + self.model

  @property
  def basis(self) -> str:
    """What `best` rests on (printed by `table`)."""
    return (
      "low-rank + k-means error of these weights alone: on trained weights it favours d̃ near m; "
      "the task-level choice is lr2vq_jax.train.dim_select (`lr2vq estimate-dim --config`)"
    )

  @property
  def best(self) -> int:
    """The candidate d̃ with the smallest measured total error."""
    return int(self.candidates[int(np.argmin(self.total))])

  @property
  def best_model(self) -> int:
    """The candidate d̃ the fitted model predicts best (for comparison with `best`)."""
    return int(self.candidates[int(np.argmin(self.model_total))])

  def error_at(self, d: int) -> float:
    return float(self.total[list(self.candidates).index(d)])

  def table(self) -> str:
    """Printable per-candidate table; errors relative to ‖X‖_F², best row marked with '*'."""
    e = self.energy if self.energy > 0 else 1.0
    head = f"  {'d':>4} {'k^-2/d':>8} {'lowrank':>9} {'cluster':>9} {'total':>9} {'mdl total':>9}"
    lines = [f"n={self.n} k={self.k} m={self.m}; errors / ||X||^2 = {self.energy:.4g}", head]
    for i, d in enumerate(self.candidates):
      mark = "*" if d == self.best else " "
      lines.append(
        f"{mark} {int(d):>4} {self.k ** (-2.0 / d):>8.4f} {self.lowrank[i] / e:>9.4f} "
        f"{self.cluster[i] / e:>9.4f} {self.total[i] / e:>9.4f} {self.model_total[i] / e:>9.4f}"
      )
    lines.append(
      f"best d = {self.best} (model predicts {self.best_model}); "
      f"d = m (plain PQ) total {self.total[-1] / e:.4f}"
      if int(self.candidates[-1]) == self.m
      else f"best d = {self.best} (model predicts {self.best_model})"
    )
    lines.append(f"based on: {self.basis}")
    return "\n".join(lines)


def estimate_dim(
  w: jax.Array,
  *,
  k: int,
  m: int,
  candidates: Sequence[int] | None = None,
  key: jax.Array | None = None,
  iters: int = kmeans_lib.ITERS,
  max_rows: int | None = None,
  width: int | None = None,
) -> DimEstimate:
  """Low-rank and measured clustering error of kernel `w` for each candidate d̃ (default 1..m).

  k is used as given (clamp it with `subvectors.clamp_k` for the PQF convention). With `max_rows`,
  k-means runs on a random subset of that many subvectors and its SSE is scaled by n / max_rows.
  `width` (>= m): k-means on Z padded with zero columns to that width (the same distances; a
  compiled k-means shared with other kernels of that width, rows and k).
  """
  key = jax.random.key(0) if key is None else key
  w = jnp.asarray(w, jnp.float32)
  n = subvectors.num_subvectors(w.shape, m)
  cands = sorted({int(c) for c in (default_candidates(m) if candidates is None else candidates)})
  if not cands or cands[0] < 1 or cands[-1] > m:
    raise ValueError(f"candidates {cands} must lie in 1..m={m}")
  width = m if width is None else int(width)
  if width < m:
    raise ValueError(f"width={width} must be at least m={m}")
  rows = max_rows if max_rows is not None and n > max_rows else None
  if k > (n if rows is None else rows):
    raise ValueError(f"k={k} centroids for only {n if rows is None else rows} subvectors")
  err, z, key = _project(w, key, m=m, width=width, rows=rows)
  err = np.asarray(err, np.float64)
  scale = 1.0 if rows is None else n / rows

  cluster = {}
  prev = None
  for d in reversed(cands):  # same (rows, width) shape for every d: zero columns, one compilation
    mask = jnp.asarray(np.arange(width) < d, jnp.float32)
    zd = z * mask
    # Seeding outside `kmeans` keeps one compiled `kmeans` (init given) for both starts.
    seed = kmeans_plusplus(zd, k, key=jax.random.fold_in(key, d))
    res = kmeans(zd, k, key=key, iters=iters, init=seed)
    if prev is not None:
      warm = kmeans(zd, k, key=key, iters=iters, init=prev * mask)
      res = warm if float(warm.sse) < float(res.sse) else res
    prev = res.centroids
    cluster[d] = float(res.sse) * scale
  measured = np.minimum.accumulate(np.array([cluster[d] for d in reversed(cands)]))[::-1]

  cand = np.array(cands)
  energy = float(err[0])
  raw = np.array([k ** (-2.0 / d) for d in cands]) * (energy - err[cand])
  denom = float(raw @ raw)
  c = float(raw @ measured) / denom if denom > 0 else 0.0
  return DimEstimate(cand, err[cand], measured, c * raw, c, int(k), int(m), n, energy)


@functools.partial(jax.jit, static_argnames=("m", "width", "rows"))
def _project(w: jax.Array, key: jax.Array, *, m: int, width: int, rows: int | None):
  """(err (m+1,), Z (rows, width), key) of kernel `w`: the Eckart–Young curve, all m coordinates in
  the right-singular basis (Z_d = first d) zero-padded to `width`, `rows` of them sampled without
  replacement (all when None). One program, instead of a compiled one per step."""
  x = subvectors.to_subvectors(w, m)
  err = lowrank.lowrank_error(x)
  z, _ = lowrank.svd_init(x, m)
  z = jnp.pad(z, ((0, 0), (0, width - m)))
  if rows is not None:
    key, sub = jax.random.split(key)
    z = z[jax.random.choice(sub, x.shape[0], (rows,), replace=False)]
  return err, z, key


@dataclasses.dataclass(frozen=True)
class ModelDimEstimate:
  """Per-layer DimEstimates of a model and the best global d̃ per subvector length m."""

  layers: dict[str, DimEstimate]

  def global_best(self) -> dict[int, int]:
    """For each m: the d̃ minimising the summed total error of all layers with that m."""
    out = {}
    for m in sorted({e.m for e in self.layers.values()}):
      group = [e for e in self.layers.values() if e.m == m]
      common = set.intersection(*(set(int(c) for c in e.candidates) for e in group))
      out[m] = min(sorted(common), key=lambda d: sum(e.error_at(d) for e in group))
    return out

  def table(self) -> str:
    """One line per layer (best d̃, error at best vs at d̃ = m) and the global choice per m."""
    head = (
      f"{'layer':<28} {'n':>8} {'k':>6} {'m':>3} {'best d':>6} {'err(best)':>10} {'err(d=m)':>10}"
    )
    lines = [head, "-" * len(head)]
    for path, e in self.layers.items():
      energy = e.energy if e.energy > 0 else 1.0
      at_m = f"{e.total[-1] / energy:>10.4f}" if int(e.candidates[-1]) == e.m else f"{'-':>10}"
      lines.append(
        f"{path:<28} {e.n:>8} {e.k:>6} {e.m:>3} {e.best:>6} {e.total.min() / energy:>10.4f} {at_m}"
      )
    best = ", ".join(f"m={m}: d={d}" for m, d in self.global_best().items())
    lines.append(f"global best d per m: {best}  (errors relative to ||X||^2)")
    return "\n".join(lines)


def estimate_dim_model(
  params: Mapping,
  rules: Sequence[Rule],
  *,
  layers: str | None = None,
  candidates: Sequence[int] | None = None,
  key: jax.Array | None = None,
  iters: int = kmeans_lib.ITERS,
  max_rows: int | None = None,
) -> ModelDimEstimate:
  """estimate_dim for every layer the rules compress (k after clamp), optionally only paths
  `re.search`-matching `layers`; candidates above a layer's m are dropped for that layer."""
  key = jax.random.key(0) if key is None else key
  plans = plan_layers(params, rules)
  kernels = kernels_by_path(params)
  selected = [p for p in plans.values() if layers is None or re.search(layers, p.path)]
  if not selected:
    raise ValueError(
      f"no compressed layer matches {layers!r}; compressed layers: {', '.join(plans)}"
    )

  def rows(plan):  # (rows k-means sees, k): the layers that share a compiled k-means
    return (plan.n if max_rows is None else min(plan.n, max_rows), plan.k)

  widths: dict[tuple[int, int], int] = {}
  for plan in selected:
    widths[rows(plan)] = max(widths.get(rows(plan), 0), plan.m)
  out = {}
  for i, plan in enumerate(selected):
    cands = None if candidates is None else [c for c in candidates if c <= plan.m]
    out[plan.path] = estimate_dim(
      kernels[plan.path],
      k=plan.k,
      m=plan.m,
      candidates=cands or None,
      key=jax.random.fold_in(key, i),
      iters=iters,
      max_rows=max_rows,
      width=widths[rows(plan)],
    )
  return ModelDimEstimate(out)
