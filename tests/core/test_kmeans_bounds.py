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


def _ties(n, d, seed, scale):
  """Half the rows duplicate the other half, on a grid of step 1 / scale: exact duplicates and
  equidistant centroids (ties to the lowest index), and clusters that stay put."""
  x = np.round(_mixture(n, d, seed) * scale) / scale
  x[n // 2 :] = x[: n - n // 2]
  return x


def _same_runs(x, k, chunk, tol, init):
  """kmeans without and with the bounds from the same initial centroids: codes, centroids, SSE
  history and SSE all equal (both loops start from the same seeds: `init` leaves the seeding out)."""
  runs = [
    kmeans(
      x, k, key=KEY, iters=10, tol=tol, chunk_size=chunk, init=init, return_history=True, bounds=b
    )
    for b in (False, True)
  ]
  (plain, h_plain), (bounded, h_bounded) = runs
  np.testing.assert_array_equal(np.asarray(bounded.codes), np.asarray(plain.codes))
  np.testing.assert_array_equal(np.asarray(bounded.centroids), np.asarray(plain.centroids))
  np.testing.assert_array_equal(np.asarray(h_bounded), np.asarray(h_plain))
  assert float(bounded.sse) == float(plain.sse)
  return plain


KEY = jax.random.key(3)


# One shape for the three (two programs): n = 4000 in 6 chunks of 667 rows (2 padding rows, kept
# out of the pairs), d = 2, k = 512, tol = 0: 5 plain then 5 bounded steps. The paths of
# lloyd_bounds each takes (counted by instrumenting it): "mixture": the first bounded step full
# (`_fresh`), then the (row, group) pair path (`_filtered`), whose recomputed pairs change codes,
# also to other groups. "ties_coarse" (567 distinct points for 512 centroids): every bounded step
# repairs empty clusters (`step_bounded`'s repair), so every pass is a full one, and `_fresh` moves
# cross-group ties to the lowest index. "ties_fine": full and pair steps mixed, repairs in some,
# cross-group ties. A tie inside the pair path: test_tie_across_groups_keeps_valid_bounds[True].
@pytest.mark.parametrize(
  "data",
  [lambda: _mixture(4000, 2, 0), lambda: _ties(4000, 2, 1, 2.0), lambda: _ties(4000, 2, 1, 4.0)],
  ids=["mixture", "ties_coarse", "ties_fine"],
)
def test_bounded_loop_equals_plain_loop(data):
  x = data()
  _same_runs(x, 512, 700, 0.0, x[:512])


def test_bounded_loop_equals_plain_loop_early_stop_and_pair_chunks(monkeypatch):
  """tol > 0 (5000 rows in 5 chunks of 1000, d = 8, k = 1024): the loop stops after a few bounded
  steps, the final codes from the bounds; PAIR_ROWS = 64 splits a group's pairs over several chunks
  (at 1024 a group's pairs need ~50k rows). From converged centroids it stops within the plain
  warm-up steps: the final codes from a plain pass."""
  monkeypatch.setattr(lloyd_bounds, "PAIR_ROWS", 64)  # traced anew: no other call has tol > 0 here
  x = _mixture(5000, 8, 1024)
  plain = _same_runs(x, 1024, 1000, 5e-4, x[:1024])
  _same_runs(x, 1024, 1000, 5e-4, np.asarray(plain.centroids))


_groups = jax.jit(lloyd_bounds.centroid_groups)  # one program per shape, not one per operation


def _assign_bounded(x, c, b, rows):
  """`lloyd_bounds.assign_bounded` of all rows of x under c from the bounds b, as one jitted program
  (op by op it compiles each operation); traced anew per call: it reads module constants."""
  x, c = jax.numpy.asarray(x), jax.numpy.asarray(c)
  xn = jax.numpy.linalg.norm(x, axis=1)
  perm = _groups(c)
  valid = np.ones(x.shape[0], bool)
  out = jax.jit(lambda *a: lloyd_bounds.assign_bounded(*a, rows))(x, valid, xn, c, perm, b)
  return out, perm


def test_bounds_skip_rows_once_centroids_settle():
  """After a full pass, unchanged centroids leave (almost) every row settled by its bounds."""
  x = _mixture(4096, 2, 0)
  b1, _ = _assign_bounded(x, x[:512], lloyd_bounds.initial_bounds(len(x)), 512)
  codes = np.asarray(b1.codes)
  d2 = ((x[:, None, :] - x[None, :512, :]) ** 2).sum(-1)
  np.testing.assert_array_equal(codes, np.argmin(d2, axis=1))
  diff = x - x[codes]
  upper = (diff * diff).sum(1)
  settled = upper < np.asarray(b1.lower).min(0) ** 2
  assert settled.mean() > 0.5  # the rest: near-ties to another group, rechecked


def test_centroid_groups_are_balanced_and_a_permutation():
  c = jax.random.normal(jax.random.key(0), (512, 2))  # the shape of the other tests' centroids
  perm = np.asarray(_groups(c))
  assert sorted(perm.tolist()) == list(range(512))
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
  that group comes first in group order. Small integers: every score is exact. The shapes of
  test_bounds_skip_rows_once_centroids_settle: the full pass is the same program."""
  k, n = 512, 4096
  c = np.stack([np.full(k, 10.0), 511.0 - np.arange(k)], 1).astype(np.float32)
  x = np.tile(np.asarray([[10.0, 159.5]], np.float32), (n, 1))  # 0.5 from both
  b = lloyd_bounds.initial_bounds(n)
  group = np.argsort(np.asarray(_groups(c))) // (k // lloyd_bounds.GROUPS)
  assert group[352] < group[351]  # coordinates 159 and 160: the higher index comes first
  if pairs:  # bounds that fail only the two groups, recomputed by the (row, group) pair path
    monkeypatch.setattr(lloyd_bounds, "PLAIN_FRACTION", 1.0)
    lower = np.full((lloyd_bounds.GROUPS, n), 5.0, np.float32)
    lower[[group[351], group[352]]] = 0.0
    b = lloyd_bounds.Bounds(jax.numpy.full(n, 352, jax.numpy.int32), jax.numpy.asarray(lower))
  out, _ = _assign_bounded(x, c, b, 512)
  assert (np.asarray(out.codes) == 351).all()
  assert (np.asarray(out.lower)[group[352]] <= 0.5).all()
