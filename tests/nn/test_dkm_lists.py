"""Top-t DKM's candidate lists carried between training calls (`QuantConfig.dkm_refresh`)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lr2vq_jax as lq
from lr2vq_jax.core import dkm as dkm_lib
from lr2vq_jax.core import kernel as kernel_math
from lr2vq_jax.core import recorded
from lr2vq_jax.nn import DKM_LISTS

TOP_T, K = 4, 16
X = jax.random.normal(jax.random.key(0), (3, 16))


def _layer(refresh: int, train: bool = True, **quant):
  """A quantize Dense with `dkm_refresh=refresh` and a cold start (dkm_warm=False: the lists alone
  are under test here; tests/nn/test_dkm_warm.py covers the offset)."""
  quant = {"dkm_warm": False, **quant}
  config = lq.nn.QuantConfig(dkm_top_t=TOP_T, dkm_refresh=refresh, **quant)
  rule = lq.Rule(".*", k=K, m=4, d=2)
  return lq.nn.Dense(32, rule=rule, mode="quantize", train=train, quant=config)


def _init(refresh: int):
  return dict(_layer(refresh, train=False).init(jax.random.key(1), X))


def _expected_out(variables, config, neighbors=None):
  """The layer's output from the shared math with the given lists (None: ranked by top_t)."""
  p = variables["params"]
  arrays = {k: p[k] for k in ("z", "projection", "codebook")}
  arrays["tau"] = variables["quant"]["tau"]
  if neighbors is not None:
    arrays["neighbors"] = neighbors
  settings = {"projection": "learned", "store": "codebook", **recorded.DEFAULTS}
  rows, _ = kernel_math.mode_rows("quantize", arrays, settings, config, train=True)
  kernel = rows.reshape(32, 16).T  # Dense rows: (out, in) subvectors, PyTorch order
  return X @ kernel + p["bias"]


def test_refresh_one_keeps_no_lists_and_matches_top_t():
  variables = _init(1)
  assert DKM_LISTS not in variables
  out, state = _layer(1).apply(variables, X, mutable=[DKM_LISTS])
  assert DKM_LISTS not in state
  config = lq.nn.QuantConfig(dkm_top_t=TOP_T)
  np.testing.assert_array_equal(out, _expected_out(variables, config))
  np.testing.assert_array_equal(out, _layer(1).apply(variables, X))


def _perturbed(variables, step):
  """Params moved a little, as an optimizer step would, so that the ranking changes."""
  keys = jax.random.split(jax.random.key(100 + step), 2)
  p = dict(variables["params"])
  p["z"] = p["z"] + 0.3 * jax.random.normal(keys[0], p["z"].shape)
  p["codebook"] = p["codebook"] + 0.3 * jax.random.normal(keys[1], p["codebook"].shape)
  return {**variables, "params": p}


@pytest.mark.parametrize("refresh", [2, 3])
def test_lists_reranked_every_refresh_calls_and_used_between(refresh):
  variables = _init(refresh)
  lists = variables[DKM_LISTS]
  assert lists["neighbors"].shape == (32 * 16 // 4, TOP_T) and int(lists["count"]) == 0
  layer = _layer(refresh)
  apply = jax.jit(lambda v: layer.apply(v, X, mutable=[DKM_LISTS]))
  carried = None
  reranked = []
  for step in range(2 * refresh + 1):
    variables = _perturbed(variables, step)
    p = variables["params"]
    out, state = apply(variables)
    new = state[DKM_LISTS]["neighbors"]
    assert int(state[DKM_LISTS]["count"]) == step + 1
    fresh = dkm_lib.neighbors(p["z"], p["codebook"], top_t=TOP_T)
    if step % refresh == 0:
      np.testing.assert_array_equal(new, fresh)
      reranked.append(step)
    else:
      np.testing.assert_array_equal(new, carried)
      assert not np.array_equal(new, fresh)  # the lists really are stale here
    np.testing.assert_allclose(out, _expected_out(variables, layer.quant, new), atol=1e-6)
    carried = new
    variables = {**variables, DKM_LISTS: state[DKM_LISTS]}
  assert reranked == list(range(0, 2 * refresh + 1, refresh))


def test_not_mutable_ranks_as_top_t_and_evaluation_unchanged():
  variables = _init(4)
  variables[DKM_LISTS] = {**variables[DKM_LISTS], "count": jnp.int32(1)}  # stale zeros: unused
  config = lq.nn.QuantConfig(dkm_top_t=TOP_T)
  np.testing.assert_array_equal(_layer(4).apply(variables, X), _expected_out(variables, config))
  no_lists = {c: v for c, v in variables.items() if c != DKM_LISTS}
  np.testing.assert_array_equal(
    _layer(4, train=False).apply(variables, X), _layer(1, train=False).apply(no_lists, X)
  )


def test_fresh_lists_value_and_grad_equal_top_t():
  variables = _init(3)
  base = {c: v for c, v in variables.items() if c != DKM_LISTS}
  w = jax.random.normal(jax.random.key(5), (3, 32))

  def loss(params, refresh):
    v = {**(variables if refresh > 1 else base), "params": params}
    out, _ = _layer(refresh).apply(v, X, mutable=[DKM_LISTS])
    return jnp.sum(out * w)

  got = jax.jit(jax.value_and_grad(lambda p: loss(p, 3)))(variables["params"])
  want = jax.jit(jax.value_and_grad(lambda p: loss(p, 1)))(variables["params"])
  np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
  for a, b in zip(jax.tree.leaves(got[1]), jax.tree.leaves(want[1]), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_refresh_below_one_is_an_error():
  with pytest.raises(ValueError, match="dkm_refresh=0"):
    lq.nn.QuantConfig(dkm_refresh=0)
  assert not dataclasses.replace(lq.nn.QuantConfig(), dkm_refresh=4, dkm_top_t=0).carries_lists(K)
  assert not lq.nn.QuantConfig(dkm_refresh=4, dkm_top_t=K).carries_lists(K)  # t = k: no ranking


def test_freezing_drops_the_lists():
  from lr2vq_jax import convert

  frozen = convert.quantize_to_frozen(_init(2))
  assert DKM_LISTS not in frozen and "codes" in frozen["quant"]
