"""Tests for the grouped argmin of k-means' assignment and the padded, augmented score matmul."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lr2vq_jax.core.distances import ARGMIN_GROUP, ARGMIN_GROUPED_MIN_K, argmin_rows
from lr2vq_jax.core.kmeans import assign, lloyd_step

# (group, min_k): the default grouping, and groups of 8 and of 16 at every k they divide (k >= 4 group).
CONFIGS = ((ARGMIN_GROUP, ARGMIN_GROUPED_MIN_K), (8, 0), (16, 0))


@jax.jit
def _argmin_all(scores):
  """argmin_rows of scores under every CONFIGS entry: one program per k, not one per (k, config)."""
  return [argmin_rows(scores, group=g, min_k=m) for g, m in CONFIGS]


@pytest.mark.parametrize("k", [1, 3, 64, 127, 128, 160, ARGMIN_GROUPED_MIN_K + 1, 1024])
def test_argmin_rows_equals_jnp_argmin_with_ties(k):
  rng = np.random.default_rng(k)
  # Small integers: most columns hold their minimum several times, across and within groups.
  scores = rng.integers(0, 4, size=(k, 257)).astype(np.float32)
  scores[:, 0], scores[-1, 1] = 7.0, -1.0  # all tied; the minimum in the last row
  for config, (code, best) in zip(CONFIGS, _argmin_all(scores), strict=True):
    assert code.dtype == jnp.int32 and code.shape == (257,), config
    np.testing.assert_array_equal(np.asarray(code), scores.argmin(0), err_msg=str(config))
    np.testing.assert_array_equal(np.asarray(best), scores.min(0), err_msg=str(config))
    assert int(code[0]) == 0 and int(code[1]) == k - 1, config


@pytest.mark.parametrize("k", [130, ARGMIN_GROUPED_MIN_K + 2])
def test_assign_is_exact_and_breaks_ties_low_at_any_k(k):
  # Integer points and centroids: every score is exact in fp32, so ties are exact too; each centroid
  # appears twice (first copy must win); the larger k is grouped and padded to whole groups.
  rng = np.random.default_rng(k)
  x = rng.integers(-8, 9, size=(1000, 3)).astype(np.float32)
  base = rng.permutation(np.stack(np.meshgrid(*[np.arange(-8, 9)] * 3), -1).reshape(-1, 3))[
    : k // 2
  ]
  base = base.astype(np.float32)
  c = np.vstack([base, base[::-1]])
  want = ((x[:, None].astype(np.float64) - c[None]) ** 2).sum(-1)
  codes, mind = assign(x, c, chunk_size=300)
  np.testing.assert_array_equal(np.asarray(codes), want.argmin(1))
  np.testing.assert_array_equal(np.asarray(mind), want.min(1))
  assert int(np.asarray(codes).max()) < k


def test_lloyd_step_at_grouped_k_matches_numpy():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(3000, 5)).astype(np.float32)
  c = x[rng.choice(3000, 600, replace=False)]
  new, codes, sse = lloyd_step(x, c, chunk_size=1024)
  d2 = ((x[:, None].astype(np.float64) - c[None]) ** 2).sum(-1)
  want = d2.argmin(1)
  gap = np.sort(d2, 1)[:, 1] - d2.min(1)
  sure = gap > 1e-4  # rows whose nearest centroid rounding cannot change
  assert sure.mean() > 0.99
  np.testing.assert_array_equal(np.asarray(codes)[sure], want[sure])
  assert float(sse) == pytest.approx(d2[np.arange(3000), np.asarray(codes)].sum(), rel=1e-5)
  xc, cx = x - x.mean(0), np.asarray(new) - x.mean(0)
  for j in np.unique(np.asarray(codes))[:20]:
    np.testing.assert_allclose(cx[j], xc[np.asarray(codes) == j].mean(0), rtol=1e-4, atol=1e-5)
