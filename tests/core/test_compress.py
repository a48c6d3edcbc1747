"""compress_tensor: PQ at d̃ = m, and the low-rank/clustering trade-off on rank-r data."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lr2vq_jax.core.compress import CompressedTensor, compress_tensor
from lr2vq_jax.core.kmeans import kmeans
from lr2vq_jax.core.lowrank import lowrank_error
from lr2vq_jax.core.subvectors import from_subvectors, to_subvectors
from tests.support.low_rank_data import SHAPE, SIGMA, K, M, N, R, low_rank_data


@pytest.fixture(scope="module")
def results():
  x = low_rank_data()
  w = from_subvectors(jnp.asarray(x), SHAPE)
  key = jax.random.key(0)
  out = {d: compress_tensor(w, k=K, m=M, d=d, key=key) for d in (R - 1, R, M)}
  return x, w, out


def _err(w, ct):
  return float(jnp.sum((ct.decompress() - w) ** 2))


def test_fields_shapes_and_bits(results):
  _, w, out = results
  ct = out[R]
  assert isinstance(ct, CompressedTensor)
  assert ct.codes.shape == (N,) and ct.codes.dtype == jnp.int32
  assert ct.codebook.shape == (K, R) and ct.projection.shape == (R, M)
  assert ct.shape == SHAPE and ct.decompress().shape == SHAPE
  assert (ct.n, ct.k, ct.m, ct.d) == (N, K, M, R)
  assert ct.num_bits() == N * 6 + 16 * (K * R + R * M)
  assert ct.num_bits("codebook") == N * 6 + 16 * K * M
  leaves, treedef = jax.tree.flatten(ct)
  assert len(leaves) == 3  # shape is static metadata
  again = jax.jit(lambda c: c.decompress())(jax.tree.unflatten(treedef, leaves))
  np.testing.assert_allclose(np.asarray(again), np.asarray(ct.decompress()), atol=1e-6)


def test_d_equal_m_is_plain_product_quantization(results):
  x, w, out = results
  pq = kmeans(jnp.asarray(x), K, key=jax.random.key(0))
  np.testing.assert_allclose(_err(w, out[M]), float(pq.sse), rtol=1e-3)
  p = np.asarray(out[M].projection)
  np.testing.assert_allclose(p @ p.T, np.eye(M), atol=1e-5)  # full orthonormal basis


def test_error_splits_into_lowrank_plus_clustering(results):
  x, w, out = results
  lr = np.asarray(lowrank_error(x))
  for d, ct in out.items():
    z = to_subvectors(w, M) @ ct.projection.T
    cluster = float(jnp.sum((z - ct.codebook[ct.codes]) ** 2))
    np.testing.assert_allclose(_err(w, ct), lr[d] + cluster, rtol=1e-3)


def test_rank_r_signal_tradeoff(results):
  x, w, out = results
  lr = np.asarray(lowrank_error(x))
  err = {d: _err(w, ct) for d, ct in out.items()}
  cluster = {d: err[d] - lr[d] for d in out}
  noise = N * (M - R) * SIGMA**2
  # Below r a signal direction is dropped: the error is dominated by it (~N per direction).
  assert lr[R - 1] > 0.8 * N
  # At d̃ = r the low-rank error is just the noise, and the total drops sharply.
  assert abs(lr[R] - noise) < 0.15 * noise
  assert err[R] < 0.3 * err[R - 1]
  # Clustering error grows with d̃: k centroids spread over more dimensions.
  assert cluster[R - 1] < 0.2 * cluster[R]
  assert cluster[M] > 3 * cluster[R]
  # Beyond r nothing is gained: the extra directions are noise that k centroids cannot capture.
  assert err[M] > 0.9 * err[R]


def test_k_larger_than_n():
  w = jnp.zeros((8, 4))
  with pytest.raises(ValueError, match="clamp_k"):
    compress_tensor(w, k=64, m=4, key=jax.random.key(0))
