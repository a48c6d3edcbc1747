"""Chunked, jittable k-means: k-means++ or batched D^2 seeding, Lloyd iterations, repairs.

Distances are computed over chunks of rows (padded, with the padding masked), so memory is
O(chunk * k + n * d) and never n x k at once: per chunk one matmul of [-2c, ||c||^2] with [x, 1]
and an exact grouped argmin (`distances.argmin_rows`). Seeding reads a stratified sample of at most
SEED_ROWS_PER_CENTROID * k rows; Lloyd stops once an iteration gains less than `tol` of the SSE.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from lr2vq_jax.core.distances import argmin_group_padding, argmin_rows


class KMeansResult(NamedTuple):
  """Result of `kmeans`: centroids (k, d) f32, codes (n,) int32, sse () f32 of the final codes."""

  centroids: jax.Array
  codes: jax.Array
  sse: jax.Array


def chunk_layout(n: int, chunk_size: int) -> tuple[int, int]:
  """Return (num_chunks, chunk) with num_chunks * chunk >= n and the least padding."""
  if chunk_size < 1:
    raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
  num = max(1, -(-n // chunk_size))
  return num, -(-n // num)


def chunk_rows(x: jax.Array, chunk_size: int) -> tuple[jax.Array, jax.Array]:
  """Zero-pad x (n, d) to (num_chunks, chunk, d); also return the (num_chunks, chunk) valid mask."""
  n = x.shape[0]
  num, chunk = chunk_layout(n, chunk_size)
  xp = jnp.pad(x, ((0, num * chunk - n), (0, 0)))
  valid = (jnp.arange(num * chunk) < n).reshape(num, chunk)
  return xp.reshape(num, chunk, x.shape[1]), valid


# Scores per chunk of rows (chunk x k f32, 4 MiB): rows per chunk shrink as k grows, so the
# (k, chunk) score block stays cache- and memory-friendly whatever k is.
SCORE_BUDGET = 1 << 20


ITERS = 25  # Lloyd iterations of `kmeans` (and of the conversions that call it)
# Default rows per assignment chunk (fewer when SCORE_BUDGET / k is smaller, see `_rows`).
CHUNK_SIZE = 65536

# Largest k seeded by greedy k-means++ in `kmeans` (the digits recipe's k = 16 included).
GREEDY_MAX_K = 64

# Seeding reads at most this many rows per centroid (faiss trains on 256 per centroid by default):
# greedy k-means++ on all of a 1M-row set at k = 64 took 12.7 s, ~15 Lloyd steps, for no better SSE.
SEED_ROWS_PER_CENTROID = 256

# Lloyd stops once a step lowers the SSE by less than this fraction (0: always run `iters`).
# The steps it skips (of 25) gain <= 0.4% of SSE in all, and cost up to a third of the time at
# large k (benchmarks/kmeans_vs_faiss.py: the "own, tol=0" columns).
TOL = 5e-4


def _rows(chunk_size: int, k: int) -> int:
  """Rows per chunk: `chunk_size` at most, and at most SCORE_BUDGET / k (but >= 256)."""
  if chunk_size < 1:
    raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
  return min(chunk_size, max(256, SCORE_BUDGET // k))


def _check(x: jax.Array, k: int) -> None:
  if x.ndim != 2:
    raise ValueError(f"k-means expects x of shape (n, d), got {x.shape}")
  if k < 1:
    raise ValueError(f"k must be >= 1, got {k}")
  if x.shape[0] < k:
    raise ValueError(f"k-means needs at least k points: n={x.shape[0]} < k={k}")


def _scores(xb: jax.Array, lhs: jax.Array) -> jax.Array:
  """(k, b) scores ||c||^2 - 2 c.x by one matmul of lhs = `_score_lhs(c)` (k, d + 1) with [x, 1]:
  no second pass over the k x b block to add ||c||^2 (the add alone cost a third of a step)."""
  rhs = jnp.concatenate([xb, jnp.ones((xb.shape[0], 1), xb.dtype)], 1)
  return jnp.matmul(lhs, rhs.T, precision=lax.Precision.HIGHEST)


def _score_lhs(c: jax.Array, pad: int = 0) -> jax.Array:
  """[-2c, ||c||^2] (k + pad, d + 1); the `pad` extra rows score +inf against every x."""
  lhs = jnp.concatenate([-2.0 * c, jnp.sum(c * c, axis=1)[:, None]], 1)
  inf_rows = jnp.zeros((pad, lhs.shape[1]), lhs.dtype).at[:, -1].set(jnp.inf)
  return jnp.concatenate([lhs, inf_rows]) if pad else lhs


def _nearest_lhs(centroids: jax.Array) -> jax.Array:
  """`_score_lhs` of the centroids for `_nearest`: where `argmin_rows` groups, k is padded to whole
  groups by rows that never win. Built once per Lloyd step, outside the chunk loop."""
  return _score_lhs(centroids, argmin_group_padding(centroids.shape[0]))


def _nearest(xb: jax.Array, lhs: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Nearest centroid of each row of xb (b, d) given `_nearest_lhs`: (codes (b,) int32, min squared
  distance (b,)); the argmin is `argmin_rows` (ties to the lowest index, as `jnp.argmin`)."""
  code, best = argmin_rows(_scores(xb, lhs))
  return code, jnp.maximum(best + jnp.sum(xb * xb, axis=1), 0.0)


def _cluster_sums(xb, vb, codes, k: int):
  """(sum of the valid rows of xb per code (k, d), their count (k,)) of one chunk.

  A scatter-add on CPU (O(b d), sequential so deterministic); a one-hot matmul elsewhere (MXU/tensor
  core friendly, and free of the atomics that make GPU scatter-adds order-dependent).
  """
  w = vb.astype(xb.dtype)
  if jax.default_backend() == "cpu":
    sums = jax.ops.segment_sum(xb * w[:, None], codes, num_segments=k)
    return sums, jax.ops.segment_sum(w, codes, num_segments=k)
  onehot = (codes[:, None] == jnp.arange(k)[None, :]).astype(xb.dtype) * w[:, None]
  return jnp.matmul(onehot.T, xb, precision=lax.Precision.HIGHEST), jnp.sum(onehot, axis=0)


@functools.partial(jax.jit, static_argnames=("chunk_size",))
def assign(x: jax.Array, centroids: jax.Array, *, chunk_size: int = CHUNK_SIZE):
  """Nearest centroid per row, chunked: returns (codes (n,) int32, min squared distance (n,))."""
  n = x.shape[0]
  centroids = jnp.asarray(centroids, jnp.float32)
  xs, _ = chunk_rows(jnp.asarray(x, jnp.float32), _rows(chunk_size, centroids.shape[0]))
  lhs = _nearest_lhs(centroids)
  codes, mind = lax.map(lambda xb: _nearest(xb, lhs), xs)
  return codes.reshape(-1)[:n], mind.reshape(-1)[:n]


def _exact_sse(x: jax.Array, centroids: jax.Array, codes: jax.Array) -> jax.Array:
  diff = x - jnp.take(centroids, codes, axis=0)
  return jnp.sum(diff * diff)


def _step(x, xs, valid, centroids):
  """One Lloyd step on centered x; returns (new centroids, codes, sse of codes under centroids)."""
  n = x.shape[0]
  k, d = centroids.shape
  lhs = _nearest_lhs(centroids)

  def body(carry, inp):
    xb, vb = inp
    code, mind = _nearest(xb, lhs)
    sums, counts = _cluster_sums(xb, vb, code, k)
    return (carry[0] + sums, carry[1] + counts), (code, mind)

  init = (jnp.zeros((k, d), jnp.float32), jnp.zeros((k,), jnp.float32))
  (sums, counts), (codes, mind) = lax.scan(body, init, (xs, valid))
  codes, mind = codes.reshape(-1)[:n], mind.reshape(-1)[:n]
  # Repair: the r-th empty cluster is re-seeded at the r-th farthest point (distinct points). Those
  # points then cost 0, and means only lower the cost of non-empty clusters, so SSE never rises.
  empty = counts == 0
  means = sums / jnp.maximum(counts, 1.0)[:, None]

  def repair(means):  # top_k over n rows: only paid in the (rare) steps that need it
    _, far = lax.top_k(mind, k)
    rank = jnp.clip(jnp.cumsum(empty) - 1, 0, k - 1)
    return jnp.where(empty[:, None], jnp.take(x, far[rank], axis=0), means)

  new = lax.cond(jnp.any(empty), repair, lambda m: m, means)
  return new, codes, _exact_sse(x, centroids, codes)


@functools.partial(jax.jit, static_argnames=("chunk_size",))
def lloyd_step(x: jax.Array, centroids: jax.Array, *, chunk_size: int = CHUNK_SIZE):
  """One Lloyd step with empty-cluster repair: (new_centroids, codes, sse) for the input centroids."""
  x = jnp.asarray(x, jnp.float32)
  centroids = jnp.asarray(centroids, jnp.float32)
  _check(x, centroids.shape[0])
  mean = jnp.mean(x, axis=0)
  xc = x - mean
  xs, valid = chunk_rows(xc, _rows(chunk_size, centroids.shape[0]))
  new, codes, sse = _step(xc, xs, valid, centroids - mean)
  return new + mean, codes, sse


@functools.partial(jax.jit, static_argnames=("k", "chunk_size", "n_candidates"))
def kmeans_plusplus(
  x: jax.Array,
  k: int,
  *,
  key: jax.Array,
  chunk_size: int = CHUNK_SIZE,
  n_candidates: int | None = None,
) -> jax.Array:
  """Greedy k-means++ seeding (D^2 sampling of `n_candidates` points, keep the best); (k, d) f32.

  n_candidates defaults to 2 + floor(ln k); 1 gives plain k-means++.
  """
  x = jnp.asarray(x, jnp.float32)
  _check(x, k)
  n, d = x.shape
  num_cand = n_candidates if n_candidates is not None else 2 + int(math.log(k))
  xs, valid = chunk_rows(x, chunk_size)
  validf = valid.astype(jnp.float32)

  def dist_to(c):  # (num, chunk) squared distances to one point, exact (no cancellation)
    diff = xs - c
    return jnp.sum(diff * diff, axis=-1) * validf

  key0, key = jax.random.split(key)
  first = x[jax.random.randint(key0, (), 0, n)]
  d2 = dist_to(first)
  cents = jnp.zeros((k, d), jnp.float32).at[0].set(first)

  def add_one(i, state):
    cents, d2 = state
    cs = jnp.cumsum(d2.reshape(-1))
    u = jax.random.uniform(jax.random.fold_in(key, i), (num_cand,)) * cs[-1]
    idx = jnp.minimum(jnp.searchsorted(cs, u, side="right"), n - 1)
    cand = jnp.take(x, idx, axis=0)

    def pot(acc, inp):
      xb, db, vb = inp
      diff = xb[:, None, :] - cand[None, :, :]
      dist = jnp.minimum(jnp.sum(diff * diff, axis=-1), db[:, None]) * vb[:, None]
      return acc + jnp.sum(dist, axis=0), None

    pots, _ = lax.scan(pot, jnp.zeros((num_cand,), jnp.float32), (xs, d2, validf))
    best = cand[jnp.argmin(pots)]
    return cents.at[i].set(best), jnp.minimum(d2, dist_to(best))

  cents, _ = lax.fori_loop(1, k, add_one, (cents, d2))
  return cents


def _min_sq(xb: jax.Array, lhs: jax.Array) -> jax.Array:
  """min_j ||x_i - c_j||^2 (b,) by `_scores` (lhs = `_score_lhs(c)`), clamped at 0."""
  best = jnp.min(_scores(xb, lhs), axis=0)
  return jnp.maximum(best + jnp.sum(xb * xb, axis=1), 0.0)


def _round_sizes(k: int, rounds: int) -> list[int]:
  """Centres drawn per round after the first: k - 1 split into `rounds` near-equal parts."""
  rounds = max(1, min(rounds, k - 1))
  sizes = [(k - 1) // rounds + (r < (k - 1) % rounds) for r in range(rounds)]
  return [s for s in sizes if s > 0]  # k = 1: the first point only


def _draw(valid, d2, key, r, size: int) -> jax.Array:
  """Round r's `size` distinct rows (indices into x) drawn with probability ~ d2 (Gumbel top-k)."""
  noise = jax.random.gumbel(jax.random.fold_in(key, r), (d2.size,))
  logits = jnp.where(valid.reshape(-1), jnp.log(d2.reshape(-1)), -jnp.inf) + noise
  _, idx = lax.top_k(logits, size)
  return idx


def _rounds_loop(x, xs, valid, key, state, r0: int, rounds: int, size: int):
  """Rounds r0 .. r0 + rounds - 1 of `kmeans_parallel`, all of `size` points, as one loop: each
  draws (`_draw`), writes its row indices into the (k,) buffer at the carried offset, updates D^2."""

  def body(i, state):
    rows, d2, at = state
    idx = jnp.minimum(_draw(valid, d2, key, r0 + i, size), x.shape[0] - 1)
    lhs = _score_lhs(jnp.take(x, idx, axis=0))
    d2 = jnp.minimum(d2, lax.map(lambda xb: _min_sq(xb, lhs), xs) * valid)
    return lax.dynamic_update_slice(rows, idx, (at,)), d2, at + size

  return lax.fori_loop(0, rounds, body, state) if rounds else state


@functools.partial(jax.jit, static_argnames=("k", "rounds", "chunk_size"))
def kmeans_parallel(
  x: jax.Array, k: int, *, key: jax.Array, rounds: int = 16, chunk_size: int = CHUNK_SIZE
) -> jax.Array:
  """Batched D^2 seeding (k-means|| style): (k, d) f32 distinct data points.

  One uniform point, then `rounds` rounds each drawing ~k/rounds points without replacement with
  probability proportional to D^2 (Gumbel top-k on log D^2 + noise) and updating D^2 by one
  matmul per chunk. Cost ~ one Lloyd pass instead of greedy k-means++'s k sequential passes;
  with rounds >= k - 1 it is plain (non-greedy) k-means++. The rounds run as two loops (those of
  `_round_sizes`' larger size, then the others; the last drawn after them, no D^2 update), which
  compile ~3x faster than the rounds unrolled (benchmarks/kmeans_compile.py), same seeds.
  """
  x = jnp.asarray(x, jnp.float32)
  _check(x, k)
  n, d = x.shape
  xs, valid = chunk_rows(x, _rows(chunk_size, k))
  key0, key = jax.random.split(key)
  i0 = jax.random.randint(key0, (), 0, n)
  first = x[i0]
  sizes = _round_sizes(k, rounds)
  if not sizes:
    return first[None]
  d2 = lax.map(lambda xb: _min_sq(xb, _score_lhs(first[None])), xs) * valid
  big = sizes.count(sizes[0])  # the first rounds are one point larger, the rest equal
  state = (jnp.zeros((k - sizes[-1],), jnp.int32).at[0].set(i0), d2, jnp.int32(1))
  state = _rounds_loop(x, xs, valid, key, state, 0, min(big, len(sizes) - 1), sizes[0])
  state = _rounds_loop(x, xs, valid, key, state, big, max(0, len(sizes) - 1 - big), sizes[-1])
  rows, d2, _ = state
  last = jnp.minimum(_draw(valid, d2, key, len(sizes) - 1, sizes[-1]), n - 1)
  # Rows read inside a loop, as the rounds read them: a gather outside may fuse the caller's
  # centering (x - mean) into itself and round it differently (an FMA), an ulp off the seeds.
  return lax.map(lambda i: x[i], jnp.concatenate([rows, last]))


def seed_rows(x: jax.Array, k: int, key: jax.Array) -> jax.Array:
  """At most SEED_ROWS_PER_CENTROID * k distinct rows of x: one uniform row per equal stratum.

  Stratified, so O(sample) and without replacement (jax.random.choice(replace=False) sorts all n),
  and every part of x (rows come in order: layers, channels) is represented; the strata start at a
  random offset so that every row can be drawn.
  """
  n = x.shape[0]
  s = SEED_ROWS_PER_CENTROID * k
  if n <= s:
    return x
  stride = n // s
  start_key, key = jax.random.split(key)
  start = jax.random.randint(start_key, (), 0, n - s * stride + 1)
  idx = start + jnp.arange(s) * stride + jax.random.randint(key, (s,), 0, stride)
  return jnp.take(x, idx, axis=0)


def seed(x: jax.Array, k: int, *, key: jax.Array, chunk_size: int = CHUNK_SIZE) -> jax.Array:
  """`kmeans`'s own seeding, (k, d) f32 rows of x: greedy k-means++ up to GREEDY_MAX_K (its k
  sequential passes are cheap there and it seeds best), batched D^2 sampling above (~one pass),
  both on `seed_rows`."""
  sample_key, key = jax.random.split(key)
  xs = seed_rows(x, k, sample_key)
  fn = kmeans_plusplus if k <= GREEDY_MAX_K else kmeans_parallel
  return fn(xs, k, key=key, chunk_size=chunk_size)


@functools.partial(
  jax.jit, static_argnames=("k", "iters", "chunk_size", "return_history", "tol", "bounds")
)
def kmeans(
  x: jax.Array,
  k: int,
  *,
  key: jax.Array,
  iters: int = ITERS,
  chunk_size: int = CHUNK_SIZE,
  init: jax.Array | None = None,
  return_history: bool = False,
  tol: float = TOL,
  bounds: bool | None = None,
):
  """Seeding (`seed`, or `init` (k, d)), then up to `iters` Lloyd steps with empty-cluster repair.

  Lloyd stops after the first step that lowers the SSE by less than a fraction `tol` (tol = 0 runs
  all `iters`); the result is deterministic for a key.

  Returns KMeansResult, or (KMeansResult, sse_history (iters + 1,)) when return_history: entry t is
  the SSE of the assignment to the centroids after t steps (non-increasing; after a stop it repeats
  the last step's SSE); the last is `sse`.

  bounds: skip the rows whose code provably holds (`lloyd_bounds`: same codes, centroids and SSE);
  None turns it on from k = lloyd_bounds.FILTER_MIN_K, where it pays, when `iters` exceeds its
  lloyd_bounds.WARMUP plain steps (else the plain loop is the same steps, compiled alone).
  """
  from lr2vq_jax.core import lloyd_bounds  # noqa: PLC0415 (it builds on this module)

  x = jnp.asarray(x, jnp.float32)
  _check(x, k)
  mean = jnp.mean(x, axis=0)  # center for a better-conditioned ||x||^2 - 2x.c + ||c||^2
  xc = x - mean
  if tol < 0:
    raise ValueError(f"tol must be >= 0, got {tol}")
  if init is None:
    c0 = seed(xc, k, key=key, chunk_size=chunk_size)
  else:
    c0 = jnp.asarray(init, jnp.float32) - mean
  xs, valid = chunk_rows(xc, _rows(chunk_size, k))
  if bounds is None:  # its first WARMUP steps are plain ones: fewer steps need no bounded step
    bounds = lloyd_bounds.supported(k) and iters > lloyd_bounds.WARMUP
  if bounds and not lloyd_bounds.supported(k):
    raise ValueError(f"bounds=True needs lloyd_bounds.supported(k), got k={k}")
  if bounds:
    c, codes, history = lloyd_bounds.lloyd(xc, xs, valid, c0, iters, tol)
  else:
    c, history = _lloyd(xc, xs, valid, c0, iters, tol)
    codes, _ = assign(xc, c, chunk_size=chunk_size)
  sse = _exact_sse(xc, c, codes)
  result = KMeansResult(c + mean, codes, sse)
  if return_history:
    return result, jnp.concatenate([history, sse[None]])
  return result


def _stop_scan(step, state0, c0, iters: int, tol: float):
  """Up to `iters` Lloyd steps (step(c, state) -> (new, state, sse)), stopped after the first that
  gains < tol of the SSE (then the centroids and state stay, the history repeats the last SSE)."""

  def body(carry, _):
    c, state, prev, done = carry
    if tol == 0:
      new, state, sse = step(c, state)
    else:
      new, state, sse = lax.cond(done, lambda c, s: (c, s, prev), step, c, state)
    return (new, state, sse, done | (sse >= prev * (1.0 - tol))), sse

  init = (c0, state0, jnp.array(jnp.inf, jnp.float32), jnp.array(False))
  (c, state, _, _), history = lax.scan(body, init, None, length=iters)
  return c, state, history


def _lloyd(xc, xs, valid, c0, iters: int, tol: float):
  """Plain Lloyd loop: (centroids, sse history)."""

  def step(c, state):
    new, _, sse = _step(xc, xs, valid, c)
    return new, state, sse

  c, _, history = _stop_scan(step, (), c0, iters, tol)
  return c, history
