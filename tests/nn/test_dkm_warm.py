"""Warm-started DKM (`QuantConfig.dkm_warm`): the refinement offset carried between calls."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

import lr2vq_jax as lq
from lr2vq_jax import convert
from lr2vq_jax.core import dkm as dkm_lib
from lr2vq_jax.core import kernel as kernel_math
from lr2vq_jax.nn import DKM_LISTS

TOP_T, K = 4, 16
X = jax.random.normal(jax.random.key(0), (3, 16))
SETTINGS = {"projection": "learned", "store": "codebook", "dkm_iters": 1}


def _layer(train: bool = True, **quant):
  config = lq.nn.QuantConfig(dkm_top_t=TOP_T, dkm_iters=1, **{"dkm_warm": True, **quant})
  rule = lq.Rule(".*", k=K, m=4, d=2)
  return lq.nn.Dense(32, rule=rule, mode="quantize", train=train, quant=config)


def _init(**quant):
  return dict(_layer(train=False, **quant).init(jax.random.key(1), X))


def _arrays(variables) -> dict:
  p = variables["params"]
  return {**{k: p[k] for k in ("z", "projection", "codebook")}, "tau": variables["quant"]["tau"]}


def _out(rows, bias):
  return X @ rows.reshape(32, 16).T + bias  # Dense rows: (out, in) subvectors, PyTorch order


def test_cold_config_keeps_no_offset_and_warm_starts_at_zero():
  assert DKM_LISTS not in _init(dkm_warm=False, dkm_refresh=1)  # nothing carried at all
  assert "offset" not in _init(dkm_warm=False)[DKM_LISTS]  # the default refresh: lists only
  assert lq.nn.QuantConfig().dkm_warm  # the layers' default is the warm start
  offset = _init()[DKM_LISTS]["offset"]
  assert offset.shape == (K, 2) and offset.dtype == jnp.float32 and not np.any(offset)


@pytest.mark.parametrize("refresh", [1, 3])
def test_warm_calls_continue_the_iterations(refresh):
  """With the params fixed, call s starts where call s - 1 ended: its refined centroids are
  those of s + 1 cold updates from the codebook, and its output is DKM's from that start."""
  variables = _init(dkm_refresh=refresh)
  layer = _layer(dkm_refresh=refresh)
  apply = jax.jit(lambda v: layer.apply(v, X, mutable=[DKM_LISTS]))
  arrays, c = _arrays(variables), variables["params"]["codebook"]
  tau, z = arrays["tau"], arrays["z"]
  for s in range(3):
    out, state = apply(variables)
    start = c + variables[DKM_LISTS]["offset"]
    refined = c + state[DKM_LISTS]["offset"]
    lists = state[DKM_LISTS].get("neighbors")
    if refresh == 1:  # ranked every call: against every centroid, top-4 drops ~nothing
      _, cold = dkm_lib.dkm(z, c, tau=tau, iters=s + 1)
    else:  # the lists ranked at call 0 serve calls 0-2: s + 1 cold updates over those lists
      _, cold = dkm_lib.dkm(z, c, tau=tau, iters=s + 1, top_t=TOP_T, neighbors=lists)
    np.testing.assert_allclose(refined, cold, atol=2e-5)
    want = kernel_math.mode_rows(
      "quantize", {**arrays, "codebook": start, "neighbors": lists}, SETTINGS,
      layer.quant, train=True,
    )[0]  # fmt: skip
    np.testing.assert_allclose(out, _out(want, variables["params"]["bias"]), atol=1e-5)
    variables = {**variables, DKM_LISTS: state[DKM_LISTS]}


def test_codebook_gradient_is_the_cold_one_at_the_warm_start():
  variables = _init()
  offset = 0.2 * jax.random.normal(jax.random.key(3), (K, 2))
  variables[DKM_LISTS] = {"offset": offset}
  w = jax.random.normal(jax.random.key(5), (3, 32))

  def warm(params):
    out, _ = _layer().apply({**variables, "params": params}, X, mutable=[DKM_LISTS])
    return jnp.sum(out * w)

  def cold(params):
    moved = {**params, "codebook": params["codebook"] + offset}
    base = {c: v for c, v in variables.items() if c != DKM_LISTS}
    return jnp.sum(_layer(dkm_warm=False).apply({**base, "params": moved}, X) * w)

  got = jax.jit(jax.value_and_grad(warm))(variables["params"])
  want = jax.jit(jax.value_and_grad(cold))(variables["params"])
  np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
  for a, b in zip(jax.tree.leaves(got[1]), jax.tree.leaves(want[1]), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_evaluation_freezing_and_export_decode_from_the_warm_start(tmp_path):
  variables = _init()
  _, state = jax.jit(lambda v: _layer().apply(v, X, mutable=[DKM_LISTS]))(variables)
  variables[DKM_LISTS] = state[DKM_LISTS]
  assert np.any(variables[DKM_LISTS]["offset"])
  evaluated = _layer(train=False).apply(variables, X)
  cold = _layer(train=False).apply({c: v for c, v in variables.items() if c != DKM_LISTS}, X)
  assert not np.allclose(evaluated, cold, atol=1e-4)  # the offset changes the codes' centroids
  frozen = convert.quantize_to_frozen(variables)
  assert DKM_LISTS not in frozen
  layer = lq.nn.Dense(32, rule=lq.Rule(".*", k=K, m=4, d=2), mode="frozen", train=False)
  np.testing.assert_allclose(layer.apply(frozen, X), evaluated, atol=1e-6)
  lq.export(variables, lq.Rule(".*", k=K, m=4, d=2), str(tmp_path / "art"))
  decoded = lq.load(str(tmp_path / "art")).decode()
  leaves = {k[-1]: v for k, v in traverse_util.flatten_dict(decoded["params"]).items()}
  np.testing.assert_allclose(X @ leaves["kernel"] + leaves["bias"], evaluated, atol=1e-5)


def test_training_call_that_cannot_write_runs_from_the_offset():
  variables = _init()
  variables[DKM_LISTS] = {"offset": 0.2 * jnp.ones((K, 2))}
  moved = {**variables["params"], "codebook": variables["params"]["codebook"] + 0.2}
  base = {c: v for c, v in variables.items() if c != DKM_LISTS}
  np.testing.assert_allclose(
    _layer().apply(variables, X), _layer(dkm_warm=False).apply({**base, "params": moved}, X),
    atol=1e-6,
  )  # fmt: skip
