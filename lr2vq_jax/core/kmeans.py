"""Chunked, jittable k-means: k-means++ or batched D^2 seeding, Lloyd iterations, repairs.

Distances are computed over chunks of rows (padded, with the padding masked), so memory is
O(chunk * k + n * d) and never n x k at once: per chunk one matmul of [-2c, ||c||^2] with [x, 1]
and an exact grouped argmin (`distances.argmin_rows`). Seeding reads a stratified sample of at most
SEED_ROWS_PER_CENTROID * k rows; Lloyd stops once an iteration gains less than `tol` of the SSE.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from lr2vq_jax.core.distances import argmin_group_padding, argmin_rows
from lr2vq_jax.core.scoring import (
  CHUNK_SIZE,
  check_points,
  chunk_rows,
  rows_per_chunk,
  score_lhs,
  scores,
)
from lr2vq_jax.core.seeding import seed


class KMeansResult(NamedTuple):
  """Result of `kmeans`: centroids (k, d) f32, codes (n,) int32, sse () f32 of the final codes."""

  centroids: jax.Array
  codes: jax.Array
  sse: jax.Array


ITERS = 25  # Lloyd iterations of `kmeans` (and of the conversions that call it)

# Lloyd stops once a step lowers the SSE by less than this fraction (0: always run `iters`).
# The steps it skips (of 25) gain <= 0.4% of SSE in all, and cost up to a third of the time at
# large k (benchmarks/kmeans_vs_faiss.py: the "own, tol=0" columns).
TOL = 5e-4


def _nearest_lhs(centroids: jax.Array) -> jax.Array:
  """`score_lhs` of the centroids for `_nearest`: where `argmin_rows` groups, k is padded to whole
  groups by rows that never win. Built once per Lloyd step, outside the chunk loop."""
  return score_lhs(centroids, argmin_group_padding(centroids.shape[0]))


def _nearest(xb: jax.Array, lhs: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Nearest centroid of each row of xb (b, d) given `_nearest_lhs`: (codes (b,) int32, min squared
  distance (b,)); the argmin is `argmin_rows` (ties to the lowest index, as `jnp.argmin`)."""
  code, best = argmin_rows(scores(xb, lhs))
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


def _chunks(x: jax.Array, k: int, chunk_size: int) -> tuple[jax.Array, jax.Array]:
  """`chunk_rows` of x for k centroids: `rows_per_chunk` rows at most, aligned (scoring.ROW_ALIGN)."""
  return chunk_rows(x, rows_per_chunk(chunk_size, k), aligned=True)


@functools.partial(jax.jit, static_argnames=("chunk_size",))
def assign(x: jax.Array, centroids: jax.Array, *, chunk_size: int = CHUNK_SIZE):
  """Nearest centroid per row, chunked: returns (codes (n,) int32, min squared distance (n,))."""
  n = x.shape[0]
  centroids = jnp.asarray(centroids, jnp.float32)
  xs, _ = _chunks(jnp.asarray(x, jnp.float32), centroids.shape[0], chunk_size)
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
  check_points(x, centroids.shape[0])
  mean = jnp.mean(x, axis=0)
  xc = x - mean
  xs, valid = _chunks(xc, centroids.shape[0], chunk_size)
  new, codes, sse = _step(xc, xs, valid, centroids - mean)
  return new + mean, codes, sse


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
  check_points(x, k)
  mean = jnp.mean(x, axis=0)  # center for a better-conditioned ||x||^2 - 2x.c + ||c||^2
  xc = x - mean
  if tol < 0:
    raise ValueError(f"tol must be >= 0, got {tol}")
  if init is None:
    c0 = seed(xc, k, key=key, chunk_size=chunk_size)
  else:
    c0 = jnp.asarray(init, jnp.float32) - mean
  xs, valid = _chunks(xc, k, chunk_size)
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
