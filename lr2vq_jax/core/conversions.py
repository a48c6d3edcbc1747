"""One layer's mode conversions on plain arrays: what `convert` (linen variable dicts) and
`lr2vq_jax.nnx` (NNX kernels) both run, so the two front ends convert to the same numbers.

  lowrank_layer   rows X → z, projection (truncated SVD, exact at d̃ = m)          (LR²VQ step 2)
  quantize_layer  z → codebook (k-means++ / Lloyd), τ                             (LR²VQ step 3)
  freeze_layer    z, codebook, τ → refined codebook, hard codes (as evaluation)   (export / PQ tuning)
  pq_layer        rows X → codebook, projection I, codes (k-means on X)          (PQ / BGD baseline)
  dkm_layer       rows X → z = X, projection I (then quantize_layer)              (vanilla DKM)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from lr2vq_jax.core import codec, lowrank, subvectors
from lr2vq_jax.core import kmeans as kmeans_lib
from lr2vq_jax.core.kernel import refined_codebook, temperature


@functools.partial(jax.jit, static_argnames=("d",))
def _svd(x, d):
  return lowrank.svd_init(x.astype(jnp.float32), d)


def lowrank_layer(rows: jax.Array, d: int) -> tuple[jax.Array, jax.Array]:
  """(z (n, d̃), projection (d̃, m)) with Z·P the best rank-d̃ approximation of the rows."""
  return _svd(rows, d)


def quantize_layer(
  z: jax.Array, k: int, key: jax.Array, *, iters: int, tau_alpha: float
) -> tuple[jax.Array, jax.Array]:
  """(codebook (k', d̃), τ): k-means++/Lloyd on the rows of Z (k clamped to the rows), DKM's τ."""
  k = subvectors.clamp_k(k, z.shape[0])
  result = kmeans_lib.kmeans(z.astype(jnp.float32), k, key=key, iters=iters)
  return result.centroids, temperature(z, result.centroids, tau_alpha)


def freeze_layer(
  z: jax.Array, codebook: jax.Array, tau: jax.Array, *, dkm_iters, chunk_size: int, axis_name=None
) -> tuple[jax.Array, jax.Array]:
  """(refined codebook, int32 codes): the hard codes evaluation uses, fixed for good.

  `axis_name`: mesh axes the DKM refinement splits the rows of Z over (under a context mesh).
  """
  centroids = refined_codebook(
    z, codebook, tau, iters=dkm_iters, chunk_size=chunk_size, axis_name=axis_name
  )
  return centroids, codec.encode(z.astype(jnp.float32), centroids).astype(jnp.int32)


def pq_layer(
  rows: jax.Array, k: int, key: jax.Array, *, iters: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(codebook (k, m), projection I, int32 codes): product quantization of the raw rows."""
  result = kmeans_lib.kmeans(rows.astype(jnp.float32), k, key=key, iters=iters)
  m = rows.shape[1]
  return result.centroids, lowrank.identity_projection(m), result.codes.astype(jnp.int32)


def dkm_layer(rows: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(z = X, projection I): the low-rank mode of vanilla DKM (d̃ = m, no representation)."""
  return rows, lowrank.identity_projection(rows.shape[1])
