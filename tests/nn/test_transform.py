"""Quantizing a model written with plain flax.linen layers, by rules, without editing it."""

import jax
import jax.numpy as jnp
import pytest

import lr2vq_jax as lq
from lr2vq_jax import convert
from lr2vq_jax.nn import DKM_LISTS
from tests.support.plain_net import RULES, PlainNet, X


def test_rules_place_quantized_variables_and_forward_runs():
  model = lq.nn.quantize_model(PlainNet(), RULES, mode="quantize")
  variables = model.init(jax.random.key(0), X)
  params = variables["params"]
  assert set(params["stem"]) == {"kernel"}
  assert set(params["body"]) == {"z", "projection", "codebook", "bias"}
  assert params["body"]["z"].shape == (16 * 8 * 9 // 8, 3)
  assert set(params["proj"]) == {"z", "projection", "codebook", "bias"}
  assert params["proj"]["z"].shape == (16 * 16 // 4, 2)  # DenseGeneral: prod(out) rows of prod(in)
  assert params["head"]["z"].shape == (5 * 16 // 4, 4)
  assert set(params["norm"]) == {"scale", "bias"}
  out = model.apply(variables, X)
  assert out.shape == (2, 5)
  out_train, state = model.apply(variables, X, train=True, mutable=["batch_stats", "losses"])
  assert out_train.shape == (2, 5)


def test_plan_model_matches_the_variables_and_rejects_unused_rules():
  plan = lq.nn.plan_model(PlainNet(), RULES, X)
  assert sorted(plan) == ["body", "head", "proj"]
  assert plan["proj"].view_shape == (16, 16) and plan["proj"].d == 2
  assert plan["body"].k == 16 and plan["head"].k == 4  # clamp: n=20 → 2^floor(log2 5) = 4
  with pytest.raises(ValueError, match="matches no layer"):
    lq.nn.plan_model(PlainNet(), RULES + (lq.Rule("nonexistent", k=4, m=4),), X)


def _shape(a) -> tuple:
  return tuple(a.shape)


def test_float_model_converts_to_every_stage_with_the_same_paths():
  float_vars = PlainNet().init(jax.random.key(0), X)
  plan = lq.nn.plan_model(PlainNet(), RULES, X)
  lowrank = convert.float_to_lowrank(float_vars, RULES, plan=plan)
  # kmeans_iters as the other PlainNet tests (test_recorded, test_export): one compiled k-means per
  # layer shape for them all (the suite's compilation cache is shared by its processes).
  quant = convert.lowrank_to_quantize(lowrank, RULES, key=jax.random.key(1), kmeans_iters=3)
  frozen = convert.quantize_to_frozen(quant)
  for stage, variables in [("lowrank", lowrank), ("quantize", quant), ("frozen", frozen)]:
    model = lq.nn.quantize_model(PlainNet(), RULES, mode=stage)
    init = dict(jax.eval_shape(model.init, jax.random.key(0), X))  # shapes only: nothing compiled
    # Training DKM's carried state (lists, warm offset) is no conversion's business: init makes
    # it as zeros, and so does a training apply that may write it (a cold start, ranked first).
    carried = init.pop(DKM_LISTS, None)
    assert (carried is not None) == (stage == "quantize"), stage
    assert jax.tree.map(jnp.shape, variables) == jax.tree.map(_shape, init), stage
    assert model.apply(variables, X).shape == (2, 5)
    if carried is not None:
      _, made = model.apply(variables, X, train=True, mutable=["batch_stats", DKM_LISTS])
      assert jax.tree.map(jnp.shape, made[DKM_LISTS]) == jax.tree.map(_shape, carried)
  # Hard evaluation in the quantize stage is what the frozen stage computes.
  q = lq.nn.quantize_model(PlainNet(), RULES, mode="quantize").apply(quant, X)
  f = lq.nn.quantize_model(PlainNet(), RULES, mode="frozen").apply(frozen, X)
  assert jnp.allclose(q, f, rtol=1e-5, atol=1e-6)


def test_baseline_conversions():
  float_vars = PlainNet().init(jax.random.key(0), X)
  plan = lq.nn.plan_model(PlainNet(), RULES, X)
  # kmeans_iters as the other PlainNet tests: their compiled k-means on the same rows is reused.
  pq = convert.float_to_pq(float_vars, RULES, key=jax.random.key(1), plan=plan, kmeans_iters=3)
  assert pq["params"]["body"]["codebook"].shape == (16, 8)
  assert jnp.array_equal(pq["params"]["body"]["projection"], jnp.eye(8))
  model = lq.nn.quantize_model(PlainNet(), convert.vanilla(RULES), mode="frozen")
  assert model.apply(pq, X).shape == (2, 5)
  dkm = convert.float_to_dkm(float_vars, RULES, key=jax.random.key(1), plan=plan, kmeans_iters=3)
  assert dkm["params"]["body"]["z"].shape == (144, 8)
  model = lq.nn.quantize_model(PlainNet(), convert.vanilla(RULES), mode="quantize")
  assert model.apply(dkm, X).shape == (2, 5)


def test_describe_lists_every_layer_with_its_rule():
  text = lq.describe(PlainNet(), RULES, X)
  lines = text.splitlines()
  assert lines[0].split()[:2] == ["layer", "rule"]
  by_layer = {line.split()[0]: line for line in lines[2:-1] if not line.startswith("note:")}
  assert set(by_layer) == {"stem", "body", "proj", "head"}
  assert "(skip)" in by_layer["stem"]
  body = by_layer["body"].split()
  # body: 16×(8·9) kernel, m = 8 → n = 144, k = 16, d̃ = 3, 4 bits per code: 72 + 2·16·8 bytes.
  assert body[-6:] == ["144", "16", "8", "3", "4", str(72 + 256)]
  # head: n = 20 subvectors clamp k = 8 to 4, and the table says so.
  assert by_layer["head"].split()[-6:-4] == ["20", "8→4"]
  assert any(line.startswith("note: k=8 clamped to 4 on head") for line in lines)
  assert lines[-1].startswith("total ") and "bits: per code" in lines[-1]
