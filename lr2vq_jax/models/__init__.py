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
# 1/8-width ResNets (8 stem filters): the same layers, module paths and presets, for CPU smoke
# runs whose point is the plumbing (data, stages, export), not the compute. `_width8_1block`, what
# `:runlocal` trains, also keeps one block per stage (layer{1..4}_0: the same layer kinds, shortcut
# kinds and preset rules, half the layers, so its programs compile in about half the time).
MODELS.update(
  {
    f"{name}_width8{suffix}": functools.partial(MODELS[name], num_filters=8, **blocks)
    for name in ("resnet18", "resnet50")
    for suffix, blocks in (("", {}), ("_1block", {"stage_sizes": (1,) * 4}))
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
