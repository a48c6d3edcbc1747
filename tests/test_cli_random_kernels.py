"""`estimate-dim --model`'s random init: only the selected kernels are computed, with the values
(and the layer order) of the whole model's jitted init."""

import jax
import jax.numpy as jnp
import numpy as np

from lr2vq_jax.cli.sizing import random_kernels
from lr2vq_jax.cli.targets import MODELS, Target, _model, _rules
from lr2vq_jax.core.rules import iter_leaves


def _target() -> Target:
  preset, rules = _rules("digits_cnn", None, None)
  return Target(_model("digits_cnn", 10), MODELS["digits_cnn"], rules, preset)


def test_selected_kernels_are_the_whole_inits():
  target = _target()
  zeros = jnp.zeros((1, *target.input_shape))
  whole = jax.jit(lambda key: target.model.init(key, zeros, train=False))
  expected = dict(iter_leaves(whole(jax.random.key(3, impl="rbg"))["params"]))
  got = dict(iter_leaves(random_kernels(target, "conv[23]", 3)))
  assert list(got) == list(expected)  # the same leaves, in the whole init's order
  for keys, leaf in got.items():
    assert leaf.shape == expected[keys].shape, keys
    if keys in {("conv2", "kernel"), ("conv3", "kernel")}:
      np.testing.assert_array_equal(np.asarray(leaf), np.asarray(expected[keys]))
    else:  # not computed: its shape only
      assert isinstance(leaf, jax.ShapeDtypeStruct), keys


def test_no_layer_selected_computes_nothing():
  leaves = dict(iter_leaves(random_kernels(_target(), "no_such_layer", 0)))
  assert leaves and all(isinstance(v, jax.ShapeDtypeStruct) for v in leaves.values())
