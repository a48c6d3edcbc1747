"""NNX export / load: the linen artifact, decoded into an unedited float model with every leaf checked."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import lr2vq_jax as lq
from tests.support.nnx_models import ConvNet

# conv1 (432 weights / m 9) and conv2 (1152 / 24) both have a 48 × 4 Z with k = 8: one k-means
# program for the two convolutions.
RULES = [
  lq.Rule("conv1", k=8, m=9, d=4),
  lq.Rule("conv2", k=8, m=24, d=4),
  lq.Rule("fc", k=4, m=4, d=2),
]


class Wider(ConvNet):
  def __init__(self, rngs):
    super().__init__(rngs)
    self.fc = nnx.Linear(16, 12, rngs=rngs)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
  x = jax.random.normal(jax.random.key(1), (4, 8, 8, 3))
  model = ConvNet(nnx.Rngs(0))
  model.train()
  model(x)  # move the BatchNorm statistics off their initial values
  lq.nnx.quantize_model(model, RULES, "quantize", key=jax.random.key(2))
  model.eval()
  path = tmp_path_factory.mktemp("nnx") / "artifact"
  manifest = lq.nnx.export(model, RULES, path)
  return x, model(x), path, manifest


def test_decoded_model_equals_hard_eval(artifact):
  x, hard, path, manifest = artifact
  assert sorted(manifest["layers"]) == ["conv1", "conv2", "fc"] and "bn:bn1" in manifest["float"]
  fresh = lq.nnx.load_into(ConvNet(nnx.Rngs(9)), path)
  fresh.eval()
  np.testing.assert_allclose(fresh(x), hard, atol=2e-5)
  assert fresh.fc.kernel[...].dtype == jnp.float32
  assert isinstance(fresh.conv1.kernel, nnx.Param)


def test_load_refuses_what_does_not_fit(artifact):
  _, _, path, _ = artifact
  with pytest.raises(lq.ArtifactError, match="params/fc/bias: artifact shape"):
    lq.nnx.load_into(Wider(nnx.Rngs(0)), path)
  quantized = lq.nnx.quantize_model(ConvNet(nnx.Rngs(0)), RULES, "lowrank")
  with pytest.raises(lq.ArtifactError, match="float model"):
    lq.nnx.load_into(quantized, path)
  decoded = lq.load(path).decode()
  decoded["params"]["extra"] = {"kernel": np.zeros((2, 2), np.float32)}
  with pytest.raises(lq.ArtifactError, match="'params/extra/kernel' is not a variable"):
    lq.nnx.load_into(ConvNet(nnx.Rngs(0)), decoded)
  del decoded["params"]["extra"], decoded["params"]["fc"]["bias"]
  with pytest.raises(lq.ArtifactError, match="no value for model variables"):
    lq.nnx.load_into(ConvNet(nnx.Rngs(0)), decoded)
  with pytest.raises(lq.ArtifactError, match="epsilon"):
    model = ConvNet(nnx.Rngs(0))
    model.bn1.epsilon = 1e-3
    lq.nnx.load_into(model, path)
