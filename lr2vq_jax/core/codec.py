"""Hard encoding/decoding against a codebook, and exact bit packing of codes for export.

Bit layout of `pack_codes` (little-endian throughout): with b = bits_per_code(k), code i occupies
stream bits [i*b, (i+1)*b), least-significant bit first, and stream bit j is bit (j % 8) of byte
j // 8 (bit 0 = LSB). The last byte's unused high bits are zero. Length is ceil(n*b/8) bytes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lr2vq_jax.core.kmeans import CHUNK_SIZE, assign

MAX_K = 65536


def encode(x: jax.Array, codebook: jax.Array, *, chunk_size: int = CHUNK_SIZE) -> jax.Array:
  """Index of the nearest codeword for each row of x (n, d): (n,) int32, chunked over n."""
  codes, _ = assign(x, jnp.asarray(codebook, jnp.float32), chunk_size=chunk_size)
  return codes


def decode(codes: jax.Array, codebook: jax.Array) -> jax.Array:
  """codebook[codes]: rows of the codebook selected by the codes."""
  return jnp.take(codebook, codes, axis=0)


def bits_per_code(k: int) -> int:
  """ceil(log2 k), at least 1: the bits one code needs."""
  k = int(k)
  if k < 1:
    raise ValueError(f"k must be >= 1, got {k}")
  return max(1, (k - 1).bit_length())


def _check_k(k) -> int:
  if isinstance(k, bool) or int(k) != k or not 2 <= int(k) <= MAX_K:
    raise ValueError(f"k must be an integer in [2, {MAX_K}], got {k!r}")
  return int(k)


def packed_size(n: int, k: int) -> int:
  """Bytes `pack_codes` produces for n codes of k values: ceil(n * bits_per_code(k) / 8)."""
  return -(-int(n) * bits_per_code(k) // 8)


def pack_codes(codes: np.ndarray, k: int) -> np.ndarray:
  """Pack integer codes in [0, k) (any shape, C order) into uint8 of exactly ceil(n*bits/8) bytes."""
  k = _check_k(k)
  codes = np.asarray(codes)
  if codes.dtype.kind not in "iu":
    raise ValueError(f"codes must have an integer dtype, got {codes.dtype}")
  flat = codes.reshape(-1).astype(np.int64)
  if flat.size and (flat.min() < 0 or flat.max() >= k):
    raise ValueError(f"codes out of range [0, {k}): min {flat.min()}, max {flat.max()}")
  b = bits_per_code(k)
  bits = ((flat[:, None] >> np.arange(b, dtype=np.int64)) & 1).astype(np.uint8)
  return np.packbits(bits.reshape(-1), bitorder="little")


def unpack_codes(packed: np.ndarray, n: int, k: int) -> np.ndarray:
  """Inverse of `pack_codes`: (n,) int32 codes; validates length, padding bits and range."""
  k = _check_k(k)
  n = int(n)
  if n < 0:
    raise ValueError(f"n must be >= 0, got {n}")
  packed = np.asarray(packed)
  if packed.dtype != np.uint8 or packed.ndim != 1:
    raise ValueError(f"packed must be a 1-D uint8 array, got {packed.dtype} {packed.shape}")
  if packed.size != packed_size(n, k):
    raise ValueError(f"packed has {packed.size} bytes; {n} codes of k={k} need {packed_size(n, k)}")
  b = bits_per_code(k)
  bits = np.unpackbits(packed, bitorder="little")
  if bits[n * b :].any():
    raise ValueError("nonzero padding bits after the last code")
  weights = (1 << np.arange(b, dtype=np.int64)).astype(np.int64)
  codes = bits[: n * b].reshape(n, b).astype(np.int64) @ weights
  if codes.size and codes.max() >= k:
    raise ValueError(f"decoded code {codes.max()} out of range [0, {k})")
  return codes.astype(np.int32)
