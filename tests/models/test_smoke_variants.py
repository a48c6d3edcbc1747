"""The `:runlocal` smoke models: 1/8 width, one block per stage, the full model's layer kinds.

`resnet{18,50}_width8_1block` (what the ImageNet configs' `:runlocal` trains) must keep what the
smoke run is there to exercise: every kind of block and shortcut of the full network, under the
same module names and the same preset rules (3×3 convs with d̃ < m, 1×1 convs with d̃ = m at the
config's d̃ cap), only fewer blocks.
"""

import functools

import jax
import jax.numpy as jnp
import pytest

from lr2vq_jax.core.rules import resolve
from lr2vq_jax.models import MODELS, create_model
from lr2vq_jax.train.config import config_rules, load_config
from tests.support.paths import config as config_path


@functools.cache
def _params(name: str) -> dict:
  """The float params' shapes of registered model `name` at 32 px (traced, nothing compiled)."""
  net = create_model(name, num_classes=1000)
  x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
  return jax.eval_shape(lambda k, x: net.init(k, x, train=False), jax.random.key(0), x)["params"]


def _kernels(params: dict) -> dict[str, tuple[int, ...]]:
  """{"layer2_0/conv1": kernel shape, ...} of every conv and dense layer."""
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  return {
    "/".join(k.key for k in path[:-1]): leaf.shape
    for path, leaf in flat
    if path[-1].key == "kernel"
  }


@pytest.mark.parametrize("base", ["resnet18", "resnet50"])
def test_one_block_per_stage_of_the_width8_model(base):
  full, small = _params(f"{base}_width8"), _params(f"{base}_width8_1block")
  assert set(small) == {"conv1", "bn1", "fc", "layer1_0", "layer2_0", "layer3_0", "layer4_0"}
  # each kept block is the 1/8-width model's block of the same name, layer for layer, shape for
  # shape (so torchvision-layout weights of either import under the same names and layouts)
  for name, block in small.items():
    assert jax.tree.map(lambda s: s.shape, block) == jax.tree.map(lambda s: s.shape, full[name])
  assert small["conv1"]["kernel"].shape == (7, 7, 3, 8)  # 8 stem filters: 1/8 of 64
  assert _kernels(small).keys() < _kernels(full).keys()


def test_runlocal_trains_the_one_block_model_with_every_layer_kind():
  """ResNet-18 `:runlocal`: identity and downsample shortcuts, 3×3 convs with d̃ < m, 1×1 convs
  (downsample, fc) with d̃ = m, the stem kept in float: the preset's every rule applies."""
  config = load_config(config_path("imagenet_resnet18_large_lr2vq.py:runlocal"))
  assert config.model == "resnet18_width8_1block" and config.model in MODELS
  rules = config_rules(config)
  kernels = _kernels(_params(config.model))
  used = {}
  for path, shape in kernels.items():
    rule = resolve(rules, path)
    used[rule] = used.get(rule, 0) + 1
    if rule.skip:
      assert path == "conv1"
    elif len(shape) == 4 and shape[0] == 3:
      assert rule.d < rule.m, path
    else:
      assert len(shape) == 2 or shape[:2] == (1, 1), path
      assert rule.d == rule.m, path
  assert set(used) == set(rules)  # every rule of the preset matches some layer
  small = _params(config.model)
  assert "downsample_conv" not in small["layer1_0"]  # an identity-shortcut block
  assert all("downsample_conv" in small[f"layer{i}_0"] for i in (2, 3, 4))
