"""Model definitions with torchvision-style module names (so presets and state dicts map 1:1)."""

import jax.numpy as jnp

from lr2vq_jax.models.cnn import DigitsCNN
from lr2vq_jax.models.resnet import (
  BasicBlock,
  Bottleneck,
  ResNet,
  ResNet18,
  ResNet34,
  ResNet50,
)

MODELS = {"digits_cnn": DigitsCNN, "resnet18": ResNet18, "resnet34": ResNet34, "resnet50": ResNet50}


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
  "ResNet",
  "ResNet18",
  "ResNet34",
  "ResNet50",
  "create_model",
]
