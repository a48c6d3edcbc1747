"""No-edit NNX conversion: the same numbers as linen on the same weights, and clear errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import lr2vq_jax as lq
from lr2vq_jax import convert
from lr2vq_jax.core.recorded import SettingError, StageError
from tests.support.nnx_models import ConvNet, LinenConvNet, linen_weights_into

# conv1 (432 weights / m 9) and conv2 (1152 / 24) both have a 48 × 4 Z with k = 8: one k-means
# program for the two convolutions.
RULES = [
  lq.Rule("conv1", k=8, m=9, d=4),
  lq.Rule("conv2", k=8, m=24, d=4),
  lq.Rule("fc", k=4, m=4, d=2),
]
KEY = jax.random.key(3)


@pytest.fixture(scope="module")
def setup():
  x = jax.random.normal(jax.random.key(1), (4, 8, 8, 3))
  variables = LinenConvNet().init(jax.random.key(0), x)
  return x, variables


@pytest.fixture(scope="module")
def linen_modes(setup):
  """The linen variables in each mode, converted once along the chain (one k-means for all)."""
  _, variables = setup
  lowrank = convert.float_to_lowrank(variables, RULES)
  quantize = convert.lowrank_to_quantize(lowrank, RULES, key=KEY)
  return {"lowrank": lowrank, "quantize": quantize, "frozen": convert.quantize_to_frozen(quantize)}


def _nnx_model(variables) -> ConvNet:
  model = ConvNet(nnx.Rngs(5))
  linen_weights_into(model, variables)
  return model


def _linen_logits(variables, stage, x, rules=RULES):
  return lq.nn.quantize_model(LinenConvNet(), rules, stage).apply(variables, x)


@pytest.mark.parametrize("stage", ["lowrank", "quantize", "frozen"])
def test_linen_and_nnx_agree_on_the_same_weights(setup, linen_modes, stage):
  x, variables = setup
  v = linen_modes[stage]
  model = lq.nnx.quantize_model(_nnx_model(variables), RULES, stage, key=KEY)
  model.eval()
  np.testing.assert_array_equal(model(x), _linen_logits(v, stage, x))
  # the layout export reads is the linen one, array for array
  ours = jax.tree.map(np.asarray, lq.nnx.to_variables(model))
  jax.tree.map(np.testing.assert_array_equal, ours["params"], v["params"])
  jax.tree.map(np.testing.assert_array_equal, ours["quant"], v["quant"])


@pytest.mark.parametrize("method", ["pq", "dkm"])
def test_baselines_agree_with_linen(setup, method):
  x, variables = setup
  if method == "pq":
    v, stage = convert.float_to_pq(variables, RULES, key=KEY), "frozen"
  else:
    v, stage = convert.float_to_dkm(variables, RULES, key=KEY), "quantize"
  model = lq.nnx.quantize_model(_nnx_model(variables), RULES, stage, key=KEY, method=method)
  model.eval()
  assert model.fc.kernel.plan.d == model.fc.kernel.plan.m  # d̃ = m
  np.testing.assert_array_equal(model(x), _linen_logits(v, stage, x, convert.vanilla(RULES)))


def test_stages_move_forward_from_where_they_are(setup):
  x, variables = setup
  model = lq.nnx.quantize_model(_nnx_model(variables), RULES, "quantize", key=KEY)
  model.eval()
  hard = model(x)
  lq.nnx.quantize_model(model, RULES, "frozen")  # quantize -> frozen: the same hard codes
  model.eval()
  np.testing.assert_array_equal(model(x), hard)
  assert not hasattr(model.conv1.kernel, "z") and model.conv1.kernel.codes[...].dtype == jnp.int32
  with pytest.raises(StageError, match="conv1"):
    lq.nnx.quantize_model(model, RULES, "quantize", key=KEY)
  lq.nnx.dequantize(model)
  assert isinstance(model.conv1.kernel, nnx.Param)
  np.testing.assert_allclose(model(x), hard, atol=1e-5)


def test_train_eval_and_view_select_soft_or_hard(setup):
  x, variables = setup
  model = lq.nnx.quantize_model(_nnx_model(variables), RULES, "quantize", key=KEY)
  model.eval()
  hard = model(x)
  soft_view = nnx.view(model, only=lq.nnx.QuantizedKernel, deterministic=False)
  assert model.fc.kernel.deterministic and not soft_view.fc.kernel.deterministic
  assert float(jnp.abs(soft_view(x) - hard).max()) > 0
  model.train()
  assert not model.fc.kernel.deterministic and not model.bn1.use_running_average


def test_commitment_is_captured_not_stored(setup):
  x, variables = setup
  config = lq.QuantConfig(commitment=0.5)
  model = lq.nnx.quantize_model(_nnx_model(variables), RULES, "quantize", key=KEY, config=config)
  model.train()
  _, losses = nnx.capture(model, lq.nnx.Losses)(x)
  assert set(losses) == {"conv1", "conv2", "fc"}
  assert float(lq.nnx.sum_losses(losses)) > 0
  model(x)  # outside capture: nothing sown, no new attribute
  assert not hasattr(model.fc.kernel, "commitment")


def test_unused_rule_and_unsupported_layers_are_errors(setup):
  _, variables = setup
  with pytest.raises(ValueError, match="matches no layer"):
    lq.nnx.plan_model(_nnx_model(variables), [*RULES, lq.Rule("nothing_here", k=4, m=4)])
  with pytest.raises(ValueError, match="matches no layer"):  # shadowed by the first rule
    lq.nnx.plan_model(_nnx_model(variables), [lq.Rule("c", k=4, m=4), lq.Rule("conv", k=4, m=4)])
  general = nnx.LinearGeneral(8, 8, batch_axis={0: 2}, axis=1, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="batch_axis"):
    lq.nnx.plan_model(general, lq.Rule("", k=4, m=4))
  with pytest.raises(ValueError, match="mode='bogus'"):
    lq.nnx.quantize_model(_nnx_model(variables), RULES, "bogus")
  with pytest.raises(ValueError, match="key="):
    lq.nnx.quantize_model(_nnx_model(variables), RULES, "quantize")


def test_einsum_by_kernel_layout():
  x = jax.random.normal(jax.random.key(0), (3, 8))
  good = nnx.Einsum("bd,dh->bh", (8, 8), rngs=nnx.Rngs(0))
  lq.nnx.quantize_model(good, lq.Rule("", k=4, m=8, d=8), "lowrank")
  np.testing.assert_allclose(good(x), jnp.einsum("bd,dh->bh", x, good.kernel[...]), atol=1e-6)
  bad = nnx.Einsum("bd,hd->bh", (8, 8), rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="contracted ones first"):
    lq.nnx.plan_model(bad, lq.Rule("", k=4, m=4))


def test_user_subclasses_keep_their_call_code():
  class Scaled(nnx.Linear):
    def __call__(self, x):
      return 2.0 * super().__call__(x)

  model = Scaled(8, 8, rngs=nnx.Rngs(0))
  x = jnp.ones((2, 8))
  y = model(x)
  lq.nnx.quantize_model(model, lq.Rule("", k=4, m=8, d=8), "lowrank")  # exact at d̃ = m
  assert type(model) is Scaled
  np.testing.assert_allclose(model(x), y, atol=1e-5)
  # ConvNet's fc shape and rule: its k-means program (a 40 × 2 Z, k = 4) is compiled already.
  lora = nnx.LoRALinear(16, 10, lora_rank=2, rngs=nnx.Rngs(0))
  lq.nnx.quantize_model(lora, lq.Rule("", k=4, m=4, d=2), "quantize", key=KEY)
  assert lora(jnp.ones((2, 16))).shape == (2, 10)


def test_explicit_setting_that_contradicts_the_recorded_one(setup):
  x, variables = setup
  model = lq.nnx.quantize_model(_nnx_model(variables), RULES, "quantize", key=KEY)
  model.fc.kernel.config = lq.QuantConfig(store="factored")
  model.eval()
  with pytest.raises(SettingError, match="store"):
    model(x)
