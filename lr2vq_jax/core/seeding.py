"""k-means seeding: greedy k-means++ (small k), batched D^2 sampling (k-means||, large k), both on a
stratified sample of at most SEED_ROWS_PER_CENTROID * k rows (`seed`, what `kmeans` runs).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from lr2vq_jax.core.scoring import (
  CHUNK_SIZE,
  check_points,
  chunk_rows,
  row_scores,
  rows_per_chunk,
  score_lhs,
)

# Largest k seeded by greedy k-means++ in `kmeans` (the digits recipe's k = 16 included).
GREEDY_MAX_K = 64

# Seeding reads at most this many rows per centroid (faiss trains on 256 per centroid by default):
# greedy k-means++ on all of a 1M-row set at k = 64 took 12.7 s, ~15 Lloyd steps, for no better SSE.
SEED_ROWS_PER_CENTROID = 256


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
  check_points(x, k)
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
  """min_j ||x_i - c_j||^2 (b,) by `row_scores` (lhs = `score_lhs(c)`), clamped at 0."""
  best = jnp.min(row_scores(xb, lhs), axis=1)
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
    lhs = score_lhs(jnp.take(x, idx, axis=0))
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
  check_points(x, k)
  n, d = x.shape
  key0, key = jax.random.split(key)
  i0 = jax.random.randint(key0, (), 0, n)
  first = x[i0]
  sizes = _round_sizes(k, rounds)
  if not sizes:
    return first[None]
  xs, valid = chunk_rows(x, rows_per_chunk(chunk_size, sizes[0]))  # a round scores sizes[0] at most
  d2 = lax.map(lambda xb: _min_sq(xb, score_lhs(first[None])), xs) * valid
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
