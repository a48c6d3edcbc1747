"""ResNet V1.5: torchvision parameter counts and module names, PyTorch geometry, BN semantics."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lr2vq_jax.models import ResNet18, ResNet34, ResNet50

MODELS = {"resnet18": ResNet18, "resnet34": ResNet34, "resnet50": ResNet50}


@functools.cache
def _shapes(name: str, size: int = 224):
  """The variables' shapes of model `name` at ImageNet size, traced once per module run."""
  x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  model = MODELS[name]()
  return jax.eval_shape(lambda k, x: model.init(k, x, train=False), jax.random.key(0), x)


@pytest.mark.parametrize(
  "name, count", [("resnet18", 11_689_512), ("resnet34", 21_797_672), ("resnet50", 25_557_032)]
)
def test_param_counts_equal_torchvision(name, count):
  params = _shapes(name)["params"]
  assert sum(p.size for p in jax.tree.leaves(params)) == count


def test_module_names_follow_torchvision():
  v18 = _shapes("resnet18")
  p = v18["params"]
  assert set(p) == {"conv1", "bn1", "fc", *(f"layer{i}_{j}" for i in range(1, 5) for j in range(2))}
  assert set(p["layer1_0"]) == {"conv1", "bn1", "conv2", "bn2"}
  assert set(p["layer2_0"]) == {"conv1", "bn1", "conv2", "bn2", "downsample_conv", "downsample_bn"}
  assert p["layer2_0"]["conv1"]["kernel"].shape == (3, 3, 64, 128)
  assert "bias" not in p["conv1"] and set(p["fc"]) == {"kernel", "bias"}
  assert set(v18["batch_stats"]["bn1"]) == {"mean", "var"}
  p50 = _shapes("resnet50")["params"]
  assert set(p50["layer1_0"]) == {
    *("conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "downsample_conv", "downsample_bn")
  }
  assert "downsample_conv" not in p50["layer1_1"]
  # V1.5: the stride sits on the 3x3 conv; the 1x1 reduce keeps the resolution.
  assert p50["layer2_0"]["conv2"]["kernel"].shape == (3, 3, 128, 128)
  assert p50["fc"]["kernel"].shape == (2048, 1000)


def test_pytorch_geometry():
  model = ResNet50(num_classes=10)
  x = jax.ShapeDtypeStruct((1, 225, 225, 3), jnp.float32)

  def run(key, x):
    variables = model.init(key, x, train=False)
    return model.apply(variables, x, train=False, capture_intermediates=True)

  logits, state = jax.eval_shape(run, jax.random.key(0), x)
  inter = state["intermediates"]
  # PyTorch: conv1 (7, s2, p3): 113; maxpool (3, s2, p1): 57; then /2 per stage with stride on 3x3.
  assert inter["layer1_0"]["__call__"][0].shape == (1, 57, 57, 256)
  assert inter["layer2_0"]["conv2"]["__call__"][0].shape == (1, 29, 29, 128)
  assert inter["layer4_2"]["__call__"][0].shape == (1, 8, 8, 2048)
  assert logits.shape == (1, 10) and logits.dtype == jnp.float32


_X = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)


def _numpy_init(shapes):
  """Variables from NumPy's RNG: compiling a threefry `init` of a ResNet takes ~20 s on CPU."""
  rng = np.random.default_rng(0)

  def fill(path, s):
    name = path[-1].key
    if name in ("scale", "var"):
      return jnp.ones(s.shape)
    if name in ("bias", "mean"):
      return jnp.zeros(s.shape)
    return jnp.asarray(rng.normal(size=s.shape) / np.sqrt(np.prod(s.shape[:-1])), jnp.float32)

  return jax.tree.map_with_path(fill, shapes)


class TaggedConv(nn.Conv):
  """A user conv factory: records that it was used."""

  def __call__(self, x):
    self.sow("intermediates", "tagged", True)
    return super().__call__(x)


def test_forward_train_and_eval_and_factories():
  half = ResNet18(num_classes=10, dtype=jnp.bfloat16)
  logits, variables = jax.eval_shape(
    lambda k, x: half.init_with_output(k, x, train=False), jax.random.key(0), _X
  )
  assert variables["params"]["conv1"]["kernel"].dtype == jnp.float32  # params stay fp32
  assert logits.dtype == jnp.float32

  model = ResNet18(num_classes=10, conv=TaggedConv, num_filters=8)
  x = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
  variables = _numpy_init(
    jax.eval_shape(lambda k: model.init(k, x, train=False), jax.random.key(0))
  )

  @jax.jit
  def train_step(variables):
    return model.apply(variables, x, train=True, mutable=["batch_stats", "intermediates"])

  logits, updates = train_step(variables)
  assert logits.shape == (4, 10) and logits.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(logits)))
  tags = jax.tree.leaves(updates["intermediates"])
  assert len(tags) == 20  # 1 stem + 16 block convs + 3 downsample convs
  # BatchNorm: running = 0.9·running + 0.1·batch (PyTorch momentum 0.1); init mean 0, var 1.
  # (Flax uses the biased batch variance here; PyTorch's running_var uses the unbiased one.)
  mean = updates["batch_stats"]["bn1"]["mean"]
  var = updates["batch_stats"]["bn1"]["var"]
  assert float(jnp.max(jnp.abs(mean))) > 0
  stem = nn.Conv(8, (7, 7), (2, 2), padding=((3, 3), (3, 3)), use_bias=False)
  y = stem.apply({"params": variables["params"]["conv1"]}, x)
  np.testing.assert_allclose(mean, 0.1 * y.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(var, 0.9 + 0.1 * y.var(axis=(0, 1, 2)), rtol=1e-4)
  eval_fn = jax.jit(lambda v: model.apply(v, x, train=False, mutable=["intermediates"])[0])
  new_vars = {"params": variables["params"], "batch_stats": updates["batch_stats"]}
  np.testing.assert_array_equal(eval_fn(new_vars), eval_fn(new_vars))
