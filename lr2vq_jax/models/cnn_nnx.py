"""The digits CNN of `cnn.py` written in flax NNX, with the same layer names and numbers.

conv1(32)-BN-ReLU → conv2(64)-BN-ReLU → maxpool 2 → conv3(128)-BN-ReLU → mean → fc(10); no conv
biases. The training system runs it through `lq.nnx.LinenView` (`config.model =
"digits_cnn_nnx"`): the same presets, stages, checkpoints and artifact layout as the linen model.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
from flax import nnx

from lr2vq_jax.nnx.linen_view import LinenView


class DigitsCNNNnx(nnx.Module):
  """Three 3×3 convs with BatchNorm (momentum 0.9, ε 1e-5), global mean pool, dense head."""

  def __init__(
    self,
    num_classes: int = 10,
    widths: Sequence[int] = (32, 64, 128),
    in_channels: int = 1,
    dtype: Any = jnp.float32,
    *,
    rngs: nnx.Rngs,
  ):
    self.dtype = dtype
    conv = functools.partial(nnx.Conv, kernel_size=(3, 3), use_bias=False, dtype=dtype, rngs=rngs)
    norm = functools.partial(nnx.BatchNorm, momentum=0.9, epsilon=1e-5, dtype=dtype, rngs=rngs)
    chans = (in_channels, *widths)
    self.conv1, self.bn1 = conv(chans[0], chans[1]), norm(chans[1])
    self.conv2, self.bn2 = conv(chans[1], chans[2]), norm(chans[2])
    self.conv3, self.bn3 = conv(chans[2], chans[3]), norm(chans[3])
    self.fc = nnx.Linear(widths[-1], num_classes, dtype=dtype, rngs=rngs)

  def __call__(self, x):
    x = jnp.asarray(x, self.dtype)
    x = nnx.relu(self.bn1(self.conv1(x)))
    x = nnx.relu(self.bn2(self.conv2(x)))
    x = nnx.max_pool(x, (2, 2), strides=(2, 2))
    x = nnx.relu(self.bn3(self.conv3(x)))
    x = self.fc(jnp.mean(x, axis=(1, 2)))
    return jnp.asarray(x, jnp.float32)


def digits_cnn_nnx(num_classes: int = 10, dtype: Any = jnp.float32) -> LinenView:
  """The NNX digits CNN as the training system takes models (linen-style init/apply)."""
  return LinenView(functools.partial(DigitsCNNNnx, num_classes, dtype=dtype))
