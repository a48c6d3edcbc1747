"""Tests for chunked k-means, k-means++ and the squared-distance helper."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lr2vq_jax.core import scoring
from lr2vq_jax.core.distances import sq_distances
from lr2vq_jax.core.kmeans import KMeansResult, assign, kmeans, lloyd_step
from lr2vq_jax.core.seeding import kmeans_parallel, kmeans_plusplus


def _mixture(seed, k=8, d=4, per=60, spread=10.0, noise=0.1):
  rng = np.random.default_rng(seed)
  centers = rng.normal(size=(k, d)) * spread
  truth = np.repeat(np.arange(k), per)
  x = centers[truth] + rng.normal(size=(k * per, d)) * noise
  perm = rng.permutation(len(x))
  return x[perm].astype(np.float32), truth[perm], centers.astype(np.float32)


def _d2(a, b):
  """Squared distances (len(a), len(b)) in NumPy float64: the tests' reference, no compilation."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return ((a[:, None, :] - b[None]) ** 2).sum(-1)


def test_sq_distances_matches_direct_and_is_fp32():
  rng = np.random.default_rng(0)
  x, c = rng.normal(size=(37, 5)), rng.normal(size=(11, 5))
  want = ((x[:, None, :] - c[None]) ** 2).sum(-1)
  got = sq_distances(jnp.asarray(x, jnp.bfloat16), jnp.asarray(c, jnp.bfloat16))
  assert got.dtype == jnp.float32
  got = sq_distances(x, c)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  assert float(sq_distances(x, x).min()) >= 0.0


@pytest.mark.parametrize("chunk_size", [100, 65536])
def test_kmeans_recovers_planted_clusters(chunk_size):
  x, truth, centers = _mixture(0)
  # return_history: the program of test_sse_never_rises_... (chunk 100) and test_deterministic_... .
  res, hist = kmeans(
    x, 8, key=jax.random.key(1), iters=10, chunk_size=chunk_size, return_history=True
  )
  assert isinstance(res, KMeansResult) and float(hist[-1]) == float(res.sse)
  assert (
    res.centroids.shape == (8, 4) and res.codes.shape == (480,) and res.codes.dtype == jnp.int32
  )
  # Each true center has a found centroid close by, and codes agree with truth up to permutation.
  dist = _d2(centers, res.centroids)
  match = dist.argmin(1)
  assert sorted(match.tolist()) == list(range(8))
  assert np.sqrt(dist.min(1)).max() < 0.05
  np.testing.assert_array_equal(match[truth], np.asarray(res.codes))
  assert (
    abs(float(res.sse) - float(((x - np.asarray(res.centroids)[np.asarray(res.codes)]) ** 2).sum()))
    < 1e-3
  )


def test_sse_never_rises_and_history_ends_with_sse():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(480, 4)).astype(np.float32)  # no structure: many Lloyd moves
  # The shapes and static arguments of test_kmeans_recovers_planted_clusters[100]: one program.
  res, hist = kmeans(x, 8, key=jax.random.key(0), iters=10, chunk_size=100, return_history=True)
  hist = np.asarray(hist)
  assert hist.shape == (11,)
  assert np.all(np.diff(hist) <= 1e-5 * hist[0])
  assert hist[-1] == pytest.approx(float(res.sse))
  # Same with a bad init that forces repairs, stepping lloyd_step by hand.
  c = jnp.asarray(np.vstack([x[:4], np.full((4, 4), 100.0, np.float32)]))
  prev = np.inf
  for _ in range(6):
    c, _, sse = lloyd_step(x, c, chunk_size=100)
    assert float(sse) <= prev * (1 + 1e-6)
    prev = float(sse)


def test_empty_clusters_are_repaired():
  x, _, centers = _mixture(1, k=4, per=25)
  init = jnp.asarray(np.vstack([centers[:3], np.full((2, 4), 1e3, np.float32)]))  # 2 far ones
  new, codes, _ = lloyd_step(x, init, chunk_size=32)
  assert np.bincount(np.asarray(codes), minlength=5)[3:].sum() == 0  # they got no points
  codes_after, _ = assign(x, new)
  assert np.all(np.bincount(np.asarray(codes_after), minlength=5) > 0)
  # Re-seeded at distinct data points.
  reseeded = np.asarray(new[3:])
  assert not np.allclose(reseeded[0], reseeded[1])
  assert all(np.any(np.all(np.isclose(x, r), axis=1)) for r in reseeded)
  res = kmeans(x, 5, key=jax.random.key(0), init=init, iters=5)
  assert np.abs(np.asarray(res.centroids)).max() <= np.abs(x).max()  # no centroid left far away


def test_deterministic_for_a_key_and_key_matters():
  # The planted-clusters call's shapes and static arguments: its compiled k-means is reused.
  x, _, _ = _mixture(0)
  a = kmeans(x, 8, key=jax.random.key(5), iters=10, chunk_size=65536, return_history=True)
  b = kmeans(x, 8, key=jax.random.key(5), iters=10, chunk_size=65536, return_history=True)
  for u, v in zip((*a[0], a[1]), (*b[0], b[1]), strict=True):
    np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
  p = kmeans_plusplus(x, 8, key=jax.random.key(5))
  q = kmeans_plusplus(x, 8, key=jax.random.key(6))
  assert not np.array_equal(np.asarray(p), np.asarray(q))


def test_aligned_chunks_are_odd_multiples_of_the_row_alignment_with_little_padding():
  a = scoring.ROW_ALIGN
  for n in (1, 15, 480, 1001, 128_000, 262_144, 1_000_000):
    for chunk_size in (1, 7, 100, 256, 512, 4096, 65536):
      num, chunk = scoring.chunk_layout(n, chunk_size, aligned=True)
      plain_num, plain = scoring.chunk_layout(n, chunk_size)
      assert chunk % a == 0 and (chunk // a) % 2 == 1, (n, chunk_size, chunk)
      assert num * chunk >= n and (num - 1) * chunk < n  # no chunk of padding only
      assert num <= plain_num and chunk < plain + 2 * a  # at most two lines more per chunk
  assert scoring.chunk_layout(262_144, 4096, aligned=True) == (64, 4112)  # not 4096 (2^12)


def test_chunked_assignment_equals_unchunked():
  rng = np.random.default_rng(4)
  x = rng.normal(size=(1001, 6)).astype(np.float32)
  c = rng.normal(size=(33, 6)).astype(np.float32)
  want = np.asarray(sq_distances(x, c))  # the same fp32 formula: the same near-ties
  ref_codes, ref_min = want.argmin(1), want.min(1)
  for chunk in (1, 333, 5000):
    codes, mind = assign(x, c, chunk_size=chunk)
    np.testing.assert_array_equal(np.asarray(codes), ref_codes)
    np.testing.assert_allclose(np.asarray(mind), ref_min, rtol=1e-5, atol=1e-6)
  # k-means in 5 chunks of 112 rows (80 of them padding) equals it in one chunk: the two programs of
  # test_kmeans_recovers_planted_clusters (same shapes and static arguments), on unstructured data.
  x = rng.normal(size=(480, 4)).astype(np.float32)
  r1, h1 = kmeans(x, 8, key=jax.random.key(0), iters=10, chunk_size=100, return_history=True)
  r2, h2 = kmeans(x, 8, key=jax.random.key(0), iters=10, chunk_size=65536, return_history=True)
  np.testing.assert_array_equal(np.asarray(r1.codes), np.asarray(r2.codes))
  np.testing.assert_allclose(np.asarray(r1.centroids), np.asarray(r2.centroids), atol=1e-5)
  np.testing.assert_allclose(np.asarray(h1), np.asarray(h2), rtol=1e-5)


def test_kmeans_plusplus_picks_distinct_data_points():
  x, _, centers = _mixture(5, k=5, per=40)
  c = np.asarray(kmeans_plusplus(x, 5, key=jax.random.key(0), chunk_size=50))
  assert c.shape == (5, 4)
  assert all(np.any(np.all(x == r, axis=1)) for r in c)
  # Well-separated clusters: greedy D^2 seeding puts one seed in each cluster.
  assert len(set(_d2(c, centers).argmin(1).tolist())) == 5
  for a, b in itertools.combinations(range(5), 2):
    assert not np.array_equal(c[a], c[b])


def test_assign_breaks_ties_at_the_lowest_index():
  rng = np.random.default_rng(6)
  x = rng.normal(size=(300, 3)).astype(np.float32)
  base = rng.normal(size=(20, 3)).astype(np.float32)
  c = np.vstack([base, base[::-1]])  # every centroid twice: the first copy must win
  codes, mind = assign(x, c, chunk_size=64)
  want = ((x[:, None] - base[None]) ** 2).sum(-1)
  np.testing.assert_array_equal(np.asarray(codes), want.argmin(1))
  np.testing.assert_allclose(np.asarray(mind), want.min(1), rtol=1e-5, atol=1e-5)


# One round (a single D^2 draw) and 16 rounds (the `rounds >= 5` coverage branch); another round
# count below 5 asserts nothing the first case does not, at the cost of its own compilation.
@pytest.mark.parametrize("rounds", [1, 16])
def test_kmeans_parallel_seeds_are_distinct_points_one_per_cluster(rounds):
  x, _, centers = _mixture(7, k=6, per=50)
  c = np.asarray(kmeans_parallel(x, 6, key=jax.random.key(0), rounds=rounds, chunk_size=64))
  assert c.shape == (6, 4)
  assert all(np.any(np.all(x == r, axis=1)) for r in c)
  assert len({tuple(r) for r in c.tolist()}) == 6
  if rounds >= 5:  # one centre per round: plain D^2 sampling covers well-separated clusters
    assert len(set(_d2(c, centers).argmin(1).tolist())) == 6
  one = np.asarray(kmeans_parallel(x, 1, key=jax.random.key(0), rounds=rounds))
  assert one.shape == (1, 4) and np.any(np.all(x == one[0], axis=1))
  p = kmeans_parallel(x, 6, key=jax.random.key(1), rounds=rounds, chunk_size=64)  # same program
  q = kmeans_parallel(x, 6, key=jax.random.key(1), rounds=rounds, chunk_size=64)
  np.testing.assert_array_equal(np.asarray(p), np.asarray(q))


def test_own_seeding_beats_random_and_is_close_to_greedy_kmeans_plusplus():
  x, _, _ = _mixture(8, k=40, per=100, spread=1.0, noise=0.3)
  key = jax.random.key(0)
  own = kmeans(x, 128, key=key, iters=20)  # k > GREEDY_MAX_K: batched D^2 seeding
  greedy = kmeans(x, 128, key=key, iters=20, init=kmeans_plusplus(x, 128, key=key))
  random_init = x[np.random.default_rng(0).choice(len(x), 128, replace=False)]  # faiss's seeding
  rand = kmeans(x, 128, key=key, iters=20, init=random_init)
  assert float(own.sse) <= float(rand.sse)
  assert float(own.sse) <= 1.05 * float(greedy.sse)


def test_n_less_than_k_raises():
  x = np.zeros((3, 2), np.float32)
  with pytest.raises(ValueError, match="at least k points"):
    kmeans(x, 4, key=jax.random.key(0))
  with pytest.raises(ValueError, match="at least k points"):
    kmeans_plusplus(x, 4, key=jax.random.key(0))
  with pytest.raises(ValueError, match="at least k points"):
    kmeans_parallel(x, 4, key=jax.random.key(0))


def test_kmeans_handles_duplicate_points():
  # 3 distinct points, k = 8; the shapes and static arguments of the planted-clusters call (chunk
  # 65536): its compiled k-means is reused.
  x = np.repeat(np.eye(4, dtype=np.float32)[:3], 160, axis=0)
  res, _ = kmeans(x, 8, key=jax.random.key(0), iters=10, chunk_size=65536, return_history=True)
  assert float(res.sse) == pytest.approx(0.0, abs=1e-6)
  assert np.all(np.isfinite(np.asarray(res.centroids)))
