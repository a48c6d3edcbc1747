"""Post-training (data-free) LR²VQ of one kernel: SVD to d̃ dimensions, then k-means on Z.

With d̃ = m the projection is a full orthonormal basis, distances are unchanged, and this is plain
product quantization (k-means on the raw subvectors, up to float rounding).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from lr2vq_jax.core import codec, lowrank, subvectors
from lr2vq_jax.core import kmeans as kmeans_lib
from lr2vq_jax.core.accounting import table_bytes
from lr2vq_jax.core.kmeans import kmeans


@dataclasses.dataclass(frozen=True)
class CompressedTensor:
  """codes (n,) int32, codebook C (k, d̃), projection P (d̃, m), kernel shape (static pytree field)."""

  codes: jax.Array
  codebook: jax.Array
  projection: jax.Array
  shape: tuple[int, ...]

  @property
  def k(self) -> int:
    return self.codebook.shape[0]

  @property
  def d(self) -> int:
    return self.codebook.shape[1]

  @property
  def m(self) -> int:
    return self.projection.shape[1]

  @property
  def n(self) -> int:
    return self.codes.shape[0]

  def __repr__(self) -> str:
    shape = "x".join(map(str, self.shape))
    return (
      f"CompressedTensor(shape {shape}: n={self.n} subvectors of m={self.m}, k={self.k} "
      f"centroids in d̃={self.d}, {self.num_bits('codebook')} bits stored as C·P, "
      f"{self.num_bits('factored')} as C and P)"
    )

  def decompress(self) -> jax.Array:
    """The kernel W ≈ from_subvectors(C[a]·P, shape), float32."""
    rows = jnp.take(self.codebook, self.codes, axis=0) @ self.projection
    return subvectors.from_subvectors(rows, self.shape)

  def num_bits(self, store: str = "factored") -> int:
    """n·ceil(log2 k) code bits + fp16 tables: 16·(k·d̃ + d̃·m) for C and P ("factored", default)
    or 16·k·m for the merged codebook C·P ("codebook", the PQF-convention figure)."""
    return self.n * codec.bits_per_code(self.k) + 8 * table_bytes(self.k, self.m, self.d, store)


jax.tree_util.register_dataclass(
  CompressedTensor, data_fields=["codes", "codebook", "projection"], meta_fields=["shape"]
)


def compress_tensor(
  w: jax.Array,
  *,
  k: int,
  m: int,
  d: int | None = None,
  key: jax.Array,
  iters: int = kmeans_lib.ITERS,
) -> CompressedTensor:
  """to_subvectors(w, m) -> SVD init (Z, P) with d̃ = d (None: m) -> k-means++/Lloyd on Z.

  k is used as given (apply `subvectors.clamp_k` first for the PQF clamp); needs n >= k.
  """
  x = subvectors.to_subvectors(jnp.asarray(w, jnp.float32), m)
  d = m if d is None else int(d)
  if k > x.shape[0]:
    raise ValueError(
      f"k={k} centroids for only n={x.shape[0]} subvectors; use clamp_k(k, n)={_clamp(k, x)}"
    )
  z, p = lowrank.svd_init(x, d)
  result = kmeans(z, k, key=key, iters=iters)
  return CompressedTensor(result.codes, result.centroids, p, tuple(int(s) for s in w.shape))


def _clamp(k: int, x) -> int | str:
  try:
    return subvectors.clamp_k(k, x.shape[0])
  except ValueError:
    return "n/a (too few subvectors)"
