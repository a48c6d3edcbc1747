"""Direct NNX layers: flax's arguments plus rule / stage / quant."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import lr2vq_jax as lq

RULE = lq.Rule("", k=4, m=4, d=2)


@pytest.mark.parametrize(
  "ours, theirs, args, x",
  [
    (lq.nnx.Linear, nnx.Linear, (8, 6), (2, 8)),
    (lq.nnx.LinearGeneral, nnx.LinearGeneral, (8, (2, 4)), (2, 8)),
    (lq.nnx.Conv, nnx.Conv, (4, 8, (3, 3)), (2, 5, 5, 4)),
  ],
)
def test_float_stage_is_flax_layer(ours, theirs, args, x):
  x = jax.random.normal(jax.random.key(0), x)
  np.testing.assert_array_equal(
    ours(*args, rule=RULE, mode="float", rngs=nnx.Rngs(1))(x), theirs(*args, rngs=nnx.Rngs(1))(x)
  )


@pytest.mark.parametrize("stage", ["lowrank", "quantize", "frozen"])
def test_quantized_stages_train_only_params(stage):
  rule = lq.Rule("", k=4, m=9, d=3)
  layer = lq.nnx.Conv(4, 8, (3, 3), feature_group_count=2, rule=rule, mode=stage, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(0), (2, 5, 5, 4))
  assert layer(x).shape == (2, 5, 5, 8)
  assert isinstance(layer.kernel, lq.nnx.QuantizedKernel) and layer.kernel.mode == stage
  optimizer = nnx.Optimizer(layer, optax.sgd(0.1), wrt=nnx.Param)
  grads = nnx.grad(lambda m: jnp.sum(m(x) ** 2))(layer)
  optimizer.update(layer, grads)
  names = {path[-1] for path, _ in nnx.to_flat_state(grads)}
  expected = {"lowrank": {"z", "projection"}, "quantize": {"z", "projection", "codebook"}}
  assert names == {"bias", *expected.get(stage, {"codebook", "projection"})}
  quant = {path[-1] for path, _ in nnx.to_flat_state(nnx.state(layer, lq.nnx.QuantState))}
  assert ("tau" in quant) == (stage == "quantize") and ("codes" in quant) == (stage == "frozen")


def test_linear_general_hard_eval_matches_materialized_kernel():
  layer = lq.nnx.LinearGeneral(8, (2, 4), rule=RULE, mode="quantize", rngs=nnx.Rngs(0))
  layer.eval()
  x = jax.random.normal(jax.random.key(0), (3, 8))
  kernel = layer.kernel[...]
  assert kernel.shape == (8, 2, 4)
  np.testing.assert_allclose(
    layer(x), jnp.einsum("bi,ijk->bjk", x, kernel) + layer.bias[...], rtol=1e-5, atol=1e-6
  )
