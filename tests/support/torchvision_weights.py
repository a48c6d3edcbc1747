"""A torchvision-layout state dict (`.safetensors`) of a registered model, random values.

Written from the flax model's shapes by inverting the import's name and layout mapping, so a
test can run `--config.float.init_from=FILE` as documented without downloading torchvision.
"""

from __future__ import annotations

import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from safetensors.numpy import save_file

from lr2vq_jax.models import create_model

_BN = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}


def _torch_module(path: tuple[str, ...]) -> str:
  name = ".".join(path)
  name = re.sub(r"^(layer\d+)_(\d+)", r"\1.\2", name)
  return name.replace("downsample_conv", "downsample.0").replace("downsample_bn", "downsample.1")


def write_torchvision_weights(path: Path, model: str, seed: int = 0) -> Path:
  """Random weights of `model` (1000 classes) in torchvision's names and OIHW layout."""
  net = create_model(model, num_classes=1000)
  x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
  shapes = jax.eval_shape(lambda k, x: net.init(k, x, train=False), jax.random.key(0), x)
  rng = np.random.default_rng(seed)
  out = {}
  for collection in ("params", "batch_stats"):
    for keys, s in traverse_util.flatten_dict(dict(shapes[collection])).items():
      module, leaf = _torch_module(keys[:-1]), keys[-1]
      if leaf == "kernel":
        value = rng.normal(0, (2 / np.prod(s.shape[:-1])) ** 0.5, s.shape).astype(np.float32)
        value = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T
        out[f"{module}.weight"] = np.ascontiguousarray(value)
      elif leaf == "var":
        out[f"{module}.running_var"] = rng.uniform(0.5, 2, s.shape).astype(np.float32)
      else:  # BatchNorm scale / bias / mean, dense bias
        out[f"{module}.{_BN[leaf]}"] = rng.normal(0, 0.1, s.shape).astype(np.float32)
  save_file(out, str(path))
  return path
