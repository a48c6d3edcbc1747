"""Import torchvision-style state dicts (`.npz` or `.safetensors`) as flax variables.

PyTorch → flax: conv weight OIHW → HWIO; linear weight (out, in) → (in, out); BatchNorm weight,
bias, running_mean, running_var → params scale/bias and batch_stats mean/var. Names map 1:1
because the models use torchvision's names ("layer1.0.downsample.0" → "layer1_0/downsample_conv").
PyTorch BN momentum 0.1 is flax momentum 0.9; epsilon 1e-5 on both sides (the models' defaults).
"""

from __future__ import annotations

import io
import json
import os
import re
import struct
from collections.abc import Mapping

import numpy as np
from flax import traverse_util

from lr2vq_jax import paths

_SAFETENSORS_DTYPES = {
  "F64": np.float64,
  "F32": np.float32,
  "F16": np.float16,
  "I64": np.int64,
  "I32": np.int32,
  "I16": np.int16,
  "I8": np.int8,
  "U8": np.uint8,
  "BOOL": np.bool_,
}
_BN_LEAVES = {"weight": ("params", "scale"), "bias": ("params", "bias")}
_BN_STATS = {"running_mean": "mean", "running_var": "var"}


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """A flat {name: array} from `.npz` (no pickle) or `.safetensors` (read without torch);
  `path` may be local or gs://."""
  path = os.fspath(path)
  if not path.endswith((".npz", ".safetensors")):
    raise ValueError(f"{path}: expected a .npz or .safetensors state dict")
  blob = paths.resolve(path).read_bytes()
  if path.endswith(".npz"):
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
      return {k: npz[k] for k in npz.files}
  return _read_safetensors(path, blob)


def _read_safetensors(path: str, blob: bytes) -> dict[str, np.ndarray]:
  if len(blob) < 8:
    raise ValueError(f"{path}: too short to be a safetensors file")
  (header_len,) = struct.unpack("<Q", blob[:8])
  header = json.loads(blob[8 : 8 + header_len])
  data = memoryview(blob)[8 + header_len :]
  out = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    if info["dtype"] not in _SAFETENSORS_DTYPES:
      raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}")
    start, end = info["data_offsets"]
    dtype = np.dtype(_SAFETENSORS_DTYPES[info["dtype"]]).newbyteorder("<")
    out[name] = np.frombuffer(data[start:end], dtype=dtype).reshape(info["shape"]).copy()
  return out


def flax_module_path(torch_module: str) -> tuple[str, ...]:
  """'layer1.0.downsample.1' → ('layer1_0', 'downsample_bn'); 'fc' → ('fc',)."""
  name = re.sub(r"downsample\.0$", "downsample_conv", torch_module)
  name = re.sub(r"downsample\.1$", "downsample_bn", name)
  name = re.sub(r"^(layer\d+)\.(\d+)", r"\1_\2", name)
  return tuple(name.split("."))


def torch_to_flax(state_dict: Mapping[str, np.ndarray]) -> dict:
  """Flax variables {"params", "batch_stats"} from a torchvision-style state dict."""
  params, stats = {}, {}
  modules = {}
  for full, value in state_dict.items():
    module, _, leaf = full.rpartition(".")
    modules.setdefault(module, {})[leaf] = np.asarray(value)
  for module, leaves in modules.items():
    path = flax_module_path(module)
    if "running_mean" in leaves:  # BatchNorm
      for leaf, (_, name) in _BN_LEAVES.items():
        params[path + (name,)] = leaves[leaf].astype(np.float32)
      for leaf, name in _BN_STATS.items():
        stats[path + (name,)] = leaves[leaf].astype(np.float32)
      continue
    weight = leaves.get("weight")
    if weight is None:
      raise ValueError(f"state dict module {module!r} has no weight: {sorted(leaves)}")
    if weight.ndim == 4:
      params[path + ("kernel",)] = np.transpose(weight, (2, 3, 1, 0)).astype(np.float32)
    elif weight.ndim == 2:
      params[path + ("kernel",)] = weight.T.astype(np.float32)
    else:
      raise ValueError(f"state dict module {module!r}: weight of rank {weight.ndim} unsupported")
    if "bias" in leaves:
      params[path + ("bias",)] = leaves["bias"].astype(np.float32)
  return {
    "params": traverse_util.unflatten_dict(params),
    "batch_stats": traverse_util.unflatten_dict(stats),
  }


def read_params(path: str | os.PathLike) -> dict:
  """Params from a `.npz`/`.safetensors` file: flax paths ("conv2/kernel", optionally under
  "params/") or a torchvision state dict ("layer1.0.conv1.weight")."""
  flat = read_state_dict(path)
  if flat and all("/" in k for k in flat):
    tree = traverse_util.unflatten_dict(
      {tuple(k.split("/")): np.asarray(v) for k, v in flat.items()}
    )
    return tree.get("params", tree)
  return torch_to_flax(flat)["params"]


def load_torchvision(path: str | os.PathLike) -> dict:
  """`torch_to_flax(read_state_dict(path))`: what a `float` stage initialises from."""
  return torch_to_flax(read_state_dict(path))
