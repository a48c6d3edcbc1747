"""ResNet V1.5 (stride on the 3×3 conv) in flax linen, with torchvision module names.

Paths match torchvision's state-dict keys with "." -> "_" at the block level: conv1, bn1,
layer{1..4}_{j}/{conv1,bn1,conv2,bn2[,conv3,bn3],downsample_conv,downsample_bn}, fc. Padding is
explicit (PyTorch's symmetric padding, not SAME), so imported torchvision weights give the same
outputs. Conv and Dense constructors are pluggable (`conv`, `dense`, `norm`), flax-examples style.
Inputs are NHWC; logits are returned in float32.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

ModuleDef = Any

# torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu") for convs.
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _pad(kernel: int) -> tuple[tuple[int, int], tuple[int, int]]:
  p = kernel // 2
  return ((p, p), (p, p))


class BasicBlock(nn.Module):
  """Two 3×3 convs (stride on the first), identity or 1×1 downsample shortcut; expansion 1."""

  filters: int
  conv: ModuleDef
  norm: ModuleDef
  act: Callable = nn.relu
  strides: int = 1
  zero_init_residual: bool = False

  expansion = 1

  @nn.compact
  def __call__(self, x):
    s = (self.strides, self.strides)
    y = self.conv(self.filters, (3, 3), s, padding=_pad(3), name="conv1")(x)
    y = self.act(self.norm(name="bn1")(y))
    y = self.conv(self.filters, (3, 3), padding=_pad(3), name="conv2")(y)
    scale_init = nn.initializers.zeros if self.zero_init_residual else nn.initializers.ones
    y = self.norm(scale_init=scale_init, name="bn2")(y)
    if self.strides != 1 or x.shape[-1] != self.filters:
      x = self.conv(self.filters, (1, 1), s, padding="VALID", name="downsample_conv")(x)
      x = self.norm(name="downsample_bn")(x)
    return self.act(y + x)


class Bottleneck(nn.Module):
  """1×1 reduce, 3×3 (stride here: V1.5), 1×1 expand ×4, identity or 1×1 downsample shortcut."""

  filters: int
  conv: ModuleDef
  norm: ModuleDef
  act: Callable = nn.relu
  strides: int = 1
  zero_init_residual: bool = False

  expansion = 4

  @nn.compact
  def __call__(self, x):
    s = (self.strides, self.strides)
    out = self.filters * self.expansion
    y = self.conv(self.filters, (1, 1), padding="VALID", name="conv1")(x)
    y = self.act(self.norm(name="bn1")(y))
    y = self.conv(self.filters, (3, 3), s, padding=_pad(3), name="conv2")(y)
    y = self.act(self.norm(name="bn2")(y))
    y = self.conv(out, (1, 1), padding="VALID", name="conv3")(y)
    scale_init = nn.initializers.zeros if self.zero_init_residual else nn.initializers.ones
    y = self.norm(scale_init=scale_init, name="bn3")(y)
    if self.strides != 1 or x.shape[-1] != out:
      x = self.conv(out, (1, 1), s, padding="VALID", name="downsample_conv")(x)
      x = self.norm(name="downsample_bn")(x)
    return self.act(y + x)


class ResNet(nn.Module):
  """ResNet V1.5; BatchNorm momentum 0.9 / epsilon 1e-5 (PyTorch's 0.1 / 1e-5); NHWC input."""

  stage_sizes: Sequence[int]
  block_cls: ModuleDef
  num_classes: int = 1000
  num_filters: int = 64
  dtype: Any = jnp.float32
  act: Callable = nn.relu
  conv: ModuleDef = nn.Conv
  dense: ModuleDef = nn.Dense
  norm: ModuleDef = nn.BatchNorm
  zero_init_residual: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv = functools.partial(
      self.conv, use_bias=False, dtype=self.dtype, kernel_init=conv_kernel_init
    )
    norm = functools.partial(
      self.norm,
      use_running_average=not train,
      momentum=0.9,
      epsilon=1e-5,
      dtype=self.dtype,
    )
    x = jnp.asarray(x, self.dtype)
    x = conv(self.num_filters, (7, 7), (2, 2), padding=_pad(7), name="conv1")(x)
    x = self.act(norm(name="bn1")(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for i, num_blocks in enumerate(self.stage_sizes):
      for j in range(num_blocks):
        x = self.block_cls(
          filters=self.num_filters * 2**i,
          conv=conv,
          norm=norm,
          act=self.act,
          strides=2 if i > 0 and j == 0 else 1,
          zero_init_residual=self.zero_init_residual,
          name=f"layer{i + 1}_{j}",
        )(x)
    x = jnp.mean(x, axis=(1, 2))
    x = self.dense(self.num_classes, dtype=self.dtype, name="fc")(x)
    return jnp.asarray(x, jnp.float32)


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block_cls=BasicBlock)
ResNet34 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=BasicBlock)
ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=Bottleneck)
