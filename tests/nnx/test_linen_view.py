"""`LinenView`: the NNX digits CNN behind linen's init/apply computes what the linen one does."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import lr2vq_jax as lq
from lr2vq_jax import convert
from lr2vq_jax.models import create_model
from lr2vq_jax.train.config import load_config
from tests.support.paths import QUICK

RULES = [lq.Rule("conv[23]", k=16, m=9, d=4)]  # the quick config's layers and rule
KMEANS = load_config(QUICK).quant.kmeans_iters


@pytest.fixture(scope="module")
def models():
  x = jax.random.normal(jax.random.key(0), (4, 8, 8, 1))
  linen = create_model("digits_cnn", num_classes=10)
  view = create_model("digits_cnn_nnx", num_classes=10)
  # One jitted init, not dozens of op-by-op initializer compiles.
  return x, linen, view, jax.jit(lambda key: linen.init(key, x, train=False))(jax.random.key(0))


@pytest.fixture(scope="module")
def quantized(models):
  """The float variables converted to the quantize mode under RULES (k-means once for the module;
  the quick config's Lloyd iterations on its layers' rows: the k-means its runs compile)."""
  variables = models[3]
  return convert.lowrank_to_quantize(
    convert.float_to_lowrank(variables, RULES), RULES, key=jax.random.key(1), kmeans_iters=KMEANS
  )


def _shapes(tree):
  """Shapes and dtypes of variables, or of `jax.eval_shape`'s description of them."""
  return jax.tree.map(lambda a: (tuple(a.shape), np.dtype(a.dtype)), dict(tree))


def test_same_variable_layout_and_float_logits(models):
  x, linen, view, variables = models
  init = jax.eval_shape(lambda key: view.init(key, x, train=False), jax.random.key(1))
  assert _shapes(init) == _shapes(variables)
  np.testing.assert_array_equal(view.apply(variables, x), linen.apply(variables, x, train=False))
  mutable = ["batch_stats", "losses"]
  # Both compiled the same way (jit vs op-by-op may round differently at XLA's -O0).
  y, new = jax.jit(lambda v: view.apply(v, x, train=True, mutable=mutable))(variables)
  y_ref, new_ref = jax.jit(lambda v: linen.apply(v, x, train=True, mutable=mutable))(variables)
  np.testing.assert_array_equal(y, y_ref)
  jax.tree.map(np.testing.assert_array_equal, new["batch_stats"], dict(new_ref["batch_stats"]))


def test_quantize_stage_matches_linen_soft_and_hard(models, quantized):
  x, linen, view, _ = models
  v = quantized
  config = lq.QuantConfig(commitment=0.1)
  ql, qn = (lq.nn.quantize_model(m, RULES, "quantize", config) for m in (linen, view))
  assert sorted(lq.nn.plan_model(view, RULES)) == ["conv2", "conv3"]
  key = jax.random.key(0)
  linen_init = jax.eval_shape(lambda key: ql.init(key, x, train=False), key)
  assert _shapes(jax.eval_shape(lambda key: qn.init(key, x), key)) == _shapes(linen_init)
  np.testing.assert_array_equal(qn.apply(v, x), ql.apply(v, x, train=False))
  mutable = ["batch_stats", "losses"]
  y, new = qn.apply(v, x, train=True, mutable=mutable)
  y_ref, new_ref = ql.apply(v, x, train=True, mutable=mutable)
  np.testing.assert_array_equal(y, y_ref)
  assert float(lq.sum_losses(new)) == float(lq.sum_losses(new_ref)) > 0
  hard_bn = qn.apply(v, x, train=True, quant_train=False, mutable=["batch_stats"])[0]
  ref_bn = ql.apply(v, x, train=True, quant_train=False, mutable=["batch_stats"])[0]
  np.testing.assert_array_equal(hard_bn, ref_bn)


def test_train_steps_of_the_training_system_match_linen(models):
  """Two steps of the trainer's own quantize step (its state, jit, shardings and batches): the same
  state for both front ends. The very programs the quick run (linen) and tests/nnx/test_training.py
  (NNX) train with: the suite's compilation cache holds them."""
  from lr2vq_jax.train import input_pipeline, partitioning, trainer
  from lr2vq_jax.train.state import create_train_state
  from lr2vq_jax.train.step import make_train_step

  variables = models[3]
  config = load_config(QUICK)
  out, v = {}, None
  for name in ("digits_cnn", "digits_cnn_nnx"):
    config.model = name
    stage = trainer.build_stage(config, "quantize", "/nonexistent")
    if v is None:  # one conversion (k-means) for both: the same starting variables
      rules, layer_config = stage.rules, stage.layer_config
      v = convert.lowrank_to_quantize(
        convert.float_to_lowrank(variables, rules, config=layer_config),
        rules,
        key=jax.random.key(1),
        kmeans_iters=config.quant.kmeans_iters,
        config=layer_config,
      )
    assert (stage.rules, stage.layer_config) == (rules, layer_config)
    # As the trainer starts the stage from converted variables (zero DKM lists, ranked at the
    # first step) and steps it.
    state = create_train_state(
      stage.model, stage.tx, stage.sample_input, stage.mesh, jax.random.key(0), dict(v)
    )
    step = partitioning.jit_train_step(
      make_train_step(stage.model, stage.cfg, stage.tx, stage.num_steps),
      trainer.abstract_state(stage),
      stage.mesh,
    )
    batches = input_pipeline.build_input(config.data, split="train", start_step=0)
    for _ in range(2):  # the step donates `state`
      state, metrics = step(state, partitioning.global_batch(next(batches), stage.mesh))
    batches.close()
    out[name] = (jax.device_get(state.params), jax.device_get(state.model_state), metrics)
  (p1, s1, m1), (p2, s2, m2) = out["digits_cnn"], out["digits_cnn_nnx"]
  jax.tree.map(np.testing.assert_array_equal, p1, p2)
  jax.tree.map(np.testing.assert_array_equal, s1, s2)
  assert float(m1["loss"]) == float(m2["loss"])


def test_carried_dkm_state_is_made_used_and_written_as_linen_does(models, quantized):
  """Converted variables (no `dkm_lists`): a training apply that may write them makes them as
  linen does; one that cannot ranks every call, however stale the carried lists are."""
  x, linen, view, _ = models
  v = quantized
  config = lq.QuantConfig(dkm_refresh=4, dkm_warm=True)
  ql, qn = (lq.nn.quantize_model(m, RULES, "quantize", config) for m in (linen, view))
  mutable = ["batch_stats", lq.nn.DKM_LISTS]
  y, new = qn.apply(v, x, train=True, mutable=mutable)
  y_ref, new_ref = ql.apply(v, x, train=True, mutable=mutable)
  np.testing.assert_array_equal(y, y_ref)
  lists, lists_ref = new[lq.nn.DKM_LISTS], dict(new_ref[lq.nn.DKM_LISTS])
  assert int(lists["conv2"]["count"]) == 1
  jax.tree.map(np.testing.assert_array_equal, lists, lists_ref)
  stale = jax.tree.map(lambda a: a * 0 + (a.ndim == 0), dict(lists))  # count 1, zero lists
  carried = {**v, lq.nn.DKM_LISTS: stale}
  y = qn.apply(carried, x, train=True, mutable=["batch_stats"])[0]
  np.testing.assert_array_equal(y, ql.apply(carried, x, train=True, mutable=["batch_stats"])[0])
  np.testing.assert_array_equal(y, qn.apply(v, x, train=True, mutable=["batch_stats"])[0])
