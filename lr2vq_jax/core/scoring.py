"""Rows in chunks and the one-matmul centroid scores that k-means, its seeding, its bounds and DKM
share: memory O(chunk * k + n * d), never n x k at once.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

# Default rows per assignment chunk (fewer when SCORE_BUDGET / k is smaller, see `rows_per_chunk`).
CHUNK_SIZE = 65536


# `chunk_layout(aligned=True)` (k-means) makes a chunk an odd multiple of this many rows: each row
# of a (k, chunk) score block starts on a whole 64-byte line, and rows 8 apart (what one step of the
# running argmin reads) are never a multiple of 4 KiB apart, where they share L1 sets. n = 2^18 rows
# at k = 256 made 4096-row chunks: the whole k-means call 7-13% slower than with 4112 rows.
ROW_ALIGN = 16


def chunk_layout(n: int, chunk_size: int, aligned: bool = False) -> tuple[int, int]:
  """Return (num_chunks, chunk) with num_chunks * chunk >= n and the least padding (aligned: the
  least with chunk an odd multiple of ROW_ALIGN)."""
  if chunk_size < 1:
    raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
  num = max(1, -(-n // chunk_size))
  chunk = -(-n // num)
  if aligned:
    lines = -(-chunk // ROW_ALIGN)
    chunk = ROW_ALIGN * (lines + 1 - lines % 2)
    num = max(1, -(-n // chunk))
  return num, chunk


def chunk_rows(x: jax.Array, chunk_size: int, aligned: bool = False) -> tuple[jax.Array, jax.Array]:
  """Zero-pad x (n, d) to (num_chunks, chunk, d) by `chunk_layout`; also return the (num_chunks,
  chunk) valid mask."""
  n = x.shape[0]
  num, chunk = chunk_layout(n, chunk_size, aligned)
  xp = jnp.pad(x, ((0, num * chunk - n), (0, 0)))
  valid = (jnp.arange(num * chunk) < n).reshape(num, chunk)
  return xp.reshape(num, chunk, x.shape[1]), valid


# Scores per chunk of rows (chunk x k f32, 4 MiB): rows per chunk shrink as k grows, so the
# (k, chunk) score block stays cache- and memory-friendly whatever k is.
SCORE_BUDGET = 1 << 20


def rows_per_chunk(chunk_size: int, k: int) -> int:
  """Rows per chunk: `chunk_size` at most, and at most SCORE_BUDGET / k (but >= 256)."""
  if chunk_size < 1:
    raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
  return min(chunk_size, max(256, SCORE_BUDGET // k))


def check_points(x: jax.Array, k: int) -> None:
  """ValueError unless x is (n, d) with n >= k >= 1."""
  if x.ndim != 2:
    raise ValueError(f"k-means expects x of shape (n, d), got {x.shape}")
  if k < 1:
    raise ValueError(f"k must be >= 1, got {k}")
  if x.shape[0] < k:
    raise ValueError(f"k-means needs at least k points: n={x.shape[0]} < k={k}")


def scores(xb: jax.Array, lhs: jax.Array) -> jax.Array:
  """(k, b) scores ||c||^2 - 2 c.x by one matmul of lhs = `score_lhs(c)` (k, d + 1) with [x, 1]:
  no second pass over the k x b block to add ||c||^2 (the add alone cost a third of a step)."""
  return jnp.matmul(lhs, _with_ones(xb).T, precision=lax.Precision.HIGHEST)


def row_scores(xb: jax.Array, lhs: jax.Array) -> jax.Array:
  """`scores` laid out (b, k): [x, 1] @ lhs.T. For a min alone (no argmin) over a few centroids:
  the min over the minor axis vectorizes, the (k, b) block's min over its major axis does not
  (seeding's D^2 pass of 16 centroids: 6x faster; of 256: 1.5x)."""
  return jnp.matmul(_with_ones(xb), lhs.T, precision=lax.Precision.HIGHEST)


def _with_ones(xb: jax.Array) -> jax.Array:
  """[x, 1] (b, d + 1): the side of the score matmul that meets `score_lhs`."""
  return jnp.concatenate([xb, jnp.ones((xb.shape[0], 1), xb.dtype)], 1)


def score_lhs(c: jax.Array, pad: int = 0) -> jax.Array:
  """[-2c, ||c||^2] (k + pad, d + 1); the `pad` extra rows score +inf against every x."""
  lhs = jnp.concatenate([-2.0 * c, jnp.sum(c * c, axis=1)[:, None]], 1)
  inf_rows = jnp.zeros((pad, lhs.shape[1]), lhs.dtype).at[:, -1].set(jnp.inf)
  return jnp.concatenate([lhs, inf_rows]) if pad else lhs
