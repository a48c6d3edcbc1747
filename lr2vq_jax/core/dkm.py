"""Differentiable k-means (DKM): soft assignments, a few centroid updates, soft reconstruction.

`dkm` streams the rows in chunks inside `lax.scan` with a `jax.checkpoint`-ed chunk body, so the
backward pass recomputes each chunk's n x k attention instead of storing it: memory grows like
n * d + k * d, not n * k * iters. `dkm_naive` is the straightforward reference (same math).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from lr2vq_jax.core.distances import compute_dtype, sq_distances
from lr2vq_jax.core.kmeans import chunk_rows

# A cluster whose total attention is at or below this keeps its previous centroid.
EMPTY_EPS = 1e-12


def _attention(z: jax.Array, c: jax.Array, tau: jax.Array) -> jax.Array:
  """Row softmax of -||z_i - c_j||^2 / tau in fp32, with the row max subtracted."""
  logits = -sq_distances(z, c) / tau
  logits = logits - lax.stop_gradient(jnp.max(logits, axis=1, keepdims=True))
  e = jnp.exp(logits)
  return e / jnp.sum(e, axis=1, keepdims=True)


def _update(num: jax.Array, den: jax.Array, prev: jax.Array) -> jax.Array:
  """c_j = num_j / den_j, or prev_j where den_j ~ 0 (an empty soft cluster)."""
  ok = den > EMPTY_EPS
  return jnp.where(ok[:, None], num / jnp.where(ok, den, 1.0)[:, None], prev)


def _prepare(z, centroids, tau):
  if z.ndim != 2 or centroids.ndim != 2 or z.shape[1] != centroids.shape[1]:
    raise ValueError(f"dkm expects z (n, d) and centroids (k, d); got {z.shape}, {centroids.shape}")
  dtype = compute_dtype(z, centroids, tau)  # fp32 (fp64 only for fp64 inputs)
  return jnp.asarray(z, dtype), jnp.asarray(centroids, dtype), jnp.asarray(tau, dtype)


@functools.partial(jax.jit, static_argnames=("iters",))
def dkm_naive(z: jax.Array, centroids: jax.Array, *, tau, iters: int = 3):
  """Reference DKM holding the full n x k attention: returns (z_soft (n, d), centroids (k, d))."""
  z32, c, tau32 = _prepare(z, centroids, tau)
  hp = lax.Precision.HIGHEST
  for _ in range(iters):
    a = _attention(z32, c, tau32)
    c = _update(jnp.matmul(a.T, z32, precision=hp), jnp.sum(a, axis=0), c)
  z_soft = jnp.matmul(_attention(z32, c, tau32), c, precision=hp)
  return z_soft.astype(z.dtype), c.astype(centroids.dtype)


@jax.checkpoint
def _chunk_sums(zb, vb, c, tau):
  """Partial sums (sum_i A_ij z_i, sum_i A_ij) over one chunk; padding rows masked by vb."""
  a = _attention(zb, c, tau) * vb[:, None].astype(zb.dtype)
  return jnp.matmul(a.T, zb, precision=lax.Precision.HIGHEST), jnp.sum(a, axis=0)


@jax.checkpoint
def _chunk_soft(zb, c, tau):
  return jnp.matmul(_attention(zb, c, tau), c, precision=lax.Precision.HIGHEST)


@functools.partial(jax.jit, static_argnames=("iters", "chunk_size"))
def dkm(z: jax.Array, centroids: jax.Array, *, tau, iters: int = 3, chunk_size: int = 4096):
  """Memory-bounded DKM, equal to `dkm_naive` in value and gradient (z, centroids, tau).

  for t < iters: A = softmax(-D(z, c)/tau); c = A^T z / A^T 1 (kept where A^T 1 ~ 0);
  then z_soft = softmax(-D(z, c)/tau) @ c. Returns (z_soft (n, d), centroids (k, d)) in the input
  dtypes; all math is fp32 (fp64 for fp64 inputs).
  """
  z32, c, tau32 = _prepare(z, centroids, tau)
  n = z32.shape[0]
  k, d = c.shape
  zs, valid = chunk_rows(z32, chunk_size)
  validf = valid.astype(z32.dtype)

  for _ in range(iters):

    def body(carry, inp, c=c):
      num, den = carry
      pn, pd = _chunk_sums(inp[0], inp[1], c, tau32)
      return (num + pn, den + pd), None

    init = (jnp.zeros((k, d), c.dtype), jnp.zeros((k,), c.dtype))
    (num, den), _ = lax.scan(body, init, (zs, validf))
    c = _update(num, den, c)

  def soft(_, zb, c=c):
    return None, _chunk_soft(zb, c, tau32)

  _, z_soft = lax.scan(soft, None, zs)
  z_soft = z_soft.reshape(-1, d)[:n]
  return z_soft.astype(z.dtype), c.astype(centroids.dtype)
