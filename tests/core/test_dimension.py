"""estimate_dim: both error terms monotone in d̃, best = argmin of the total, model-level summary."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lr2vq_jax.core.compress import compress_tensor
from lr2vq_jax.core.dimension import (
  DimEstimate,
  default_candidates,
  estimate_dim,
  estimate_dim_model,
)
from lr2vq_jax.core.lowrank import lowrank_error
from lr2vq_jax.core.rules import Rule
from lr2vq_jax.core.subvectors import from_subvectors
from tests.support.low_rank_data import SHAPE, K, M, R, low_rank_data


@pytest.fixture(scope="module")
def lowrank_est():
  x = low_rank_data(seed=1)
  w = from_subvectors(jnp.asarray(x), SHAPE)
  return x, w, estimate_dim(w, k=K, m=M, key=jax.random.key(0))


def _check_invariants(e: DimEstimate):
  assert np.all(np.diff(e.lowrank) <= 0)
  assert np.all(np.diff(e.cluster) >= 0)
  assert e.best == e.candidates[np.argmin(e.total)]
  np.testing.assert_allclose(e.total, e.lowrank + e.cluster)


def test_terms_monotone_and_best_is_argmin(lowrank_est):
  x, _, e = lowrank_est
  assert list(e.candidates) == list(range(1, M + 1))
  _check_invariants(e)
  np.testing.assert_allclose(e.lowrank, np.asarray(lowrank_error(x))[1:], rtol=1e-6)
  assert e.energy == pytest.approx(float(np.sum(x.astype(np.float64) ** 2)), rel=1e-4)
  # Rank-r signal: the total collapses at d̃ = r, and no larger d̃ does much better.
  assert e.total[R - 1] < 0.3 * e.total[R - 2]
  assert e.best >= R and e.total.min() > 0.9 * e.total[R - 1]


def test_total_is_the_real_compression_error(lowrank_est):
  _, w, e = lowrank_est
  ct = compress_tensor(w, k=K, m=M, d=R, key=jax.random.key(3))
  real = float(jnp.sum((ct.decompress() - w) ** 2))
  assert e.total[R - 1] == pytest.approx(real, rel=0.1)


def test_model_term_reported(lowrank_est):
  _, _, e = lowrank_est
  assert e.model_scale > 0 and np.all(np.isfinite(e.model))
  raw = np.array([K ** (-2 / d) for d in e.candidates]) * (e.energy - e.lowrank)
  np.testing.assert_allclose(e.model, e.model_scale * raw)
  assert e.best_model in e.candidates
  table = e.table()
  assert f"best d = {e.best}" in table and table.count("\n") == M + 3
  assert table.endswith(f"based on: {e.basis}")


def test_random_kernel_candidates_and_subsampling():
  w = jax.random.normal(jax.random.key(5), (3, 3, 8, 8))  # n = 64 (shapes shared below)
  e = estimate_dim(w, k=16, m=9, candidates=[9, 1, 4], key=jax.random.key(1), iters=5)
  assert list(e.candidates) == [1, 4, 9]
  _check_invariants(e)
  w2 = jax.random.normal(jax.random.key(6), (3, 3, 8, 16))  # n = 128: k-means on 64 rows as above
  sub = estimate_dim(w2, k=16, m=9, candidates=[1, 4, 9], iters=5, max_rows=64)
  assert sub.n == 128 and np.all(np.isfinite(sub.cluster))
  with pytest.raises(ValueError, match="candidates"):
    estimate_dim(w, k=16, m=9, candidates=[0, 3])
  with pytest.raises(ValueError, match="candidates"):
    estimate_dim(w, k=16, m=9, candidates=[10])
  with pytest.raises(ValueError, match="width"):
    estimate_dim(w, k=16, m=9, width=4)


def test_default_candidates():
  assert default_candidates(4) == (1, 2, 3, 4)
  big = default_candidates(100)
  assert big[0] == 1 and big[-1] == 100 and len(big) < 20


def test_model_level_estimate():
  key = jax.random.key(2)
  params = {
    "a": {"kernel": jax.random.normal(key, (3, 3, 8, 8))},  # m=9: n=64
    "b": {"kernel": 2.0 * jax.random.normal(key, (3, 3, 8, 8))},
    "fc": {"kernel": jax.random.normal(key, (32, 8))},  # m=4: n=64
  }
  rules = (Rule("^[ab]$", k=16, m=9), Rule("^fc$", k=16, m=4))
  est = estimate_dim_model(params, rules, candidates=[1, 2, 4, 9], iters=5)
  assert set(est.layers) == {"a", "b", "fc"}
  assert list(est.layers["fc"].candidates) == [1, 2, 4]
  for e in est.layers.values():
    _check_invariants(e)
  best = est.global_best()
  assert set(best) == {4, 9} and best[9] in (1, 2, 4, 9)
  assert "global best d per m" in est.table()
  only = estimate_dim_model(params, rules, layers="^fc$", candidates=[1, 4], iters=5)
  assert list(only.layers) == ["fc"]
  with pytest.raises(ValueError, match="no compressed layer matches"):
    estimate_dim_model(params, rules, layers="zzz")
