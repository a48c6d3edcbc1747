"""Kernels <-> subvector matrices X (n, m) in PyTorch/PQF order, and the centroid clamp.

Flax layouts come in: Conv (*spatial, C_in, C_out) (HWIO) and Dense (C_in, C_out). Both are put in
PyTorch order first, OIHW resp. (C_out, C_in), viewed as C_out rows of length C_in·K·K (resp. C_in),
and every row is cut into contiguous blocks of m. This is PQF's `reshape(c_out, -1)` followed by
`reshape(-1, m)`, which is what makes the published model sizes reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np


class SubvectorError(ValueError):
  """A kernel cannot be cut into subvectors of the requested length."""


def _xp(a):
  """numpy for numpy inputs (export/decode code stays in numpy), jax.numpy otherwise."""
  return np if isinstance(a, np.ndarray) else jnp


def _check_shape(shape: Sequence[int]) -> tuple[int, ...]:
  shape = tuple(int(s) for s in shape)
  if len(shape) < 2:
    raise SubvectorError(f"kernel shape {shape}: need ndim >= 2 (Dense (in, out) or Conv HWIO)")
  return shape


def row_length(shape: Sequence[int]) -> int:
  """Length of one PyTorch weight row: C_in for Dense (in, out), C_in·prod(spatial) for Conv."""
  shape = _check_shape(shape)
  return math.prod(shape[:-1])


def _divisors(x: int, limit: int = 64) -> list[int]:
  return [q for q in range(1, min(x, limit) + 1) if x % q == 0]


def num_subvectors(shape: Sequence[int], m: int) -> int:
  """n = C_out · row_length / m; raises SubvectorError when m does not divide the row length."""
  shape = _check_shape(shape)
  length = row_length(shape)
  if m < 1 or length % m:
    what = "C_in" if len(shape) == 2 else "C_in·K·K"
    raise SubvectorError(
      f"cannot cut a kernel of shape {shape} into subvectors of m={m}: the row length "
      f"{length} ({what}) is not a multiple of m; divisors up to 64: {_divisors(length)}"
    )
  return shape[-1] * length // m


def to_subvectors(kernel, m: int):
  """X (n, m): kernel rows in PyTorch order (C_out × C_in·K·K), cut into contiguous blocks of m."""
  xp = _xp(kernel)
  kernel = xp.asarray(kernel)
  n = num_subvectors(kernel.shape, m)
  # (*spatial, in, out) -> (out, in, *spatial) = OIHW; Dense (in, out) -> (out, in).
  perm = (kernel.ndim - 1, kernel.ndim - 2, *range(kernel.ndim - 2))
  return xp.reshape(xp.transpose(kernel, perm), (n, m))


def from_subvectors(x, shape: Sequence[int]):
  """Exact inverse of `to_subvectors`: X (n, m) back to a Flax kernel of `shape`."""
  shape = _check_shape(shape)
  xp = _xp(x)
  x = xp.asarray(x)
  if x.ndim != 2 or x.size != math.prod(shape):
    raise SubvectorError(f"X of shape {x.shape} does not hold a kernel of shape {shape}")
  num_subvectors(shape, x.shape[1])
  torch_shape = (shape[-1], shape[-2], *shape[:-2])
  ndim = len(shape)
  perm = (*range(2, ndim), 1, 0)  # (out, in, *spatial) -> (*spatial, in, out)
  return xp.transpose(xp.reshape(x, torch_shape), perm)


def clamp_k(k: int, n: int) -> int:
  """Centroids actually used: min(k, 2^floor(log2(n/4))) (PQF/BGD); needs n >= 8 so that k >= 2."""
  if n < 8:
    raise ValueError(f"a layer with n={n} subvectors is too small to quantize (need n >= 8)")
  # floor(log2(n/4)) == floor(log2(floor(n/4))) because powers of two are integers.
  return min(int(k), 1 << ((n // 4).bit_length() - 1))
