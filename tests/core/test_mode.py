"""`lq.Mode`: a layer's mode as a str enum; plain names keep working, `stage=` is a deprecated
alias that still works, and an unknown mode is one ValueError naming the choices."""

from __future__ import annotations

import json
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import lr2vq_jax as lq
from lr2vq_jax import convert
from lr2vq_jax.core import kernel as kernel_math
from lr2vq_jax.core.mode import MODES, QUANTIZED, Mode, as_mode

RULE = lq.Rule(r"Dense_0", k=4, m=4, d=2)
X = jnp.ones((2, 16))


class Net(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool = False):
    return nn.Dense(8)(x)


def test_mode_is_its_plain_name():
  assert MODES == (Mode.FLOAT, Mode.LOWRANK, Mode.QUANTIZE, Mode.FROZEN)
  assert lq.Mode is Mode and lq.nnx.Mode is Mode and lq.nn.Mode is Mode
  assert Mode("quantize") is Mode.QUANTIZE and Mode(Mode.FROZEN) is Mode.FROZEN
  assert Mode.QUANTIZE == "quantize" and "quantize" == Mode.QUANTIZE
  assert {"quantize": 1}[Mode.QUANTIZE] == 1 and {Mode.LOWRANK: 2}["lowrank"] == 2
  assert f"{Mode.FROZEN}-mode" == "frozen-mode" and str(Mode.LOWRANK) == "lowrank"
  assert json.loads(json.dumps({"mode": Mode.QUANTIZE})) == {"mode": "quantize"}
  assert [m.order for m in MODES] == [0, 1, 2, 3]
  assert set(kernel_math.MODE_ROWS) == set(QUANTIZED)


@pytest.mark.parametrize("bad", ["bogus", "Quantize", "", None, 3])
def test_unknown_mode_is_one_clear_error(bad):
  with pytest.raises(ValueError, match=r"mode=.*expected one of \('float', 'lowrank', 'quantize'"):
    as_mode(bad)


def test_unknown_mode_errors_at_every_entry_point():
  choices = r"expected one of \('float', 'lowrank', 'quantize', 'frozen'\)"
  with pytest.raises(ValueError, match=f"mode='bogus': {choices}"):
    lq.quantize_model(Net(), RULE, "bogus")
  with pytest.raises(ValueError, match=f"mode='bogus': {choices}"):
    lq.nnx.Linear(16, 8, rule=RULE, mode="bogus", rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"mode='float': expected one of \('lowrank'"):
    lq.nnx.quantize_model(nnx.Linear(16, 8, rngs=nnx.Rngs(0)), lq.Rule("", k=4, m=4), "float")
  with pytest.raises(ValueError, match=r"mode='float': expected one of \('lowrank'"):
    kernel_math.mode_rows("float", {}, {}, lq.QuantConfig(), train=False)


def test_names_and_enum_members_make_the_same_variables():
  """Configs and checkpoints hold plain names: both spellings are one model."""
  by_name = lq.quantize_model(Net(), RULE, "quantize").init(jax.random.key(0), X)
  by_enum = lq.quantize_model(Net(), RULE, Mode.QUANTIZE).init(jax.random.key(0), X)
  assert jax.tree.structure(by_name) == jax.tree.structure(by_enum)
  jax.tree.map(np.testing.assert_array_equal, by_name, by_enum)
  assert convert.mode_of(by_name) is Mode.QUANTIZE
  layer = lq.nn.Dense(8, rule=RULE, mode="lowrank")
  assert layer.mode == Mode.LOWRANK and "z" in layer.init(jax.random.key(0), X)["params"]


def test_stage_keyword_still_works_with_a_deprecation_warning():
  with pytest.warns(DeprecationWarning, match="stage= is deprecated, use mode="):
    model = lq.quantize_model(Net(), RULE, stage="frozen")
  assert model.mode is Mode.FROZEN
  with pytest.warns(DeprecationWarning, match=r"QuantizedModel\.stage is deprecated"):
    assert model.stage == "frozen"
  with pytest.raises(TypeError, match="give mode= only"), warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    lq.quantize_model(Net(), RULE, "lowrank", stage="frozen")

  with pytest.warns(DeprecationWarning, match="stage= is deprecated"):
    layer = lq.nnx.Linear(16, 8, rule=RULE, stage="lowrank", rngs=nnx.Rngs(0))
  assert layer.mode is Mode.LOWRANK and layer.kernel.mode is Mode.LOWRANK
  with pytest.warns(DeprecationWarning, match=r"QuantizedKernel\.stage is deprecated"):
    assert layer.kernel.stage == "lowrank"

  model = nnx.Linear(16, 8, rngs=nnx.Rngs(0))
  with pytest.warns(DeprecationWarning, match="stage= is deprecated"):
    lq.nnx.quantize_model(model, lq.Rule("", k=4, m=4, d=2), stage="lowrank")
  assert model.kernel.mode is Mode.LOWRANK

  view = lq.nnx.LinenView(lambda rngs: nnx.Linear(16, 8, rngs=rngs))
  with pytest.warns(DeprecationWarning, match="stage= is deprecated"):
    quantized = view.lr2vq_quantize(lq.Rule("", k=4, m=4), stage="quantize")
  assert quantized.mode is Mode.QUANTIZE

  variables = lq.quantize_model(Net(), RULE, "lowrank").init(jax.random.key(0), X)
  with pytest.warns(DeprecationWarning, match="use mode_of"):
    assert convert.stage_of(variables) == convert.mode_of(variables) == "lowrank"


def test_library_code_uses_no_deprecated_name():
  """A whole float → lowrank → quantize → frozen → export round trip warns nothing."""
  with warnings.catch_warnings():
    warnings.simplefilter("error", DeprecationWarning)
    variables = Net().init(jax.random.key(0), X)
    lowrank = convert.float_to_lowrank(variables, RULE)
    quant = convert.lowrank_to_quantize(lowrank, RULE, key=jax.random.key(1))
    hard = lq.quantize_model(Net(), RULE, Mode.QUANTIZE).apply(quant, X)
    frozen = convert.quantize_to_frozen(quant)
    np.testing.assert_allclose(
      lq.quantize_model(Net(), RULE, Mode.FROZEN).apply(frozen, X), hard, rtol=1e-6, atol=1e-6
    )
