"""Low-rank representation X ≈ Z·P by truncated SVD, and the Eckart–Young error curve."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def identity_projection(m: int) -> jax.Array:
  """P = I (m × m, float32): the projection at d̃ = m (PQ, vanilla DKM). Made on the host: an eager
  `jnp.eye` runs five one-op XLA programs per call."""
  return jnp.asarray(np.eye(m, dtype=np.float32))


def svd_init(x: jax.Array, d: int) -> tuple[jax.Array, jax.Array]:
  """(Z (n, d), P (d, m)) with Z = U_d Σ_d, P = V_dᵀ: Z·P is the best rank-d approximation of x.

  P has orthonormal rows; when d exceeds min(n, m) (the largest possible rank) the extra rows of P still complete an
  orthonormal set and the matching columns of Z are zero. Computed in float32.
  """
  x = jnp.asarray(x, jnp.float32)
  if x.ndim != 2:
    raise ValueError(f"svd_init expects x of shape (n, m), got {x.shape}")
  n, m = x.shape
  if not 1 <= d <= m:
    raise ValueError(f"svd_init: d={d} must be between 1 and m={m}")
  if d <= min(n, m):
    u, s, vt = jnp.linalg.svd(x, full_matrices=False)
    return u[:, :d] * s[:d], vt[:d]
  u, s, vt = jnp.linalg.svd(x, full_matrices=True)  # n < d <= m: pad Z with zero columns
  z = jnp.concatenate([u[:, :n] * s, jnp.zeros((n, d - n), jnp.float32)], axis=1)
  return z, vt[:d]


def singular_values(x: jax.Array) -> jax.Array:
  """σ_1 ≥ … ≥ σ_m of x (n, m), zero-padded to length m when n < m; float32.

  full_matrices=False: with the default, XLA:CPU's SVD allocates an n x n buffer even without U
  (65 GB for the ResNet-18 fc layer's 128k rows); the values are the same bits either way."""
  x = jnp.asarray(x, jnp.float32)
  s = jnp.linalg.svd(x, compute_uv=False, full_matrices=False)
  return jnp.pad(s, (0, x.shape[1] - s.shape[0]))


def lowrank_error(x: jax.Array) -> jax.Array:
  """(m+1,) float32, err[d] = Σ_{i>d} σ_i² = min over rank-d X̂ of ‖X − X̂‖_F²; err[m] == 0.

  Summed from the tail, so err is exactly non-increasing and exactly zero at d = m.
  """
  s2 = jnp.square(singular_values(x))
  tail = jnp.cumsum(s2[::-1])[::-1]
  return jnp.concatenate([tail, jnp.zeros((1,), jnp.float32)])
