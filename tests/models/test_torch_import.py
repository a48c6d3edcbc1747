"""torchvision-style state dicts import as flax variables and match a NumPy reference forward."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file

from lr2vq_jax.models import DigitsCNN
from lr2vq_jax.models.torch_import import flax_module_path, load_torchvision, torch_to_flax


class ConvBnRelu(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.Conv(6, (3, 3), strides=2, padding=((1, 1), (1, 1)), use_bias=False, name="conv1")(x)
    x = nn.BatchNorm(use_running_average=True, momentum=0.9, epsilon=1e-5, name="bn1")(x)
    return nn.relu(x)


def _state_dict(rng):
  return {
    "conv1.weight": rng.normal(size=(6, 4, 3, 3)).astype(np.float32),
    "bn1.weight": rng.uniform(0.5, 1.5, 6).astype(np.float32),
    "bn1.bias": rng.normal(size=6).astype(np.float32),
    "bn1.running_mean": rng.normal(size=6).astype(np.float32),
    "bn1.running_var": rng.uniform(0.5, 2.0, 6).astype(np.float32),
    "bn1.num_batches_tracked": np.array(7, np.int64),
  }


def _numpy_reference(sd, x_nchw):
  """PyTorch semantics in NumPy: conv2d (OIHW, stride 2, pad 1) → BatchNorm (eval) → ReLU."""
  w = sd["conv1.weight"]
  xp = np.pad(x_nchw, ((0, 0), (0, 0), (1, 1), (1, 1)))
  n, _, h, wd = x_nchw.shape
  oh, ow = (h + 2 - 3) // 2 + 1, (wd + 2 - 3) // 2 + 1
  out = np.zeros((n, w.shape[0], oh, ow), np.float64)
  for i in range(oh):
    for j in range(ow):
      patch = xp[:, :, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3]
      out[:, :, i, j] = np.einsum("nchw,ochw->no", patch, w)
  mean, var = sd["bn1.running_mean"][:, None, None], sd["bn1.running_var"][:, None, None]
  out = (out - mean) / np.sqrt(var + 1e-5) * sd["bn1.weight"][:, None, None] + sd["bn1.bias"][
    :, None, None
  ]
  return np.maximum(out, 0)


@pytest.mark.parametrize("fmt", ["npz", "safetensors"])
def test_import_matches_numpy_reference(tmp_path, fmt):
  rng = np.random.default_rng(0)
  sd = _state_dict(rng)
  path = tmp_path / f"sd.{fmt}"
  if fmt == "npz":
    np.savez(path, **sd)
  else:
    save_file(sd, str(path))
  variables = load_torchvision(path)
  x = rng.normal(size=(2, 4, 9, 9)).astype(np.float32)
  out = ConvBnRelu().apply(variables, jnp.asarray(x.transpose(0, 2, 3, 1)))
  np.testing.assert_allclose(
    np.asarray(out).transpose(0, 3, 1, 2), _numpy_reference(sd, x), rtol=1e-4, atol=1e-4
  )


def test_full_model_state_dict_has_the_init_structure():
  model = DigitsCNN()
  # Shapes only: traced, nothing compiled.
  abstract = jax.eval_shape(
    lambda key: model.init(key, jnp.ones((1, 8, 8, 1)), train=False), jax.random.key(0)
  )
  expected = jax.tree.map(lambda a: tuple(a.shape), abstract)
  rng = np.random.default_rng(1)
  sd = {}
  for i, (cin, cout) in enumerate([(1, 32), (32, 64), (64, 128)], start=1):
    sd[f"conv{i}.weight"] = rng.normal(size=(cout, cin, 3, 3)).astype(np.float32)
    for leaf in ("weight", "bias", "running_mean", "running_var"):
      sd[f"bn{i}.{leaf}"] = rng.normal(size=cout).astype(np.float32)
  sd["fc.weight"] = rng.normal(size=(10, 128)).astype(np.float32)
  sd["fc.bias"] = rng.normal(size=10).astype(np.float32)
  variables = torch_to_flax(sd)
  assert jax.tree.map(jnp.shape, variables) == expected
  np.testing.assert_array_equal(variables["params"]["fc"]["kernel"], sd["fc.weight"].T)


def test_module_names_map_like_torchvision():
  assert flax_module_path("layer1.0.downsample.0") == ("layer1_0", "downsample_conv")
  assert flax_module_path("layer4.1.bn2") == ("layer4_1", "bn2")
  assert flax_module_path("fc") == ("fc",)
