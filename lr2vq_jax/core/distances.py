"""Pairwise squared Euclidean distances via a matmul, always in float32."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def compute_dtype(*arrays) -> jnp.dtype:
  """float32, or float64 when an input is float64 (never below fp32)."""
  return jnp.result_type(jnp.float32, *(jnp.asarray(a).dtype for a in arrays))


def sq_distances(x: jax.Array, c: jax.Array) -> jax.Array:
  """Return the (n, k) matrix ||x_i - c_j||^2 for x (n, d) and c (k, d), in float32.

  Uses ||x||^2 - 2 x.c + ||c||^2 (one matmul, no (n, k, d) temporary), computed in fp32 even for
  bf16 inputs (float64 inputs stay float64, for gradient checks), clamped at 0 against round-off.
  """
  dtype = compute_dtype(x, c)
  x = jnp.asarray(x, dtype)
  c = jnp.asarray(c, dtype)
  if x.ndim != 2 or c.ndim != 2 or x.shape[1] != c.shape[1]:
    raise ValueError(f"sq_distances expects x (n, d) and c (k, d); got {x.shape} and {c.shape}")
  xx = jnp.sum(x * x, axis=1, keepdims=True)
  cc = jnp.sum(c * c, axis=1)
  xc = jnp.matmul(x, c.T, precision=jax.lax.Precision.HIGHEST)
  return jnp.maximum(xx - 2.0 * xc + cc, 0.0)
