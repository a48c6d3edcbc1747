"""A plain NNX vision transformer converted without edits: train a step, export, load, decode."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import lr2vq_jax as lq
from tests.support.nnx_models import ViT

# Every layer's Z is 32 × 4 with k = 8 (patch: 768 weights / m 24; attention 256 / 8; MLP 512 / 16):
# one k-means (and one hard-code assignment) program serves them all, three kinds of layer.
RULES = [
  lq.Rule(r"^patch$", k=8, m=24, d=4),
  lq.Rule(r"attn/(query|key|value|out)$", k=8, m=8, d=4),
  lq.Rule(r"mlp/layers/\d+$", k=8, m=16, d=4),
  lq.Rule(r"^head$", skip=True),
]


@pytest.fixture(scope="module")
def data():
  x = jax.random.normal(jax.random.key(1), (4, 8, 8, 3))
  y = jnp.arange(4) % 10
  return x, y


def test_plan_and_describe_need_no_inputs():
  abstract = nnx.eval_shape(lambda: ViT(rngs=nnx.Rngs(0)))
  plan = lq.nnx.plan_model(abstract, RULES)
  assert sorted(plan) == sorted(
    ["patch"]
    + [f"blocks/{i}/attn/{p}" for i in range(2) for p in ("query", "key", "value", "out")]
    + [f"blocks/{i}/mlp/layers/{j}" for i in range(2) for j in (0, 2)]
  )
  assert plan["blocks/0/attn/query"].view_shape == (16, 16)  # LinearGeneral (in, heads, head_dim)
  assert plan["blocks/0/attn/out"].view_shape == (16, 16)  # (heads, head_dim, out) -> (in, out)
  table = lq.nnx.describe(abstract, RULES)
  assert "head" in table and "(skip)" in table and "blocks/1/mlp/layers/2" in table


def test_train_step_export_load(tmp_path, data):
  """One block (every kind of layer: patch conv, attention's LinearGenerals, MLP Linears): the
  jitted soft-DKM gradient, the costliest compile here, grows with every quantized layer."""
  x, y = data
  model = ViT(depth=1, rngs=nnx.Rngs(0))
  config = lq.QuantConfig(commitment=0.1)
  lq.nnx.quantize_model(model, RULES, "quantize", key=jax.random.key(2), config=config)
  assert type(model.blocks[0].attn.query) is nnx.LinearGeneral  # the layer itself is unchanged
  optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
  before = nnx.state(model, lq.nnx.QuantState)
  before = jax.tree.map(np.asarray, before)

  def loss_fn(model):
    logits, losses = nnx.capture(model, lq.nnx.Losses)(x)
    task = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return task + lq.nnx.sum_losses(losses), lq.nnx.sum_losses(losses)

  model.train()
  # One jitted program per call (as a training loop runs it), not hundreds of op-by-op compiles.
  (_, commitment), grads = nnx.jit(nnx.value_and_grad(loss_fn, has_aux=True))(model)
  assert float(commitment) > 0
  for leaf in ("z", "projection", "codebook"):
    g = grads["blocks"][0]["attn"]["query"]["kernel"][leaf][...]
    assert float(jnp.abs(g).max()) > 0, leaf
  assert not jax.tree.leaves(nnx.state(grads, lq.nnx.QuantState))  # τ, settings: no gradient
  nnx.jit(lambda optimizer, model, grads: optimizer.update(model, grads))(optimizer, model, grads)
  after = jax.tree.map(np.asarray, nnx.state(model, lq.nnx.QuantState))
  jax.tree.map(np.testing.assert_array_equal, before, after)  # the optimizer never touched them

  model.eval()
  forward = nnx.jit(lambda model, x: model(x))
  hard = forward(model, x)
  lq.nnx.export(model, RULES, tmp_path / "artifact")
  fresh = ViT(depth=1, rngs=nnx.Rngs(7))
  lq.nnx.load_into(fresh, tmp_path / "artifact")
  np.testing.assert_allclose(forward(fresh, x), hard, atol=2e-5, rtol=0)
