"""The small CNN of the embedded default (8×8 digits): three 3×3 convs with BatchNorm, GAP, dense.

conv1(32)-BN-ReLU → conv2(64)-BN-ReLU → maxpool 2 → conv3(128)-BN-ReLU → mean → fc(10); no conv
biases; 94,186 params. conv2 and conv3 hold 98% of the weights and are the ones compressed.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

ModuleDef = Any


class DigitsCNN(nn.Module):
  """Small CNN taking `conv`/`dense` factories like the ResNets (flax-examples style)."""

  num_classes: int = 10
  widths: Sequence[int] = (32, 64, 128)
  dtype: Any = jnp.float32
  conv: ModuleDef = nn.Conv
  dense: ModuleDef = nn.Dense

  @nn.compact
  def __call__(self, x, train: bool = True):
    conv = functools.partial(self.conv, kernel_size=(3, 3), use_bias=False, dtype=self.dtype)
    norm = functools.partial(
      nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype
    )
    x = jnp.asarray(x, self.dtype)
    for i, width in enumerate(self.widths, start=1):
      x = conv(width, name=f"conv{i}")(x)
      x = nn.relu(norm(name=f"bn{i}")(x))
      if i == 2:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = jnp.mean(x, axis=(1, 2))
    x = self.dense(self.num_classes, dtype=self.dtype, name="fc")(x)
    return jnp.asarray(x, jnp.float32)
