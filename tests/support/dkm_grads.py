"""DKM test inputs and one jitted value-and-gradient of a DKM loss, shared by the DKM test modules:
equal calls (same function, iterations, static keywords and shapes) trace and compile once."""

import functools

import jax
import jax.numpy as jnp
import numpy as np


def inputs(seed, n, d, k):
  """z (n, d), centroids near its first k rows, loss weights w (n, d): NumPy draws (jax.random
  compiles a program per shape)."""
  rng = np.random.default_rng(seed)
  z = rng.normal(size=(n, d)).astype(np.float32)
  c = z[:k] + np.float32(0.1) * rng.normal(size=(k, d)).astype(np.float32)
  return z, c, rng.normal(size=(n, d)).astype(np.float32)


def value_and_grad(fn, z, c, w, tau, iters, **kw):
  """Value ((loss, (z_soft, centroids))) and gradient (z, c, tau) of a DKM loss weighted by w; the
  array keywords are arguments, the rest static: equal calls (also across tests) trace once."""
  arrays = {k: v for k, v in kw.items() if isinstance(v, (np.ndarray, jax.Array))}
  static = tuple(sorted((k, v) for k, v in kw.items() if k not in arrays))
  return _value_and_grad_jit(fn, iters, static, z, c, w, tau, arrays)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _value_and_grad_jit(fn, iters, static, z, c, w, tau, arrays):
  def loss(z, c, tau):
    z_soft, c_out = fn(z, c, tau=tau, iters=iters, **dict(static), **arrays)
    return jnp.sum(z_soft * w) + jnp.sum(c_out**2), (z_soft, c_out)

  return jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(z, c, tau)


def assert_same(a, b, atol=2e-5):
  """Two `value_and_grad` results agree: soft reconstruction and centroids to 1e-5, gradients to
  atol relative to the largest entry of each."""
  (_, (zs_a, c_a)), g_a = a
  (_, (zs_b, c_b)), g_b = b
  np.testing.assert_allclose(zs_a, zs_b, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(c_a, c_b, rtol=1e-5, atol=1e-5)
  for x, y in zip(g_a, g_b, strict=True):
    scale = float(np.max(np.abs(y))) + 1e-6
    np.testing.assert_allclose(np.asarray(x) / scale, np.asarray(y) / scale, atol=atol)
