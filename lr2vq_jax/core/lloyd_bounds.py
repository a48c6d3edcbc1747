"""Lloyd steps that recompute only the (row, centroid group) pairs whose bounds fail (Yinyang).

The centroids are split once into GROUPS spatial groups of equal size (balanced k-d halving of the
seeds). Per row: a lower bound on the distance to each group's centroids other than its own, kept
valid across steps by the group's largest drift (triangle inequality). Each step the exact distance
to the row's own centroid (O(d)) is compared with each group bound: a group whose bound is above it
by more than twice the float32 error bound of a computed squared distance cannot hold a centroid
that `scoring.scores`' argmin would pick. A row with a failing group recomputes those groups and its own
(a (row, group) pair: the k / GROUPS scores of one small matmul); the rows of all the pairs are
listed once per step from per-word popcounts (a scatter over the words, a running max over at most
PLAIN_FRACTION of the pairs: a search per pair and chunk cost a third of a step) and scored
PAIR_ROWS of a group at a time in one `lax.while_loop`, each row keeping its best so far (ties to
the lowest index): the plain pass's code bit for bit. When more than PLAIN_FRACTION of the pairs
fail, every row is recomputed whole.
The first WARMUP steps (everything moves) are `kmeans._step`'s plain ones. Measured
(benchmarks/kmeans_vs_faiss.py, CPU s, late steps): 5-8% of the pairs recomputed (50-70% of the
rows fail, mostly their own group only); a step ~0.6x a plain one at k = 2048 (n = 128k, d = 4),
the whole `kmeans` call 0.8-0.9x the plain loop's at k = 2048-4096 (same codes).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from lr2vq_jax.core import kmeans as km
from lr2vq_jax.core import scoring
from lr2vq_jax.core.distances import ARGMIN_GROUP, _running_argmin

# Bounds pay from this k up (and need k divisible by GROUPS * ARGMIN_GROUP).
FILTER_MIN_K = 512
# Yinyang's k / 10 groups at most; 16 measured best offline (benchmarks/kmeans_bounds.py).
GROUPS = 16
# The first steps run plain (everything moves; a full pass with bounds costs ~1.4x a plain one;
# 3-5 measured alike at n = 128k, k = 2048).
WARMUP = 5
# Above this fraction of failing (row, group) pairs a step recomputes every row whole (a pair costs
# ~5x its share of a whole row's pass: gathers, scatters, a narrow matmul).
PLAIN_FRACTION = 0.1
# (row, group) pairs per recomputed chunk: a (k / GROUPS, PAIR_ROWS) score block (512-4096 alike).
PAIR_ROWS = 1024
# Rows per uint32 word of the packed pair masks (`_pair_rows`).
PAIR_BLOCK = 32
_EPS = 2.0**-24
_UP, _DOWN = 1.0 + 1e-6, 1.0 - 1e-6  # directed rounding of the bound arithmetic


def supported(k: int) -> bool:
  """Whether `kmeans` can run the bounded loop at this k."""
  return k >= FILTER_MIN_K and k % (GROUPS * ARGMIN_GROUP) == 0


class Bounds(NamedTuple):
  """Per padded row: candidate code (N,) and lower bounds (GROUPS, N) on the distance (not squared)
  to the centroids of each group other than the code."""

  codes: jax.Array
  lower: jax.Array


def initial_bounds(num_rows: int) -> Bounds:
  """Bounds that every row fails (lower 0): the first pass is a full one."""
  return Bounds(jnp.zeros((num_rows,), jnp.int32), jnp.zeros((GROUPS, num_rows), jnp.float32))


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


def _group_min(scores: jax.Array):
  """(min, first argmin, min of the others) over axis 0 of scores (kg, b), kg a multiple of
  ARGMIN_GROUP: minima of runs of ARGMIN_GROUP rows, a running minimum over them that also carries
  the runner-up and the winning run, then the first minimum and the runner-up inside that run."""
  kg, b = scores.shape
  sub = scores.reshape(kg // ARGMIN_GROUP, ARGMIN_GROUP, b)
  smin = jnp.min(sub, axis=1)

  def better(j, state):
    best, run, vals, second = state
    take = smin[j] < best
    second = jnp.where(take, best, jnp.minimum(second, smin[j]))
    vals = jnp.where(take[None], sub[j], vals)
    return jnp.where(take, smin[j], best), jnp.where(take, j, run), vals, second

  init = (smin[0], jnp.zeros((b,), jnp.int32), sub[0], jnp.full((b,), jnp.inf, scores.dtype))
  best, run, vals, rest = lax.fori_loop(1, kg // ARGMIN_GROUP, better, init, unroll=8)
  iota = lax.broadcasted_iota(jnp.int32, vals.shape, 0)
  first = jnp.min(jnp.where(vals == best, iota, ARGMIN_GROUP), axis=0)
  in_run = jnp.min(jnp.where(iota == first, jnp.inf, vals), axis=0)
  return best, run * ARGMIN_GROUP + first, jnp.minimum(in_run, rest)


def _fresh(xb, lhs, perm, cmax, d):
  """Codes (as `kmeans._nearest`: argmin, ties to the lowest index) and fresh group bounds
  (GROUPS, b) for the rows xb (b, d); lhs = `scoring.score_lhs` of the centroids in `perm` order."""
  k = perm.shape[0]
  scores = scoring.scores(xb, lhs)  # (k, b) in group order
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
  # A tie's gmin left out the first in group order, maybe not the code: bound every group by the
  # minimum itself (a tied centroid is that close anyway).
  gmin = jnp.where(tie, best, gmin)
  xx = jnp.sum(xb * xb, axis=1)
  e = _margin(jnp.sqrt(xx), cmax, d)
  return code, jnp.sqrt(jnp.maximum(gmin + xx - e, 0.0)) * _DOWN


def _bit_select(w, t):
  """Position of the t-th (from 0) set bit of the uint32 words w, by halving (popcounts)."""
  pos = jnp.zeros_like(t)
  for width in (16, 8, 4, 2, 1):
    low = (w >> pos.astype(jnp.uint32)) & jnp.uint32((1 << width) - 1)
    low = lax.population_count(low).astype(jnp.int32)
    go = low <= t
    t, pos = jnp.where(go, t - low, t), jnp.where(go, pos + width, pos)
  return pos


def _pair_rows(words, totals, ends, size: int):
  """Rows (size,) of all the pairs, group after group (group g's from the sum of the counts before
  it), their masks packed into words (GROUPS, M) uint32 of PAIR_BLOCK rows, totals / ends (GROUPS, M)
  the pairs per word and their running sum. Each word's id is scattered (max) at its first pair, a
  running max spreads it over its pairs (a word whose start it shares with later ones is empty),
  then the pair's bit is selected: one pass over at most `size` pairs, no per-pair search."""
  groups, m = words.shape
  counts = ends[:, -1]
  start = ((jnp.cumsum(counts) - counts)[:, None] + ends - totals).reshape(-1)
  ids = jnp.arange(groups * m, dtype=jnp.int32)
  wid = lax.cummax(jnp.zeros((size,), jnp.int32).at[start].max(ids, mode="drop"))
  pos = _bit_select(jnp.take(words.reshape(-1), wid), jnp.arange(size) - jnp.take(start, wid))
  return (wid % m) * PAIR_BLOCK + pos


def _pair_index(pair):
  """Per group of `pair` (GROUPS, N): its mask packed into uint32 words of PAIR_BLOCK rows, the pairs
  per word and their running sum, for `_pair_rows`."""
  groups, num_rows = pair.shape
  blocks = jnp.pad(pair, ((0, 0), (0, -num_rows % PAIR_BLOCK))).reshape(groups, -1, PAIR_BLOCK)
  bit = jnp.left_shift(jnp.uint32(1), jnp.arange(PAIR_BLOCK, dtype=jnp.uint32))
  words = jnp.sum(jnp.where(blocks, bit, jnp.uint32(0)), axis=2, dtype=jnp.uint32)
  totals = lax.population_count(words).astype(jnp.int32)
  return words, totals, jnp.cumsum(totals, axis=1)


def _max_pairs(num_rows: int) -> int:
  """Most (row, group) pairs a step recomputes by pairs (above: every row whole)."""
  return int(PLAIN_FRACTION * GROUPS * num_rows)


def _filtered(xp, xx, e, lhs_g, perm_g, pair, b: Bounds) -> Bounds:
  """Bounds after recomputing the (group, row) pairs `pair` (GROUPS, N), PAIR_ROWS of a group at a
  time by one (k / GROUPS)-row matmul: a row with pairs takes the best of their groups (its own
  among them; ties to the lowest index), the other groups keep their bounds (they cannot hold it)."""
  groups, num_rows = pair.shape
  size = groups * num_rows
  words, totals, ends = _pair_index(pair)
  counts = ends[:, -1]
  chunks = (counts + PAIR_ROWS - 1) // PAIR_ROWS
  last = jnp.cumsum(chunks)
  # `assign_bounded` calls this at <= _max_pairs of them; PAIR_ROWS more for the last chunk's slice.
  pair_rows = _pair_rows(words, totals, ends, _max_pairs(num_rows) + PAIR_ROWS)
  offset = jnp.cumsum(counts) - counts

  def body(state):
    i, lower, best, code, second, group = state
    g = jnp.sum(last <= i).astype(jnp.int32)
    first = (i - last[g] + chunks[g]) * PAIR_ROWS
    rows = lax.dynamic_slice(pair_rows, (offset[g] + first,), (PAIR_ROWS,))
    rows = jnp.minimum(rows, num_rows - 1)
    live = first + jnp.arange(PAIR_ROWS, dtype=jnp.int32) < counts[g]
    gb, ga, gs = _group_min(scoring.scores(jnp.take(xp, rows, axis=0), lhs_g[g]))
    ga = jnp.take(perm_g[g], ga)
    low = jnp.sqrt(jnp.maximum(gb + jnp.take(xx, rows) - jnp.take(e, rows), 0.0)) * _DOWN
    lower = lower.at[jnp.where(live, g * num_rows + rows, size)].set(low, mode="drop")
    cb, cc = jnp.take(best, rows), jnp.take(code, rows)
    dest = jnp.where(live & ((gb < cb) | ((gb == cb) & (ga < cc))), rows, num_rows)
    best, code = best.at[dest].set(gb, mode="drop"), code.at[dest].set(ga, mode="drop")
    second = second.at[dest].set(gs, mode="drop")
    return i + 1, lower, best, code, second, group.at[dest].set(g, mode="drop")

  inf = jnp.full((num_rows,), jnp.inf, jnp.float32)
  init = (jnp.int32(0), b.lower.reshape(-1), inf, b.codes, inf, jnp.zeros((num_rows,), jnp.int32))
  _, lower, _, code, second, group = lax.while_loop(lambda s: s[0] < last[-1], body, init)
  # The winner's own group: the bound on its other centroids is the runner-up there.
  low = jnp.sqrt(jnp.maximum(second + xx - e, 0.0)) * _DOWN
  dest = jnp.where(jnp.any(pair, axis=0), group * num_rows + jnp.arange(num_rows), size)
  return Bounds(code, lower.at[dest].set(low, mode="drop").reshape(groups, num_rows))


def assign_bounded(xp, valid, xn, c, perm, b: Bounds, rows: int) -> Bounds:
  """Codes of the padded rows xp (N, d) (valid (N,), norms xn (N,)) under centroids c, by the bounds
  b (valid for c): the (row, group) pairs the bounds cannot settle are recomputed."""
  num_rows, d = xp.shape
  k = c.shape[0]
  lhs = scoring.score_lhs(jnp.take(c, perm, axis=0))
  cmax = jnp.sqrt(jnp.max(jnp.sum(c * c, axis=1))) * _UP
  e = _margin(xn, cmax, d)
  # The exact distance to the current centroid: a sum of d squares, relative error <= (d + 2) eps.
  diff = xp - jnp.take(c, b.codes, axis=0)
  upper = jnp.sum(diff * diff, axis=1) * (1.0 + (d + 4) * 2 * _EPS)
  fail = ~(upper * _UP + 2.0 * e < (b.lower * b.lower) * _DOWN)  # (GROUPS, N)
  group_of = (
    jnp.zeros((k,), jnp.int32).at[perm].set(jnp.arange(k, dtype=jnp.int32) // (k // GROUPS))
  )
  own = jnp.arange(GROUPS)[:, None] == jnp.take(group_of, b.codes)
  pair = (fail | own) & (valid & jnp.any(fail, axis=0))
  m = jnp.sum(pair, dtype=jnp.int32)

  def full(b):
    code, lo = lax.map(lambda xb: _fresh(xb, lhs, perm, cmax, d), xp.reshape(-1, rows, d))
    return Bounds(code.reshape(-1), jnp.transpose(lo, (1, 0, 2)).reshape(GROUPS, num_rows))

  def filtered(b):
    xx = jnp.sum(xp * xp, axis=1)
    lhs_g = lhs.reshape(GROUPS, k // GROUPS, d + 1)
    return _filtered(xp, xx, e, lhs_g, perm.reshape(GROUPS, -1), pair, b)

  return lax.cond(m > _max_pairs(num_rows), full, filtered, b)


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
  lower = jnp.maximum(b.lower - group_drift[:, None], 0.0) * _DOWN
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
