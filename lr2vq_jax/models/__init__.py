"""Model definitions with torchvision-style module names (so presets and state dicts map 1:1)."""

from lr2vq_jax.models.resnet import (
  BasicBlock,
  Bottleneck,
  ResNet,
  ResNet18,
  ResNet34,
  ResNet50,
)

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "ResNet18", "ResNet34", "ResNet50"]
