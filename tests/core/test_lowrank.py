"""SVD init is the best rank-d approximation; the error curve is Eckart–Young's."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lr2vq_jax.core.lowrank import lowrank_error, singular_values, svd_init


def _x(n=200, m=9, seed=0):
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.normal(size=(n, m)) * np.linspace(3, 0.1, m), jnp.float32)


def test_error_curve_shape_and_ends():
  x = _x()
  err = np.asarray(lowrank_error(x))
  assert err.shape == (10,)
  assert err[-1] == 0.0
  np.testing.assert_allclose(err[0], float(jnp.sum(x * x)), rtol=1e-5)
  assert np.all(np.diff(err) <= 0)


@pytest.mark.parametrize("d", [1, 3, 9])
def test_svd_init_is_best_rank_d(d):
  x = _x()
  z, p = svd_init(x, d)
  assert z.shape == (200, d) and p.shape == (d, 9)
  np.testing.assert_allclose(np.asarray(p @ p.T), np.eye(d), atol=1e-5)
  resid = float(jnp.sum((x - z @ p) ** 2))
  np.testing.assert_allclose(resid, float(lowrank_error(x)[d]), rtol=1e-3, atol=1e-3)
  # Z is the projection of X on P's rows (what k-means clusters).
  np.testing.assert_allclose(np.asarray(z), np.asarray(x @ p.T), atol=1e-4)


def test_d_equal_m_is_exact_and_rank_deficient_input():
  x = _x(n=5, m=8)  # n < m: zero-padded Z, still an orthonormal P
  z, p = svd_init(x, 8)
  np.testing.assert_allclose(np.asarray(z @ p), np.asarray(x), atol=1e-5)
  np.testing.assert_allclose(np.asarray(p @ p.T), np.eye(8), atol=1e-5)
  assert singular_values(x).shape == (8,)
  assert float(lowrank_error(x)[5]) < 1e-8


def test_bad_d():
  with pytest.raises(ValueError, match="d=0"):
    svd_init(_x(), 0)
  with pytest.raises(ValueError, match="d=10"):
    svd_init(_x(), 10)


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 40), st.integers(1, 6), st.integers(0, 1000))
def test_error_curve_property(n, m, seed):
  x = np.random.default_rng(seed).normal(size=(n, m)).astype(np.float32)
  err = np.asarray(lowrank_error(x))
  assert err.shape == (m + 1,) and err[m] == 0 and np.all(np.diff(err) <= 0)
  s2 = np.linalg.svd(x.astype(np.float64), compute_uv=False) ** 2
  np.testing.assert_allclose(err[: len(s2)], np.cumsum(s2[::-1])[::-1], rtol=1e-4, atol=1e-4)


def test_error_curve_of_a_tall_layer_needs_no_n_by_n_buffer():
  """The ResNet-18 fc layer has 128k rows of m = 4: an n x n buffer would be 65 GB. Checked on the
  compiled program's own memory analysis (40k rows: 6.4 GB with the buffer, ~1 MB without)."""
  x = jax.ShapeDtypeStruct((40_000, 4), jnp.float32)
  temp = jax.jit(lowrank_error).lower(x).compile().memory_analysis().temp_size_in_bytes
  assert temp < 40_000 * 4 * 4 * 8, temp  # a few copies of x at most
