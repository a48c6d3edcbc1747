"""The bounded (Yinyang-filtered) Lloyd loop gives exactly the plain loop's codes, centroids and SSE."""

import jax
import numpy as np
import pytest

from lr2vq_jax.core import lloyd_bounds
from lr2vq_jax.core.kmeans import kmeans


def _mixture(n, d, seed):
  rng = np.random.default_rng(seed)
  centers = 3.0 * rng.normal(size=(64, d))
  return (centers[rng.integers(0, 64, n)] + rng.normal(size=(n, d))).astype(np.float32)


def _ties(n, d, seed):
  """Half the rows duplicate the other half, on a coarse grid: exact duplicates and equidistant
  centroids (ties to the lowest index), and clusters that stay put."""
  x = np.round(_mixture(n, d, seed) * 2.0) / 2.0
  x[n // 2 :] = x[: n - n // 2]
  return x


@pytest.mark.parametrize(
  "data,n,d,k,chunk,tol",
  [
    (_mixture, 6000, 4, 512, 65536, 0.0),
    (_mixture, 5000, 8, 1024, 1000, 5e-4),
    (_ties, 4000, 2, 768, 700, 0.0),
  ],
)
def test_bounded_loop_equals_plain_loop(data, n, d, k, chunk, tol):
  x = data(n, d, k)
  key = jax.random.key(3)
  runs = [
    kmeans(x, k, key=key, iters=10, tol=tol, chunk_size=chunk, return_history=True, bounds=b)
    for b in (False, True)
  ]
  (plain, h_plain), (bounded, h_bounded) = runs
  np.testing.assert_array_equal(np.asarray(bounded.codes), np.asarray(plain.codes))
  np.testing.assert_array_equal(np.asarray(bounded.centroids), np.asarray(plain.centroids))
  np.testing.assert_array_equal(np.asarray(h_bounded), np.asarray(h_plain))
  assert float(bounded.sse) == float(plain.sse)


def test_bounds_skip_rows_once_centroids_settle():
  """After a full pass, unchanged centroids leave (almost) every row settled by its bounds."""
  x = _mixture(4096, 4, 0)
  xp = jax.numpy.asarray(x)
  c = xp[:512]
  perm = lloyd_bounds.centroid_groups(c)
  valid = np.ones(len(x), bool)
  xn = jax.numpy.linalg.norm(xp, axis=1)
  b0 = lloyd_bounds.initial_bounds(len(x))
  b1 = lloyd_bounds.assign_bounded(xp, valid, xn, c, perm, b0, 512)
  codes = np.asarray(b1.codes)
  d2 = ((x[:, None, :] - x[None, :512, :]) ** 2).sum(-1)
  np.testing.assert_array_equal(codes, np.argmin(d2, axis=1))
  diff = x - x[codes]
  upper = (diff * diff).sum(1)
  settled = upper < np.asarray(b1.lower).min(0) ** 2
  assert settled.mean() > 0.5  # the rest: near-ties to another group, rechecked


def test_centroid_groups_are_balanced_and_a_permutation():
  c = jax.random.normal(jax.random.key(0), (1024, 3))
  perm = np.asarray(lloyd_bounds.centroid_groups(c))
  assert sorted(perm.tolist()) == list(range(1024))
  groups = perm.reshape(lloyd_bounds.GROUPS, -1)
  assert (np.diff(groups, axis=1) > 0).all()  # index order inside each group
  spread = np.asarray(c)[groups].std(axis=1).mean()  # spatial groups: tighter than the whole set
  assert spread < 0.7 * np.asarray(c).std(axis=0).mean()


def test_bounds_at_an_unsupported_k_raises():
  x = _mixture(2000, 4, 1)
  with pytest.raises(ValueError, match="bounds=True"):
    kmeans(x, 600, key=jax.random.key(0), bounds=True)
  assert not lloyd_bounds.supported(600) and lloyd_bounds.supported(2048)
