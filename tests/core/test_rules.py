"""Rules: validation, repr, first-match resolution and layer planning from shapes."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lr2vq_jax.core.rules import LayerPlan, Rule, plan_layers, resolve
from lr2vq_jax.core.subvectors import SubvectorError


def _sds(*shape):
  return jax.ShapeDtypeStruct(shape, jnp.float32)


PARAMS = {
  "conv1": {"kernel": _sds(7, 7, 3, 64)},
  "bn1": {"scale": _sds(64), "bias": _sds(64)},
  "layer1_0": {
    "conv1": {"kernel": _sds(3, 3, 64, 64)},
    "conv2": {"kernel": _sds(3, 3, 64, 64)},
    "downsample_conv": {"kernel": _sds(1, 1, 64, 128)},
  },
  "fc": {"kernel": _sds(128, 10), "bias": _sds(10)},
}


@pytest.mark.parametrize(
  "kwargs, match",
  [
    (dict(k=1, m=4), "k must be in"),
    (dict(k=65537, m=4), "k must be in"),
    (dict(k=256, m=0), "m must be"),
    (dict(k=256, m=4, d=0), "d must be between"),
    (dict(k=256, m=4, d=5), "d must be between"),
    (dict(k=256), "k and m are required"),
    (dict(k=256, m=4, skip=True), "skip rule takes no"),
    (dict(k=2.5, m=4), "integer"),
  ],
)
def test_rule_validation(kwargs, match):
  with pytest.raises(ValueError, match=match):
    Rule("fc", **kwargs)


def test_bad_regex_names_pattern():
  with pytest.raises(ValueError, match=r"layer\[1"):
    Rule("layer[1", k=256, m=4)


def test_repr_hash_and_frozen():
  assert repr(Rule("^conv1$", skip=True)) == "Rule('^conv1$', skip)"
  assert repr(Rule("fc", k=2048, m=4)) == "Rule('fc', k=2048, m=4)"
  assert repr(Rule("conv", k=256, m=18, d=8)) == "Rule('conv', k=256, m=18, d=8)"
  assert hash(Rule("fc", k=2, m=4)) == hash(Rule("fc", k=2, m=4))
  with pytest.raises(dataclasses.FrozenInstanceError):
    Rule("fc", k=2, m=4).k = 4
  assert Rule("fc", k=65536, m=1).k == 65536


def test_resolve_first_match_wins():
  rules = (Rule("^conv1$", skip=True), Rule("conv", k=256, m=9), Rule("conv2", k=16, m=3))
  assert resolve(rules, "conv1").skip
  assert resolve(rules, "layer1_0/conv1").m == 9
  assert resolve(rules, "layer1_0/conv2").m == 9  # the later, more specific rule never wins
  assert resolve(rules, "fc") is None


def test_plan_layers_from_shapes_and_arrays():
  rules = (
    Rule("^conv1$", skip=True),
    Rule(r"conv[12]$", k=256, m=18, d=6),
    Rule("downsample", k=256, m=4),
    Rule("^fc$", k=2048, m=4),
  )
  plans = plan_layers(PARAMS, rules)
  assert set(plans) == {"layer1_0/conv1", "layer1_0/conv2", "layer1_0/downsample_conv", "fc"}
  assert plans["layer1_0/conv1"] == LayerPlan("layer1_0/conv1", (3, 3, 64, 64), 2048, 256, 18, 6, 1)
  ds = plans["layer1_0/downsample_conv"]
  assert (ds.n, ds.k, ds.d) == (2048, 256, 4)  # d defaults to m
  fc = plans["fc"]
  assert (fc.n, fc.k, fc.rule_index) == (320, 64, 3)  # k clamped: 2^floor(log2(320 / 4)) = 64
  assert fc.code_bits == 320 * 6
  arrays = jax.tree.map(lambda s: np.zeros(s.shape, np.float32), PARAMS)
  assert plan_layers(arrays, rules) == plans
  assert plan_layers({"params": arrays, "batch_stats": {"bn1": {}}}, rules) == plans


def test_unmatched_layers_stay_float():
  plans = plan_layers(PARAMS, (Rule("^fc$", k=16, m=4),))
  assert list(plans) == ["fc"]


def test_rule_matching_nothing_is_named():
  with pytest.raises(ValueError, match=r"Rule\('layer9', k=256, m=4\) matches no layer"):
    plan_layers(PARAMS, (Rule("^fc$", k=16, m=4), Rule("layer9", k=256, m=4)))


def test_plan_errors_name_the_layer():
  with pytest.raises(SubvectorError, match="layer 'fc'.*m=5"):
    plan_layers(PARAMS, (Rule("^fc$", k=16, m=5),))
  tiny = {"fc": {"kernel": _sds(4, 1)}}
  with pytest.raises(ValueError, match="layer 'fc'.*n=1"):
    plan_layers(tiny, (Rule("^fc$", k=16, m=4),))


def test_kernel_like_leaves_only():
  params = {"emb": {"kernel": _sds(10)}, "fc": {"kernel": _sds(8, 8)}}  # ndim 1: not a layer
  assert list(plan_layers(params, (Rule("", k=4, m=2),))) == ["fc"]
