"""Bounded-memory DKM equals the naive reference in value and gradient; gradients are right.

DKM's iterations are unrolled (its compile time grows with `iters`): two iterations already chain
one update into the next, so the comparisons run at most two (0 and 1 where that is the case).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from lr2vq_jax.core.dkm import chunk_rows_for, dkm, dkm_naive
from tests.support.dkm_grads import assert_same, value_and_grad
from tests.support.dkm_grads import inputs as _inputs


def _loss(fn, w, iters, **kw):
  def loss(z, c, tau):
    z_soft, c_out = fn(z, c, tau=tau, iters=iters, **kw)
    return jnp.sum(z_soft * w) + jnp.sum(c_out**2)

  return loss


@pytest.mark.parametrize(
  "n,d,k,chunk,iters",
  [
    (203, 4, 16, 64, 2),  # n not divisible by the chunk
    (50, 8, 32, 1000, 2),  # one chunk, k close to n
    (97, 2, 5, 7, 0),  # no centroid update, many tiny chunks
    (2100, 3, 2048, 4096, 2),  # large k: CPU caps the chunk at 128 rows (17 chunks)
  ],
)
def test_bounded_equals_naive_value_and_grad(n, d, k, chunk, iters):
  z, c, w = _inputs(n, n, d, k)
  tau = jnp.float32(0.3)
  got = value_and_grad(dkm, z, c, w, tau, iters, chunk_size=chunk)
  want = value_and_grad(dkm_naive, z, c, w, tau, iters)  # at 203 rows: test_dkm_fast's reference
  assert got[0][1][0].shape == (n, d) and got[0][1][1].shape == (k, d)
  assert_same(got, want)


def test_dkm_is_soft_kmeans():
  # Small tau: hard assignment, centroid updates equal Lloyd means, z_soft equals the codewords.
  z = jnp.asarray([[0.0, 0.0], [0.2, 0.0], [5.0, 5.0], [5.0, 5.4]])
  c = jnp.asarray([[0.5, 0.5], [4.0, 4.0]])
  zs, c_out = dkm(z, c, tau=1e-3, iters=2, chunk_size=3)
  np.testing.assert_allclose(c_out, [[0.1, 0.0], [5.0, 5.2]], atol=1e-5)
  np.testing.assert_allclose(zs, np.asarray(c_out)[[0, 0, 1, 1]], atol=1e-5)


def test_gradients_match_finite_differences():
  with jax.enable_x64(True):
    z, c, _ = _inputs(1, 11, 3, 4)
    z, c = z.astype(jnp.float64), c.astype(jnp.float64)
    w = jnp.linspace(-1.0, 1.0, 33, dtype=jnp.float64).reshape(11, 3)
    tau = jnp.float64(0.7)
    loss = _loss(dkm, w, 2, chunk_size=4)
    assert loss(z, c, tau).dtype == jnp.float64
    check_grads(loss, (z, c, tau), order=1, modes=["rev"], atol=1e-5, rtol=1e-5)


def test_empty_cluster_keeps_previous_centroid_and_finite_grads():
  z, c, w = _inputs(2, 40, 2, 4)
  far = np.asarray([[1e3, -1e3]], np.float32)
  c = np.concatenate([c, far])  # no attention mass reaches it: A^T 1 underflows to 0
  for fn, kw in ((dkm, {"chunk_size": 16}), (dkm_naive, {})):

    def loss(z, c, tau, fn=fn, kw=kw):
      z_soft, c_out = fn(z, c, tau=tau, iters=2, **kw)
      return jnp.sum(z_soft * w) + jnp.sum(c_out[:-1] ** 2), c_out

    (_, c_out), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(
      z, c, jnp.float32(0.1)
    )
    np.testing.assert_array_equal(np.asarray(c_out)[-1], far[0])
    assert all(np.isfinite(g).all() for g in grads)


def test_softmax_is_safe_for_tiny_tau():
  z, c, _ = _inputs(3, 30, 4, 6)
  z_soft, c_out = dkm(z * 100.0, c * 100.0, tau=1e-4, iters=2, chunk_size=8)
  assert np.isfinite(z_soft).all() and np.isfinite(c_out).all()


def test_last_grad_same_values_and_one_step_gradient():
  z, c, w = _inputs(5, 150, 3, 8)
  tau = jnp.float32(0.3)

  def run(fn, **kw):
    def loss(z, c, tau):
      z_soft, c_out = fn(z, c, tau=tau, iters=2, **kw)
      return jnp.sum(z_soft * w) + jnp.sum(c_out**2), (z_soft, c_out)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(z, c, tau)

  (_, (zs_u, c_u)), _ = run(dkm, chunk_size=64)
  (_, (zs_l, c_l)), g_l = run(dkm, chunk_size=64, grad="last")
  (_, _), g_n = run(dkm_naive, grad="last")
  # The forward pass is unchanged up to the rounding of c_in + (c - c_in).
  np.testing.assert_allclose(zs_l, zs_u, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(c_l, c_u, rtol=1e-5, atol=1e-6)
  for a, b in zip(g_l, g_n, strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)

  # The one-step gradient: the soft assignment differentiated at the (fixed) refined centroids,
  # the centroids' gradient passed straight through to the input centroids.
  def soft_loss(z, cf, tau):
    z_soft, _ = dkm_naive(z, cf, tau=tau, iters=0)
    return jnp.sum(z_soft * w) + jnp.sum(cf**2)

  want = jax.jit(jax.grad(soft_loss, argnums=(0, 1, 2)))(z, c_u, tau)
  for a, b in zip(g_l, want, strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match="grad"):
    dkm(z, c, tau=tau, grad="implicit")


def test_cpu_chunks_shrink_with_k_to_stay_in_cache():
  assert jax.default_backend() == "cpu"
  assert chunk_rows_for(4096, 16) == 4096  # small k: the configured chunk
  assert chunk_rows_for(4096, 2048) == 128  # 2^18 attention entries
  assert chunk_rows_for(4096, 1 << 20) == 64  # never below 64 rows
  with pytest.raises(ValueError, match="chunk_size"):
    chunk_rows_for(0, 16)


def test_bf16_inputs_return_input_dtypes():
  z, c, _ = _inputs(4, 33, 4, 5)
  zs, c_out = dkm(z.astype(jnp.bfloat16), c.astype(jnp.bfloat16), tau=0.5, iters=1, chunk_size=8)
  assert zs.dtype == jnp.bfloat16 and c_out.dtype == jnp.bfloat16
  ref, _ = dkm_naive(z.astype(jnp.bfloat16).astype(jnp.float32), c, tau=0.5, iters=1)
  np.testing.assert_allclose(np.asarray(zs).astype(np.float32), ref, atol=0.05)


def test_bounded_memory_grows_like_n_d_not_n_k():
  d, k, iters = 2, 512, 2
  c = jnp.zeros((k, d))

  def temp_bytes(fn, n, **kw):
    f = jax.jit(jax.grad(lambda z: jnp.sum(fn(z, c, tau=1.0, iters=iters, **kw)[0] ** 2)))
    return f.lower(jnp.zeros((n, d))).compile().memory_analysis().temp_size_in_bytes

  def per_row(fn, **kw):  # XLA temp bytes added per extra row of z
    return (temp_bytes(fn, 40_000, **kw) - temp_bytes(fn, 20_000, **kw)) / 20_000

  attention_row = k * 4
  assert per_row(dkm, chunk_size=2048) < attention_row / 8
  assert per_row(dkm_naive) > iters * attention_row
