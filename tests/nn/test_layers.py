"""lr2vq_jax.nn layers: float parity with flax.linen, every stage runs, low-rank exactness."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lr2vq_jax as lq
from lr2vq_jax import convert
from lr2vq_jax.core.kernel import random_rows

CONV_CASES = [
  dict(features=8, kernel_size=(3, 3)),
  dict(features=8, kernel_size=(3, 3), strides=(2, 2), padding="VALID"),
  dict(features=6, kernel_size=(3, 3), padding="CIRCULAR", use_bias=False),
  dict(features=8, kernel_size=(3, 3), padding=((1, 2), (0, 1)), kernel_dilation=(2, 1)),
  dict(features=8, kernel_size=(3, 3), feature_group_count=2),
  dict(features=8, kernel_size=(2, 2), padding=((1, 1), (1, 1)), input_dilation=(1, 2)),
  dict(features=4, kernel_size=(1, 1), strides=2),
  dict(features=5, kernel_size=(3,), padding="SAME"),
]


@pytest.mark.parametrize("kwargs", CONV_CASES)
def test_conv_float_stage_matches_flax(kwargs):
  x = jax.random.normal(
    jax.random.key(0), (2, 9, 9, 4) if len(kwargs["kernel_size"]) == 2 else (2, 9, 4)
  )
  ref = nn.Conv(**kwargs)
  variables = ref.init(jax.random.key(1), x)
  ours = lq.nn.Conv(**kwargs, rule=lq.Rule(".*", k=4, m=2), mode="float")
  np.testing.assert_array_equal(ours.apply(variables, x), ref.apply(variables, x))
  # With no rule the layer is the flax layer whatever the stage.
  np.testing.assert_array_equal(
    lq.nn.Conv(**kwargs, mode="quantize").apply(variables, x), ref.apply(variables, x)
  )


@pytest.mark.parametrize(
  "cls,ref_cls,kwargs",
  [
    (lq.nn.Dense, nn.Dense, dict(features=6)),
    (lq.nn.Dense, nn.Dense, dict(features=6, use_bias=False, dtype=jnp.float32)),
    (lq.nn.DenseGeneral, nn.DenseGeneral, dict(features=(2, 3), axis=-1)),
  ],
)
def test_dense_float_stage_matches_flax(cls, ref_cls, kwargs):
  x = jax.random.normal(jax.random.key(0), (3, 8))
  ref = ref_cls(**kwargs)
  variables = ref.init(jax.random.key(1), x)
  ours = cls(**kwargs, rule=lq.Rule(".*", k=4, m=4), mode="float")
  np.testing.assert_array_equal(ours.apply(variables, x), ref.apply(variables, x))


@pytest.mark.parametrize("stage", ["lowrank", "quantize", "frozen"])
def test_every_stage_runs_and_holds_its_variables(stage):
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, 4))
  layer = lq.nn.Conv(8, (3, 3), rule=lq.Rule(".*", k=8, m=9, d=3), mode=stage)
  variables = layer.init(jax.random.key(1), x)
  params = variables["params"]
  assert "kernel" not in params
  n = 8 * 4 * 9 // 9
  expected = {
    "lowrank": {"z": (n, 3), "projection": (3, 9)},
    "quantize": {"z": (n, 3), "projection": (3, 9), "codebook": (8, 3)},
    "frozen": {"codebook": (8, 3), "projection": (3, 9)},
  }[stage]
  assert {k: v.shape for k, v in params.items() if k != "bias"} == expected
  assert tuple(variables["quant"]["shape"]) == (3, 3, 4, 8)
  if stage == "quantize":  # init's codebook: k distinct rows of Z
    rows = {tuple(r) for r in np.asarray(params["z"]).tolist()}
    book = [tuple(r) for r in np.asarray(params["codebook"]).tolist()]
    assert len(set(book)) == 8 and set(book) <= rows
  y = layer.apply(variables, x)
  assert y.shape == (2, 6, 6, 8) and bool(jnp.all(jnp.isfinite(y)))
  y_train, state = layer.clone(train=True).apply(variables, x, mutable=["losses"])
  assert y_train.shape == y.shape


def test_random_rows_are_a_distinct_random_subset():
  x = jnp.arange(1000, dtype=jnp.float32)[:, None]  # row i holds i
  a = np.asarray(random_rows(jax.random.key(0), x, 50))[:, 0]
  b = np.asarray(random_rows(jax.random.key(1), x, 50))[:, 0]
  assert len(set(a.tolist())) == 50 and set(a.tolist()) <= set(range(1000))
  assert set(a.tolist()) != set(b.tolist())
  assert a.max() - a.min() > 500  # spread over the rows, not a block
  assert sorted(np.asarray(random_rows(jax.random.key(2), x[:7], 7))[:, 0]) == list(range(7))


def test_quantize_stage_soft_vs_hard_and_commitment():
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, 4))
  cfg = lq.nn.QuantConfig(commitment=0.5, tau_alpha=0.01)
  layer = lq.nn.Conv(8, (3, 3), rule=lq.Rule(".*", k=8, m=9, d=3), mode="quantize", quant=cfg)
  variables = layer.init(jax.random.key(1), x)
  hard = layer.apply(variables, x)
  soft, state = layer.clone(train=True).apply(variables, x, mutable=["losses"])
  (commit,) = state["losses"]["commitment"]
  assert float(commit) > 0
  # Small τ: soft reconstruction is close to the hard one, but not identical.
  assert float(jnp.max(jnp.abs(soft - hard))) < 0.5 * float(jnp.max(jnp.abs(hard)))

  def loss(params):
    out, st = layer.clone(train=True).apply({**variables, "params": params}, x, mutable=["losses"])
    return jnp.sum(out**2) + sum(jax.tree.leaves(st["losses"]))

  grads = jax.grad(loss)(variables["params"])
  for name in ("z", "projection", "codebook"):
    assert float(jnp.linalg.norm(grads[name])) > 0, name


def test_float_to_lowrank_with_full_rank_reproduces_float_outputs():
  x = jax.random.normal(jax.random.key(0), (2, 7, 7, 4))
  rule = lq.Rule(".*", k=8, m=18)  # d = m
  ref = nn.Conv(8, (3, 3), strides=2, use_bias=True)
  variables = ref.init(jax.random.key(1), x)
  lowrank_vars = convert.float_to_lowrank(variables, [rule])
  ours = lq.nn.Conv(8, (3, 3), strides=2, rule=rule, mode="lowrank")
  np.testing.assert_allclose(
    ours.apply(lowrank_vars, x), ref.apply(variables, x), rtol=1e-4, atol=1e-5
  )


def test_bad_m_is_one_clear_error():
  layer = lq.nn.Conv(8, (3, 3), rule=lq.Rule(".*", k=8, m=7), mode="lowrank")
  with pytest.raises(ValueError, match="m"):
    layer.init(jax.random.key(0), jnp.ones((1, 4, 4, 4)))


def test_one_step_dkm_gradient_keeps_the_forward_and_trains_every_param():
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, 4))
  rule = lq.Rule(".*", k=8, m=9, d=3)
  outs, grads = {}, {}
  for mode in ("unrolled", "last"):
    cfg = lq.nn.QuantConfig(tau_alpha=0.01, dkm_grad=mode)
    layer = lq.nn.Conv(8, (3, 3), rule=rule, mode="quantize", quant=cfg, train=True)
    variables = layer.init(jax.random.key(1), x)

    def loss(params, layer=layer, variables=variables):
      return jnp.sum(layer.apply({**variables, "params": params}, x) ** 2)

    outs[mode] = layer.apply(variables, x)
    grads[mode] = jax.grad(loss)(variables["params"])
  np.testing.assert_allclose(outs["last"], outs["unrolled"], rtol=1e-4, atol=1e-5)
  for name in ("z", "projection", "codebook"):
    assert float(jnp.linalg.norm(grads["last"][name])) > 0, name
  # The projection sees the same soft rows either way: its gradient is the same.
  np.testing.assert_allclose(
    grads["last"]["projection"], grads["unrolled"]["projection"], rtol=1e-3, atol=1e-4
  )
  with pytest.raises(ValueError, match="dkm_grad"):
    lq.nn.QuantConfig(dkm_grad="implicit")
