"""A user's model written with plain flax.linen layers, its quantization rules and an input."""

import flax.linen as nn
import jax.numpy as jnp

import lr2vq_jax as lq


class PlainNet(nn.Module):
  """A user's model: only flax.linen layers, nothing from lr2vq_jax."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.relu(nn.Conv(8, (3, 3), use_bias=False, name="stem")(x))
    x = nn.relu(nn.Conv(16, (3, 3), strides=2, name="body")(x))
    x = nn.BatchNorm(use_running_average=not train, name="norm")(x)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.DenseGeneral((4, 4), name="proj")(x)  # kernel (16, 4, 4)
    return nn.Dense(5, name="head")(x.reshape(x.shape[0], -1))


RULES = (
  lq.Rule(r"^stem$", skip=True),
  lq.Rule(r"body", k=16, m=8, d=3),
  lq.Rule(r"proj", k=8, m=4, d=2),
  lq.Rule(r"head", k=8, m=4),
)
X = jnp.ones((2, 8, 8, 3))
