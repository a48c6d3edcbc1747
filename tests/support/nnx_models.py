"""Small NNX models written plainly (no LR²VQ code in them) for the NNX tests."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
from flax import nnx


class Block(nnx.Module):
  def __init__(self, dim: int, heads: int, rngs: nnx.Rngs):
    self.norm1 = nnx.LayerNorm(dim, rngs=rngs)
    self.attn = nnx.MultiHeadAttention(heads, dim, decode=False, rngs=rngs)
    self.norm2 = nnx.LayerNorm(dim, rngs=rngs)
    self.mlp = nnx.Sequential(
      nnx.Linear(dim, 2 * dim, rngs=rngs), nnx.gelu, nnx.Linear(2 * dim, dim, rngs=rngs)
    )

  def __call__(self, x):
    x = x + self.attn(self.norm1(x))
    return x + self.mlp(self.norm2(x))


class ViT(nnx.Module):
  """Patch conv, transformer blocks (nnx.MultiHeadAttention + MLP), mean pool, linear head."""

  def __init__(self, *, dim=16, depth=2, heads=2, patch=4, classes=10, rngs: nnx.Rngs):
    self.patch = nnx.Conv(3, dim, (patch, patch), strides=(patch, patch), rngs=rngs)
    self.blocks = nnx.List([Block(dim, heads, rngs) for _ in range(depth)])
    self.norm = nnx.LayerNorm(dim, rngs=rngs)
    self.head = nnx.Linear(dim, classes, rngs=rngs)

  def __call__(self, x):
    x = self.patch(x)
    x = x.reshape(x.shape[0], -1, x.shape[-1])
    for block in self.blocks:
      x = block(x)
    return self.head(self.norm(x).mean(axis=1))


class ConvNet(nnx.Module):
  """Conv (grouped too), BatchNorm and a dense head, named as `LinenConvNet`'s layers."""

  def __init__(self, rngs: nnx.Rngs):
    self.conv1 = nnx.Conv(3, 16, (3, 3), rngs=rngs)
    self.bn1 = nnx.BatchNorm(16, rngs=rngs)
    self.conv2 = nnx.Conv(16, 16, (3, 3), feature_group_count=2, rngs=rngs)
    self.fc = nnx.Linear(16, 10, rngs=rngs)

  def __call__(self, x):
    x = nnx.relu(self.bn1(self.conv1(x)))
    return self.fc(self.conv2(x).mean((1, 2)))


class LinenConvNet(nn.Module):
  """`ConvNet` in linen, the same layer names."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(16, (3, 3), name="conv1")(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not train, name="bn1")(x))
    x = nn.Conv(16, (3, 3), feature_group_count=2, name="conv2")(x)
    return nn.Dense(10, name="fc")(jnp.mean(x, (1, 2)))


def linen_weights_into(model: ConvNet, variables: dict) -> None:
  """The linen `LinenConvNet` variables into the NNX `ConvNet` (same names, same leaves)."""
  params, stats = variables["params"], variables["batch_stats"]
  state = {name: params[name] for name in ("conv1", "conv2", "fc")}
  state["bn1"] = {**params["bn1"], **stats["bn1"]}
  nnx.update(model, state)


class MyNnxNet(nnx.Module):
  """The README's own-model net (`examples/own_model.py`'s MyNet) in NNX: stem, conv, bn, head."""

  def __init__(self, rngs: nnx.Rngs):
    self.stem = nnx.Conv(3, 16, (3, 3), rngs=rngs)
    self.conv = nnx.Conv(16, 32, (3, 3), strides=2, use_bias=False, rngs=rngs)
    self.bn = nnx.BatchNorm(32, rngs=rngs)
    self.head = nnx.Linear(32, 4, rngs=rngs)

  def __call__(self, x):
    x = nnx.relu(self.stem(x))
    x = nnx.relu(self.bn(self.conv(x)))
    return self.head(jnp.mean(x, axis=(1, 2)))
