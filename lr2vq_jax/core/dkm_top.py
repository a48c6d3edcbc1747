"""Top-t DKM chunks: each row's attention restricted to its t nearest centroids.

At the temperatures LR²VQ trains with, a row's DKM attention is nearly one-hot: almost all of its
mass sits on a few nearest centroids. So the n x k distances are computed once per forward pass
(one matmul, no gradient: `nearest`, in bf16 with fp32 accumulation off CPU) to pick each row's t
nearest centroids, and every soft assignment of that pass (the centroid updates and the final
z_soft) is a softmax over those t only: n x t exponentials instead of n x k per pass, and the
backward pass never recomputes an n x k matrix. With t = k the neighbour set is every centroid and
the result equals full DKM (value and gradient, up to summation order).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.ad_checkpoint import checkpoint_name

# Distances only rank the centroids here (exact fp32 distances are recomputed over the t chosen),
# so off CPU they run in bf16 with fp32 accumulation: half the bytes of the one n x k pass. On CPU
# the bf16 ranking measured slower than fp32 (benchmarks/results/step_time_top_t.txt): fp32 there.
SELECT_DTYPE = {"cpu": jnp.float32}
DEFAULT_SELECT_DTYPE = jnp.bfloat16
# The chunks' backward pass recomputes the cheap gathers and distances but keeps the exponentials
# (n x t per pass, small next to the n x t x d̃ gathered centroids): each is computed once per pass.
SAVED = "dkm_top_exp"


def select_dtype(backend: str | None = None):
  """dtype of the ranking matmul on `backend` (default: JAX's default backend)."""
  return SELECT_DTYPE.get(backend or jax.default_backend(), DEFAULT_SELECT_DTYPE)


def nearest(zb: jax.Array, c: jax.Array, t: int, dtype=None) -> jax.Array:
  """(rows, t) int32 indices of each row's t nearest centroids (no gradient).

  Ranks by ||c_j||^2 - 2 z_i.c_j (||z_i||^2 is the same for all j of a row): one matmul in
  `dtype` (None: `select_dtype()`) accumulated in fp32. `lax.approx_max_k` on TPU (its fast
  partial reduction), an exact `lax.top_k` elsewhere.
  """
  zb, c = lax.stop_gradient(zb), lax.stop_gradient(c)
  dtype = select_dtype() if dtype is None else dtype
  cross = jnp.matmul(
    zb.astype(dtype),
    c.T.astype(dtype),
    precision=lax.Precision.HIGHEST,
    preferred_element_type=jnp.float32,
  )
  score = 2.0 * cross - jnp.sum(c.astype(jnp.float32) ** 2, axis=1)  # larger = nearer
  if jax.default_backend() == "tpu":
    _, idx = lax.approx_max_k(score, t)
  else:
    _, idx = lax.top_k(score, t)
  return idx.astype(jnp.int32)


def attention(zb: jax.Array, cg: jax.Array, tau: jax.Array) -> jax.Array:
  """Softmax over the t gathered centroids cg (rows, t, d) of -||z_i - c||^2 / tau, row max out."""
  logits = -jnp.sum((zb[:, None, :] - cg) ** 2, axis=-1) / tau
  logits = logits - lax.stop_gradient(jnp.max(logits, axis=1, keepdims=True))
  e = checkpoint_name(jnp.exp(logits), SAVED)
  return e / jnp.sum(e, axis=1, keepdims=True)


_remat = functools.partial(
  jax.checkpoint, policy=jax.checkpoint_policies.save_only_these_names(SAVED)
)


@_remat
def chunk_sums(zb, vb, nb, c, tau):
  """Partial sums (sum_i A_ij z_i, sum_i A_ij) of one chunk over its rows' neighbours nb."""
  k, d = c.shape
  a = attention(zb, c[nb], tau) * vb[:, None].astype(zb.dtype)  # (rows, t)
  flat = nb.reshape(-1)
  num = jax.ops.segment_sum((a[..., None] * zb[:, None, :]).reshape(-1, d), flat, num_segments=k)
  return num, jax.ops.segment_sum(a.reshape(-1), flat, num_segments=k)


@_remat
def chunk_soft(zb, nb, c, tau):
  """z_soft of one chunk: each row's attention-weighted mean of its neighbours."""
  cg = c[nb]
  return jnp.einsum("rt,rtd->rd", attention(zb, cg, tau), cg, precision=lax.Precision.HIGHEST)


def dropped_mass(z: jax.Array, c: jax.Array, tau, t: int, ranked_by=None) -> jax.Array:
  """Per row, the full attention mass over centroids c outside the row's t nearest centroids of
  `ranked_by` (default c; the input centroids when c are DKM's refined ones): a diagnostic."""
  z, c = jnp.asarray(z, jnp.float32), jnp.asarray(c, jnp.float32)
  logits = -jnp.sum((z[:, None, :] - c[None]) ** 2, axis=-1) / tau
  a = jax.nn.softmax(logits, axis=1)
  ranked_by = c if ranked_by is None else jnp.asarray(ranked_by, jnp.float32)
  kept = jnp.take_along_axis(a, nearest(z, ranked_by, t, jnp.float32), axis=1)
  return jnp.maximum(1.0 - jnp.sum(kept, axis=1), 0.0)
