"""Model definitions with torchvision-style module names (so presets and state dicts map 1:1)."""

import functools

import jax.numpy as jnp

from lr2vq_jax.models.cnn import DigitsCNN
from lr2vq_jax.models.cnn_nnx import DigitsCNNNnx, digits_cnn_nnx
from lr2vq_jax.models.resnet import (
  BasicBlock,
  Bottleneck,
  ResNet,
  ResNet18,
  ResNet34,
  ResNet50,
)

MODELS = {
  "digits_cnn": DigitsCNN,
  "digits_cnn_nnx": digits_cnn_nnx,  # the same CNN in flax NNX
  "resnet18": ResNet18,
  "resnet34": ResNet34,
  "resnet50": ResNet50,
}
# 1/8-width ResNets (8 stem filters): the same layers, module paths and presets, for `:runlocal`
# CPU smoke runs whose point is the plumbing (data, stages, export), not the compute.
MODELS.update(
  {
    f"{name}_width8": functools.partial(MODELS[name], num_filters=8)
    for name in ("resnet18", "resnet50")
  }
)


def create_model(name: str, *, num_classes: int, dtype="float32"):
  """The float model registered as `name` (see MODELS), computing in `dtype`."""
  if name not in MODELS:
    raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")
  return MODELS[name](num_classes=num_classes, dtype=jnp.dtype(dtype))


__all__ = [
  "MODELS",
  "BasicBlock",
  "Bottleneck",
  "DigitsCNN",
  "DigitsCNNNnx",
  "ResNet",
  "ResNet18",
  "ResNet34",
  "ResNet50",
  "create_model",
]
