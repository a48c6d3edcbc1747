"""Top-t DKM: equal to full DKM at t = k, to a masked-softmax reference below it, and sharded.

DKM's iterations are unrolled (its compile time grows with `iters`): two iterations already chain
one update into the next, so the comparisons run two or fewer. Inputs and the jitted gradient:
tests/support/dkm_grads.py (shared with test_dkm.py, whose equal calls are then compiled once).
"""

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lr2vq_jax.core import dkm_top
from lr2vq_jax.core.dkm import TOP_T, _update, dkm, dkm_naive, neighbors
from lr2vq_jax.core.kernel import QuantConfig
from tests.support.devices import run_script
from tests.support.dkm_grads import assert_same as _assert_same
from tests.support.dkm_grads import inputs as _inputs
from tests.support.dkm_grads import value_and_grad as _value_and_grad


@pytest.mark.parametrize("top_t", [16, 40])  # t = k and t > k: every centroid
@pytest.mark.parametrize("chunk", [64, 4096])
def test_top_t_at_k_equals_full_dkm_value_and_grad(top_t, chunk):
  # The inputs, iterations and reference of test_dkm.py's test_bounded_equals_naive_value_and_grad
  # at 203 rows: its reference is reused (the same call), and t >= k is the same program as t = 0.
  z, c, w = _inputs(203, 203, 4, 16)
  tau = jnp.float32(0.3)
  want = _value_and_grad(dkm_naive, z, c, w, tau, 2)
  _assert_same(_value_and_grad(dkm, z, c, w, tau, 2, chunk_size=chunk, top_t=top_t), want)


def _masked_reference(z, c, *, tau, iters, top_t, ranked_by=None):
  """Full n x k DKM with the logits outside each row's t nearest input centroids (or nearest
  centroids of `ranked_by`) at -inf."""
  r = c if ranked_by is None else ranked_by
  d2 = jnp.sum((z[:, None, :] - r[None]) ** 2, axis=-1)
  idx = jnp.argsort(jax.lax.stop_gradient(d2), axis=1)[:, :top_t]
  keep = jnp.zeros(d2.shape, bool).at[jnp.arange(z.shape[0])[:, None], idx].set(True)

  def attn(c):
    logits = -jnp.sum((z[:, None, :] - c[None]) ** 2, axis=-1) / tau
    return jax.nn.softmax(jnp.where(keep, logits, -jnp.inf), axis=1)

  for _ in range(iters):
    a = attn(c)
    c = _update(a.T @ z, jnp.sum(a, axis=0), c)
  return attn(c) @ c, c


# (3, 2, 7): the program of test_given_neighbors_equal_top_t_value_and_grad[7]'s top_t call.
@pytest.mark.parametrize("top_t,iters,chunk", [(3, 2, 7), (1, 1, 64), (5, 0, 4096)])
def test_top_t_equals_masked_softmax_reference(top_t, iters, chunk):
  # The neighbour set is chosen once from the input centroids and kept for every iteration.
  z, c, w = _inputs(1, 150, 3, 12)
  tau = jnp.float32(0.5)
  want = _value_and_grad(_masked_reference, z, c, w, tau, iters, top_t=top_t)
  got = _value_and_grad(dkm, z, c, w, tau, iters, chunk_size=chunk, top_t=top_t)
  _assert_same(got, want, atol=5e-5)


@pytest.mark.parametrize("chunk", [7, 4096])
def test_given_neighbors_equal_top_t_value_and_grad(chunk):
  z, c, w = _inputs(6, 150, 3, 12)
  tau = jnp.float32(0.5)
  nb = neighbors(z, c, top_t=3, chunk_size=chunk)
  assert nb.shape == (150, 3) and nb.dtype == jnp.int32
  want = _value_and_grad(dkm, z, c, w, tau, 2, chunk_size=chunk, top_t=3)
  _assert_same(_value_and_grad(dkm, z, c, w, tau, 2, chunk_size=chunk, neighbors=nb), want)


def test_stale_neighbors_equal_masked_reference_of_their_centroids():
  # Lists ranked by earlier centroids (carried between steps): the attention is over those lists.
  z, c, w = _inputs(7, 150, 3, 12)
  old = c + np.float32(0.2) * np.random.default_rng(8).normal(size=c.shape).astype(np.float32)
  tau = jnp.float32(0.5)
  nb = neighbors(z, old, top_t=4)
  want = _value_and_grad(_masked_reference, z, c, w, tau, 2, top_t=4, ranked_by=old)
  got = _value_and_grad(dkm, z, c, w, tau, 2, chunk_size=64, neighbors=nb)
  _assert_same(got, want, atol=5e-5)


def test_neighbors_validation():
  z, c, _ = _inputs(9, 20, 2, 4)
  with pytest.raises(ValueError, match="neighbors"):
    dkm(z, c, tau=1.0, neighbors=jnp.zeros((19, 2), jnp.int32))
  with pytest.raises(ValueError, match="neighbors"):
    dkm(z, c, tau=1.0, neighbors=jnp.zeros((20, 5), jnp.int32))
  with pytest.raises(ValueError, match="integer"):
    dkm(z, c, tau=1.0, neighbors=jnp.zeros((20, 2)))
  with pytest.raises(ValueError, match="top_t"):
    neighbors(z, c, top_t=0)


def test_top_t_with_last_grad_keeps_values():
  z, c, w = _inputs(2, 120, 4, 16)
  tau = jnp.float32(0.2)
  (_, (zs_u, c_u)), _ = _value_and_grad(dkm, z, c, w, tau, 2, chunk_size=32, top_t=4)
  (_, (zs_l, c_l)), g = _value_and_grad(dkm, z, c, w, tau, 2, chunk_size=32, top_t=4, grad="last")
  np.testing.assert_allclose(zs_l, zs_u, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(c_l, c_u, rtol=1e-5, atol=1e-6)
  assert all(np.isfinite(x).all() for x in g)


# Jitted: one program per call, not one per operation.
_nearest = jax.jit(dkm_top.nearest, static_argnums=(2, 3))
_dropped_mass = jax.jit(dkm_top.dropped_mass, static_argnums=3)


def test_nearest_ranks_like_full_distances_in_fp32_and_bf16():
  z, c, _ = _inputs(3, 300, 4, 64)
  d2 = np.sum((z[:, None, :] - c[None]) ** 2, axis=-1)
  want = np.argsort(d2, axis=1)[:, :5]
  got = np.asarray(_nearest(z, c, 5, jnp.float32))
  np.testing.assert_array_equal(np.sort(got, axis=1), np.sort(want, axis=1))
  # bf16 ranking (the accelerator default): the nearest centroid itself almost always survives
  got16 = np.asarray(_nearest(z, c, 5, jnp.bfloat16))
  assert np.mean(np.any(got16 == want[:, :1], axis=1)) > 0.98
  assert dkm_top.select_dtype("cpu") == jnp.float32
  assert dkm_top.select_dtype("tpu") == jnp.bfloat16


def test_dropped_mass_vanishes_at_small_tau_and_at_t_k():
  z, c, _ = _inputs(4, 400, 4, 32)
  np.testing.assert_allclose(_dropped_mass(z, c, 1.0, 32), 0.0, atol=1e-6)
  cold = _dropped_mass(z, c, 1e-3, 4)
  warm = _dropped_mass(z, c, 10.0, 4)
  assert float(np.mean(cold)) < 1e-3 < float(np.mean(warm))


def test_top_t_config_validation():
  assert QuantConfig().dkm_top_t == TOP_T == 8  # the layers' default: the fast path
  with pytest.raises(ValueError, match="dkm_top_t"):
    QuantConfig(dkm_top_t=-1)
  z, c, _ = _inputs(5, 20, 2, 4)
  with pytest.raises(ValueError, match="top_t"):
    dkm(z, c, tau=1.0, top_t=-2)


SHARDED = textwrap.dedent(
  """
  import jax, jax.numpy as jnp, numpy as np
  from jax.sharding import AxisType
  from lr2vq_jax.core.dkm import dkm, neighbors
  assert jax.device_count() == 4
  z = jax.random.normal(jax.random.key(0), (1003, 3))
  c = z[:24] + 0.05
  w = jax.random.normal(jax.random.key(1), z.shape)

  def grads(**kw):
    def loss(z, c):
      zs, co = dkm(z, c, tau=0.3, iters=2, chunk_size=64, top_t=4, **kw)
      return jnp.sum(zs * w) + jnp.sum(co**2)
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(z, c)

  one = grads()
  nb = neighbors(z, c, top_t=4)
  mesh = jax.make_mesh((4,), ("data",), axis_types=(AxisType.Auto,))
  with jax.set_mesh(mesh):
    four = grads(axis_name="data")
    given = grads(axis_name="data", neighbors=nb)  # lists given: split over the rows too
  for got in (four, given):
    np.testing.assert_allclose(got[0], one[0], rtol=1e-5)
    for a, b in zip(got[1], one[1]):  # other summation orders: relative to the largest entry
      scale = float(np.max(np.abs(b)))
      np.testing.assert_allclose(np.asarray(a) / scale, np.asarray(b) / scale, atol=2e-5)
  print("OK")
  """
)


def test_sharded_top_t_equals_unsharded(tmp_path):
  assert "OK" in run_script(SHARDED, devices=4, tmp=tmp_path, timeout=300)
