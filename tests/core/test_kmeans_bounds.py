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


@pytest.mark.parametrize("pairs", [False, True])
def test_tie_across_groups_keeps_valid_bounds(pairs, monkeypatch):
  """A row exactly equidistant from two centroids of different groups takes the lower index, and its
  bound on the other group still holds (it must not leave out the tied centroid there), also when
  that group comes first in group order. Small integers: every score is exact."""
  k = 512
  c = np.stack([np.full(k, 10.0), 511.0 - np.arange(k)], 1).astype(np.float32)
  c = jax.numpy.asarray(c)  # groups of 32 along the line, in coordinate order
  perm = lloyd_bounds.centroid_groups(c)
  group = np.argsort(np.asarray(perm)) // (k // lloyd_bounds.GROUPS)
  assert group[352] < group[351]  # coordinates 159 and 160: the higher index comes first
  x = jax.numpy.tile(jax.numpy.asarray([[10.0, 159.5]]), (256, 1))  # 0.5 from both
  xn = jax.numpy.linalg.norm(x, axis=1)
  b = lloyd_bounds.initial_bounds(256)
  if pairs:  # bounds that fail only the two groups, recomputed by the (row, group) pair path
    monkeypatch.setattr(lloyd_bounds, "PLAIN_FRACTION", 1.0)
    lower = np.full((lloyd_bounds.GROUPS, 256), 5.0, np.float32)
    lower[[group[351], group[352]]] = 0.0
    b = lloyd_bounds.Bounds(jax.numpy.full(256, 352, jax.numpy.int32), jax.numpy.asarray(lower))
  out = lloyd_bounds.assign_bounded(x, np.ones(256, bool), xn, c, perm, b, 256)
  assert (np.asarray(out.codes) == 351).all()
  assert (np.asarray(out.lower)[group[352]] <= 0.5).all()
