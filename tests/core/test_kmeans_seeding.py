"""Tests for `kmeans`'s own seeding on a row sample and its early stop (`tol`)."""

import jax
import numpy as np
import pytest

from lr2vq_jax.core import kmeans as kmeans_lib
from lr2vq_jax.core import scoring, seeding
from lr2vq_jax.core.kmeans import kmeans
from lr2vq_jax.core.seeding import kmeans_parallel, kmeans_plusplus, seed, seed_rows


def _mixture(n, d, components, seed_):
  rng = np.random.default_rng(seed_)
  centers = rng.normal(size=(components, d))
  labels = rng.integers(0, components, n)
  return (centers[labels] + rng.normal(size=(n, d)) * 0.3).astype(np.float32)


def test_seed_rows_is_one_distinct_row_per_stratum():
  k, n = 3, 10_000
  s = seeding.SEED_ROWS_PER_CENTROID * k
  x = np.arange(n, dtype=np.float32)[:, None]  # row i holds i
  idx = np.asarray(seed_rows(x, k, jax.random.key(0)))[:, 0].astype(int)
  assert idx.shape == (s,) and len(set(idx.tolist())) == s
  assert np.all(np.diff(idx) > 0) and idx[0] >= 0 and idx[-1] < n
  stride = n // s
  assert np.all(np.diff(idx) < 2 * stride)  # one per stratum: no stratum skipped
  other = np.asarray(seed_rows(x, k, jax.random.key(1)))[:, 0]
  assert not np.array_equal(idx, other)


def test_seed_rows_keeps_small_sets_whole():
  x = np.ones((100, 2), np.float32)
  assert seed_rows(x, 4, jax.random.key(0)) is x


@pytest.mark.parametrize("k", [8, 128])  # greedy k-means++, batched D^2 seeding
def test_own_seeding_is_deterministic_and_within_2pct_of_full_data_seeding(k):
  n = seeding.SEED_ROWS_PER_CENTROID * k + 7000  # the seeding samples
  x = _mixture(n, 4, 2 * k, seed_=k)
  key = jax.random.key(3)
  # return_history: at k = 8 the program of the two tests below (one compilation for the three).
  a, _ = kmeans(x, k, key=key, iters=25, return_history=True)
  b, _ = kmeans(x, k, key=key, iters=25, return_history=True)
  np.testing.assert_array_equal(np.asarray(a.centroids), np.asarray(b.centroids))
  # The seeding before this change: the full data, every iteration run.
  full = (kmeans_plusplus if k <= seeding.GREEDY_MAX_K else kmeans_parallel)(
    x - x.mean(0), k, key=key
  )
  old = kmeans(x, k, key=key, iters=25, init=np.asarray(full) + x.mean(0), tol=0.0)
  assert float(a.sse) <= 1.02 * float(old.sse)


def test_seeds_are_distinct_data_rows():
  x = _mixture(5000, 3, 10, seed_=1)
  c = np.asarray(seed(x, 16, key=jax.random.key(0)))
  assert len({tuple(r) for r in c.tolist()}) == 16
  rows = {tuple(r) for r in x.tolist()}
  assert all(tuple(r) in rows for r in c.tolist())


# The shapes and static arguments of the k = 8 seeding test above (9048 rows, d = 4, k = 8, 25 steps,
# with the history): its compiled k-means is reused, also on the sampled-seeding path below.
def test_early_stop_repeats_the_last_sse_and_tol_zero_runs_every_step():
  x = _mixture(seeding.SEED_ROWS_PER_CENTROID * 8 + 7000, 4, 8, seed_=4)
  key = jax.random.key(0)
  res, hist = kmeans(x, 8, key=key, iters=25, return_history=True)
  hist = np.asarray(hist)
  assert np.all(np.diff(hist) <= 1e-6 * hist[0])
  assert hist[-2] == hist[-3]  # stopped after a few steps (the SSE still falls a little, see below)
  assert float(res.sse) == hist[-1]
  full, hist0 = kmeans(x, 8, key=key, iters=25, return_history=True, tol=0.0)
  assert float(res.sse) <= float(full.sse) * (1 + kmeans_lib.TOL)
  assert float(full.sse) < float(res.sse)  # tol = 0 ran the steps that the stop left out
  assert np.asarray(hist0).shape == hist.shape


def test_negative_tol_raises():
  with pytest.raises(ValueError, match="tol"):
    kmeans(np.ones((10, 2), np.float32), 2, key=jax.random.key(0), tol=-1.0)


def test_k_above_n_raises_one_clear_error():
  with pytest.raises(ValueError, match="at least k points"):
    kmeans(np.ones((10, 2), np.float32), 11, key=jax.random.key(0))


def test_fewer_distinct_points_than_k_on_the_sampled_path():
  k, n = 8, seeding.SEED_ROWS_PER_CENTROID * 8 + 7000  # n > the seeding sample
  points = np.zeros((3, 4), np.float32)
  points[:2, 0] = 1.0, -1.0  # 3 distinct points, n / 3 copies each: mean 0, every sum exact
  x = np.repeat(points, n // 3, 0)
  res, _ = kmeans(x, k, key=jax.random.key(0), iters=25, return_history=True)
  assert float(res.sse) == pytest.approx(0.0, abs=1e-6)
  assert np.all(np.isfinite(np.asarray(res.centroids)))
  assert set(np.unique(np.asarray(res.codes)).tolist()) <= set(range(k))


def test_d2_pass_is_the_min_squared_distance_in_either_score_layout():
  """Seeding's D^2 pass (`row_scores`, (b, k)) against exact float64 distances and the (k, b)
  `scores` that Lloyd's argmin reads: same products, so the same values to fp32 rounding."""
  rng = np.random.default_rng(5)
  x = rng.normal(size=(3000, 9)).astype(np.float32)
  c = rng.normal(size=(16, 9)).astype(np.float32)
  lhs = scoring.score_lhs(c)
  # Each layout's matmul may sum the depth-10 products in its own order (CPU kernels differ): each
  # is within 10 * 2^-24 * sum |products| of the exact dot, so the two within twice that.
  x1 = np.concatenate([x, np.ones((len(x), 1), np.float32)], 1)
  bound = 2 * 10 * 2.0**-24 * (np.abs(x1) @ np.abs(np.asarray(lhs)).T)
  diff = np.abs(np.asarray(scoring.row_scores(x, lhs)) - np.asarray(scoring.scores(x, lhs)).T)
  assert np.all(diff <= bound)
  # The expansion's cancellation: ~2^-24 * (|x|^2 + 2|x.c| + |c|^2) ~ 1e-5 here; 10x margin.
  exact = ((x[:, None, :].astype(np.float64) - c[None]) ** 2).sum(-1).min(1)
  np.testing.assert_allclose(np.asarray(seeding._min_sq(x, lhs)), exact, rtol=1e-5, atol=1e-4)
