"""Lloyd steps that skip the rows whose nearest centroid provably has not changed (Hamerly bounds).

Per row: an upper bound on the distance to its centroid and a lower bound on the distance to every
other, kept valid across steps by the centroids' drift (triangle inequality). A row whose bounds
are apart by more than twice the float32 error bound of a computed squared distance keeps its code:
`_scores`' argmin could not pick another centroid, so codes equal the plain pass's bit for bit.
Only the rows that fail are recomputed: compacted into whole chunks (a cumsum and a scatter) and
assigned in a `lax.while_loop` whose trip count is the number of chunks they fill. When more than
PLAIN_FRACTION of the rows fail (the first steps, when everything moves) the plain pass runs.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from lr2vq_jax.core import kmeans as km
from lr2vq_jax.core.distances import argmin2_rows

# Bounds pay from this k up: below, the grouped argmin (which gives the second minimum for 1/16 of
# a pass) is off and the matmul + argmin a row costs is too cheap to skip.
FILTER_MIN_K = 512
# Above this fraction of failing rows a step runs the plain pass (compaction would not pay).
PLAIN_FRACTION = 0.6
_EPS = 2.0**-24
_UP, _DOWN = 1.0 + 1e-6, 1.0 - 1e-6  # directed rounding of the bound arithmetic


class Bounds(NamedTuple):
  """Per padded row: candidate code, upper bound on ||x - c[code]||, lower bound on ||x - c_j||, j !=
  code (Euclidean, not squared)."""

  codes: jax.Array
  upper: jax.Array
  lower: jax.Array


def initial_bounds(num_rows: int) -> Bounds:
  """Bounds that every row fails (upper +inf, lower 0): the first pass is a plain one."""
  return Bounds(
    jnp.zeros((num_rows,), jnp.int32),
    jnp.full((num_rows,), jnp.inf, jnp.float32),
    jnp.zeros((num_rows,), jnp.float32),
  )


def _margin(xn: jax.Array, cmax: jax.Array, d: int) -> jax.Array:
  """Bound on |computed - exact| squared distance of a row of norm xn to any centroid (norms <= cmax):
  a dot product of length d + 1 errs by <= (d + 1) eps sum |terms| <= (d + 1) eps (cmax + xn)^2;
  ||x||^2 and the final adds are covered by the factor 8."""
  return 8.0 * (d + 2) * _EPS * (cmax + xn) ** 2


def _fresh(xb, lhs, cmax, d):
  """Codes (as `_nearest`) and fresh bounds for the rows xb (b, d)."""
  code, best, second = argmin2_rows(km._scores(xb, lhs))
  xx = jnp.sum(xb * xb, axis=1)
  e = _margin(jnp.sqrt(xx), cmax, d)
  upper = jnp.sqrt(jnp.maximum(best + xx + e, 0.0)) * _UP
  lower = jnp.sqrt(jnp.maximum(second + xx - e, 0.0)) * _DOWN
  return code, upper, lower


def _cmax(c: jax.Array) -> jax.Array:
  return jnp.sqrt(jnp.max(jnp.sum(c * c, axis=1))) * _UP


def assign_bounded(xp, valid, xn, c, b: Bounds, rows: int) -> Bounds:
  """Codes of the padded rows xp (N, d) (valid (N,), norms xn (N,)) under centroids c, by the bounds
  b (valid for c): the rows the bounds cannot settle are recomputed, `rows` at a time."""
  num_rows, d = xp.shape
  lhs = km._nearest_lhs(c)
  cmax = _cmax(c)
  e = _margin(xn, cmax, d)
  # Hamerly's tightening, for every row (O(d) each): the exact distance to its current centroid,
  # a sum of d squares without cancellation, so relative error <= (d + 2) eps.
  diff = xp - jnp.take(c, b.codes, axis=0)
  tight = jnp.sum(diff * diff, axis=1) * (1.0 + (d + 4) * 2 * _EPS)
  upper = jnp.minimum(b.upper * b.upper, tight)
  keep = upper * _UP + 2.0 * e < (b.lower * b.lower) * _DOWN
  fail = valid & ~keep
  m = jnp.sum(fail, dtype=jnp.int32)

  def plain(b):
    code, up, lo = lax.map(lambda xb: _fresh(xb, lhs, cmax, d), xp.reshape(-1, rows, d))
    return Bounds(code.reshape(-1), up.reshape(-1), lo.reshape(-1))

  def filtered(b):
    pos = jnp.cumsum(fail, dtype=jnp.int32) - 1
    idx = jnp.zeros((num_rows,), jnp.int32)
    idx = idx.at[jnp.where(fail, pos, num_rows)].set(jnp.arange(num_rows), mode="drop")

    def body(state):
      i, b = state
      ids = lax.dynamic_slice(idx, (i * rows,), (rows,))  # tail: row 0 again, recomputed equal
      code, up, lo = _fresh(jnp.take(xp, ids, axis=0), lhs, cmax, d)
      return i + 1, Bounds(
        b.codes.at[ids].set(code), b.upper.at[ids].set(up), b.lower.at[ids].set(lo)
      )

    chunks = (m + rows - 1) // rows
    return lax.while_loop(lambda s: s[0] < chunks, body, (jnp.int32(0), b))[1]

  return lax.cond(m > PLAIN_FRACTION * num_rows, plain, filtered, b)


def step_bounded(x, xs, valid, xn, c, b: Bounds):
  """`kmeans._step` by the bounds b (valid for c): (new centroids, bounds valid for them, sse of the
  codes under c). Same codes, centroids and SSE as `_step`."""
  n = x.shape[0]
  num, rows, d = xs.shape
  k = c.shape[0]
  b = assign_bounded(xs.reshape(-1, d), valid.reshape(-1), xn, c, b, rows)

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
  (d1, d2), (i1, _) = lax.top_k(drift, 2)  # the others' largest drift: d2 for rows coded i1
  b = Bounds(
    b.codes,
    (b.upper + jnp.take(drift, b.codes)) * _UP,
    jnp.maximum(b.lower - jnp.where(b.codes == i1, d2, d1), 0.0) * _DOWN,
  )
  return new, b, km._exact_sse(x, c, codes)
