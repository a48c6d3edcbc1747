"""NNX kernels carry training DKM's state (`DkmState`) as the linen layers' `dkm_lists` does."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import lr2vq_jax as lq
from lr2vq_jax.core import dkm as dkm_lib

TOP_T, K = 4, 16
RULE = lq.Rule("", k=K, m=4, d=2)
X = jax.random.normal(jax.random.key(0), (3, 16))


def _layer(**quant):
  config = lq.nn.QuantConfig(dkm_top_t=TOP_T, dkm_iters=1, **quant)
  return lq.nnx.Linear(16, 32, rule=RULE, mode="quantize", quant=config, rngs=nnx.Rngs(0))


def test_lists_and_warm_offset_advance_under_nnx_transforms():
  layer = _layer(dkm_refresh=2, dkm_warm=True)
  kernel = layer.kernel
  assert kernel.neighbors[...].shape == (32 * 16 // 4, TOP_T) and int(kernel.count[...]) == 0
  assert kernel.offset[...].shape == (K, 2) and not np.any(kernel.offset[...])
  optimizer = nnx.Optimizer(layer, optax.sgd(0.05), wrt=nnx.Param)

  @nnx.jit
  def step(layer, optimizer):
    grads = nnx.grad(lambda m: jnp.sum(m(X) ** 2))(layer)
    optimizer.update(layer, grads)

  for s in range(3):
    z, c, tau = kernel.z[...], kernel.codebook[...], kernel.tau[...]
    start = c + kernel.offset[...]
    lists_before = kernel.neighbors[...]
    step(layer, optimizer)
    assert int(kernel.count[...]) == s + 1
    fresh = dkm_lib.neighbors(z, start, top_t=TOP_T)
    want_lists = fresh if s % 2 == 0 else lists_before
    np.testing.assert_array_equal(kernel.neighbors[...], want_lists)
    _, refined = dkm_lib.dkm(z, start, tau=tau, iters=1, neighbors=want_lists)
    np.testing.assert_allclose(kernel.offset[...], refined - c, atol=1e-5)
  assert not np.array_equal(kernel.codebook[...], c)  # the optimizer moved the params meanwhile
  grads = nnx.grad(lambda m: jnp.sum(m(X) ** 2))(layer)
  names = {path[-1] for path, _ in nnx.to_flat_state(grads)}
  assert names == {"bias", "z", "projection", "codebook"}  # the carried state is not trained


def test_evaluation_reads_the_offset_and_matches_the_linen_layer():
  layer = _layer(dkm_warm=True)
  layer(X)  # a training call: writes the offset
  assert np.any(layer.kernel.offset[...])
  layer.eval()
  variables = lq.nnx.to_variables(layer)
  assert "offset" in variables["dkm_lists"]
  linen = lq.nn.Dense(32, rule=RULE, mode="quantize", train=False, quant=layer.kernel.config)
  np.testing.assert_allclose(layer(X), linen.apply(variables, X), atol=1e-5)
  cold = {c: v for c, v in variables.items() if c != "dkm_lists"}
  assert not np.allclose(layer(X), linen.apply(cold, X), atol=1e-4)


def test_refresh_one_cold_keeps_no_carried_state_and_the_default_carries_it():
  kernel = _layer(dkm_refresh=1, dkm_warm=False).kernel
  assert not any(hasattr(kernel, n) for n in ("neighbors", "count", "offset"))
  assert not nnx.to_flat_state(nnx.state(kernel, lq.nnx.DkmState))
  kernel = _layer().kernel  # the defaults: carried lists and a warm start
  assert all(hasattr(kernel, n) for n in ("neighbors", "count", "offset"))
  assert len(nnx.to_flat_state(nnx.state(kernel, lq.nnx.DkmState))) == 3
