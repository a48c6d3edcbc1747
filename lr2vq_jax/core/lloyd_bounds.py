"""Lloyd steps that skip the rows whose nearest centroid provably has not changed (Yinyang bounds).

The centroids are split once into GROUPS spatial groups of equal size (balanced k-d halving of the
seeds). Per row: a lower bound on the distance to each group's centroids other than its own, kept
valid across steps by the group's largest drift (triangle inequality). Each step the exact distance
to the row's own centroid (O(d)) is compared with the smallest group bound: a row whose bounds are
apart by more than twice the float32 error bound of a computed squared distance keeps its code, as
`_scores`' argmin could not pick another centroid, so codes equal the plain pass's bit for bit.
The rows that fail are compacted into whole chunks (a cumsum and a scatter) and assigned in a
`lax.while_loop` whose trip count is the number of chunks they fill; when more than
PLAIN_FRACTION fail every chunk is recomputed. The first WARMUP steps (everything moves) are
`kmeans._step`'s plain ones. Measured (benchmarks/kmeans_vs_faiss.py, CPU s): ~10% off the whole
call at k = 2048-4096; a recomputed row costs ~1.4x a plain pass's (group minima, bound outputs).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from lr2vq_jax.core import kmeans as km
from lr2vq_jax.core.distances import ARGMIN_GROUP, _running_argmin

# Bounds pay from this k up (and need k divisible by GROUPS * ARGMIN_GROUP).
FILTER_MIN_K = 512
GROUPS = (
  16  # Yinyang's k / 10 groups at most; 16 measured best offline (benchmarks/kmeans_bounds.py)
)
# The first steps run plain (everything moves; a full pass with bounds costs ~1.3x a plain one).
WARMUP = 5
# Above this fraction of failing rows a step recomputes every chunk (compaction would not pay).
PLAIN_FRACTION = 0.9
_EPS = 2.0**-24
_UP, _DOWN = 1.0 + 1e-6, 1.0 - 1e-6  # directed rounding of the bound arithmetic


def supported(k: int) -> bool:
  """Whether `kmeans` can run the bounded loop at this k."""
  return k >= FILTER_MIN_K and k % (GROUPS * ARGMIN_GROUP) == 0


class Bounds(NamedTuple):
  """Per padded row: candidate code (N,) and lower bounds (N, GROUPS) on the distance (not squared)
  to the centroids of each group other than the code."""

  codes: jax.Array
  lower: jax.Array


def initial_bounds(num_rows: int) -> Bounds:
  """Bounds that every row fails (lower 0): the first pass is a full one."""
  return Bounds(jnp.zeros((num_rows,), jnp.int32), jnp.zeros((num_rows, GROUPS), jnp.float32))


def centroid_groups(c: jax.Array) -> jax.Array:
  """Permutation (k,) of the centroids into GROUPS contiguous groups of k / GROUPS: balanced k-d
  halving (each group split at the median of its widest coordinate), each group in index order."""
  k, d = c.shape
  perm = jnp.arange(k)
  g = 1
  while g < GROUPS:
    pts = jnp.take(c, perm, axis=0).reshape(g, k // g, d)
    dim = jnp.argmax(jnp.max(pts, 1) - jnp.min(pts, 1), axis=1)
    coord = jnp.take_along_axis(pts, dim[:, None, None], axis=2)[..., 0]
    order = jnp.argsort(coord, axis=1, stable=True)
    perm = jnp.take_along_axis(perm.reshape(g, k // g), order, axis=1).reshape(-1)
    g *= 2
  return jnp.sort(perm.reshape(GROUPS, -1), axis=1).reshape(-1).astype(jnp.int32)


def _margin(xn: jax.Array, cmax: jax.Array, d: int) -> jax.Array:
  """Bound on |computed - exact| squared distance of a row of norm xn to any centroid (norms <= cmax):
  a dot product of length d + 1 errs by <= (d + 1) eps sum |terms| <= (d + 1) eps (cmax + xn)^2;
  ||x||^2 and the final adds are covered by the factor 8."""
  return 8.0 * (d + 2) * _EPS * (cmax + xn) ** 2


def _fresh(xb, lhs, perm, cmax, d):
  """Codes (as `kmeans._nearest`: argmin, ties to the lowest index) and fresh group bounds for the
  rows xb (b, d); lhs = `_score_lhs` of the centroids in `perm` order."""
  k = perm.shape[0]
  scores = km._scores(xb, lhs)  # (k, b) in group order
  sub = scores.reshape(k // ARGMIN_GROUP, ARGMIN_GROUP, -1)
  smin = jnp.min(sub, axis=1)
  sgrp, best = _running_argmin(smin)
  cols = jnp.arange(scores.shape[1])
  vals = sub[sgrp[:, None], jnp.arange(ARGMIN_GROUP)[None, :], cols[:, None]]  # (b, 16)
  first = jnp.argmax(vals == best[:, None], axis=1)
  in_sub = jnp.min(jnp.where(jnp.arange(ARGMIN_GROUP) == first[:, None], jnp.inf, vals), axis=1)
  others = jnp.where(jnp.arange(k // ARGMIN_GROUP)[:, None] == sgrp, in_sub, smin)
  gmin = jnp.min(others.reshape(GROUPS, -1, others.shape[1]), axis=1)  # (GROUPS, b)
  code = jnp.take(perm, sgrp * ARGMIN_GROUP + first)
  tie = best == jnp.min(gmin, axis=0)  # across groups the first in group order won: fix to lowest

  def lowest(code):
    idx = jnp.where(scores == best, perm[:, None], k)
    return jnp.where(tie, jnp.min(idx, axis=0), code)

  code = lax.cond(jnp.any(tie), lowest, lambda c: c, code)
  xx = jnp.sum(xb * xb, axis=1)
  e = _margin(jnp.sqrt(xx), cmax, d)
  lower = jnp.sqrt(jnp.maximum(gmin + xx - e, 0.0)) * _DOWN
  return code, lower.T


def assign_bounded(xp, valid, xn, c, perm, b: Bounds, rows: int) -> Bounds:
  """Codes of the padded rows xp (N, d) (valid (N,), norms xn (N,)) under centroids c, by the bounds
  b (valid for c): the rows the bounds cannot settle are recomputed, `rows` at a time."""
  num_rows, d = xp.shape
  lhs = km._score_lhs(jnp.take(c, perm, axis=0))
  cmax = jnp.sqrt(jnp.max(jnp.sum(c * c, axis=1))) * _UP
  e = _margin(xn, cmax, d)
  # The exact distance to the current centroid: a sum of d squares, relative error <= (d + 2) eps.
  diff = xp - jnp.take(c, b.codes, axis=0)
  upper = jnp.sum(diff * diff, axis=1) * (1.0 + (d + 4) * 2 * _EPS)
  lower = jnp.min(b.lower, axis=1)
  fail = valid & ~(upper * _UP + 2.0 * e < (lower * lower) * _DOWN)
  m = jnp.sum(fail, dtype=jnp.int32)

  def full(b):
    code, lo = lax.map(lambda xb: _fresh(xb, lhs, perm, cmax, d), xp.reshape(-1, rows, d))
    return Bounds(code.reshape(-1), lo.reshape(num_rows, GROUPS))

  def filtered(b):
    pos = jnp.cumsum(fail, dtype=jnp.int32) - 1
    idx = jnp.zeros((num_rows,), jnp.int32)
    idx = idx.at[jnp.where(fail, pos, num_rows)].set(jnp.arange(num_rows), mode="drop")

    def body(state):  # results go to slices of buffers (in place), scattered once after
      i, codes, lower = state
      ids = lax.dynamic_slice(idx, (i * rows,), (rows,))
      code, lo = _fresh(jnp.take(xp, ids, axis=0), lhs, perm, cmax, d)
      codes = lax.dynamic_update_slice(codes, code, (i * rows,))
      return i + 1, codes, lax.dynamic_update_slice(lower, lo, (i * rows, 0))

    chunks = (m + rows - 1) // rows
    init = (jnp.int32(0), jnp.zeros_like(b.codes), jnp.zeros_like(b.lower))
    _, codes, lower = lax.while_loop(lambda s: s[0] < chunks, body, init)
    dest = jnp.where(jnp.arange(num_rows) < m, idx, num_rows)
    return Bounds(
      b.codes.at[dest].set(codes, mode="drop"), b.lower.at[dest].set(lower, mode="drop")
    )

  return lax.cond(m > PLAIN_FRACTION * num_rows, full, filtered, b)


def step_bounded(x, xs, valid, xn, perm, c, b: Bounds):
  """`kmeans._step` by the bounds b (valid for c): (new centroids, bounds valid for them, sse of the
  codes under c). Same codes, centroids and SSE as `_step`."""
  n = x.shape[0]
  num, rows, d = xs.shape
  k = c.shape[0]
  b = assign_bounded(xs.reshape(-1, d), valid.reshape(-1), xn, c, perm, b, rows)

  def body(carry, inp):
    xb, vb, code = inp
    sums, counts = km._cluster_sums(xb, vb, code, k)
    return (carry[0] + sums, carry[1] + counts), None

  init = (jnp.zeros((k, d), jnp.float32), jnp.zeros((k,), jnp.float32))
  (sums, counts), _ = lax.scan(body, init, (xs, valid, b.codes.reshape(num, rows)))
  codes = b.codes[:n]
  empty = counts == 0
  means = sums / jnp.maximum(counts, 1.0)[:, None]

  def repair(means):  # as `_step`'s, from the plain pass's min distances (rare steps only)
    lhs = km._nearest_lhs(c)
    mind = lax.map(lambda xb: km._nearest(xb, lhs)[1], xs).reshape(-1)[:n]
    _, far = lax.top_k(mind, k)
    rank = jnp.clip(jnp.cumsum(empty) - 1, 0, k - 1)
    return jnp.where(empty[:, None], jnp.take(x, far[rank], axis=0), means)

  new = lax.cond(jnp.any(empty), repair, lambda m: m, means)
  drift = jnp.sqrt(jnp.sum((new - c) ** 2, axis=1)) * (1.0 + 1e-5)
  group_drift = jnp.max(jnp.take(drift, perm).reshape(GROUPS, -1), axis=1)
  lower = jnp.maximum(b.lower - group_drift, 0.0) * _DOWN
  return new, Bounds(b.codes, lower), km._exact_sse(x, c, codes)


def lloyd(xc, xs, valid, c0, iters: int, tol: float):
  """`kmeans._lloyd` by the bounds (same results), and the final codes from the bounds too:
  (centroids, codes (n,), sse history)."""
  num, rows, d = xs.shape
  xp, vp = xs.reshape(-1, d), valid.reshape(-1)
  xn = jnp.sqrt(jnp.sum(xp * xp, axis=1))
  perm = centroid_groups(c0)

  def step(c, state):
    b, t = state

    def plain(c, b):  # the bounds stay the initial ones (all rows fail) until the first bounded
      new, _, sse = km._step(xc, xs, valid, c)
      return new, b, sse

    def bounded(c, b):
      return step_bounded(xc, xs, valid, xn, perm, c, b)

    new, b, sse = lax.cond(t < WARMUP, plain, bounded, c, b)
    return new, (b, t + 1), sse

  b0 = initial_bounds(num * rows)
  c, (b, t), history = km._stop_scan(step, (b0, jnp.int32(0)), c0, iters, tol)
  codes = lax.cond(  # bounds from a bounded step, else (early stop) a plain pass
    t <= WARMUP,
    lambda c, b: km.assign(xc, c, chunk_size=rows)[0],
    lambda c, b: assign_bounded(xp, vp, xn, c, perm, b, rows).codes[: xc.shape[0]],
    c,
    b,
  )
  return c, codes, history
