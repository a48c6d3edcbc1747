"""NNX models ↔ the linen-layout variables the shared export reads and writes.

`to_variables(model)` lays a converted NNX model out as linen variables ({"params", "batch_stats",
"quant"}; a kernel's `layer/kernel/z` becomes `params/layer/z`, its QuantState `quant/layer/...`),
so `export` writes the same artifact for both front ends. `load_into` puts a decoded artifact into
an unedited NNX float model, checking every path, shape and dtype (`nnx.update` checks none).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, traverse_util

from lr2vq_jax import export as export_lib
from lr2vq_jax.core.kernel import DKM_LISTS, QUANT, QuantConfig
from lr2vq_jax.core.rules import Rule
from lr2vq_jax.export import Artifact, ArtifactError
from lr2vq_jax.nnx.kernel import QuantizedKernel
from lr2vq_jax.nnx.variables import DkmState, QuantState

COLLECTIONS = (
  (nnx.Param, "params"),
  (nnx.BatchStat, "batch_stats"),
  (QuantState, QUANT),
  (DkmState, DKM_LISTS),
)
DEFAULT_BN_EPSILON = 1e-5


def _collection(var: nnx.Variable) -> str | None:
  return next((name for kind, name in COLLECTIONS if isinstance(var, kind)), None)


def linen_keys(model: nnx.Module) -> dict[tuple, tuple[str, ...]]:
  """NNX state path → (collection, *linen-style path) of every Param / BatchStat / QuantState;
  a quantized kernel's state sits on its layer (`layer/kernel/z` → `params/layer/z`)."""
  kernels = {path for path, m in nnx.iter_modules(model) if isinstance(m, QuantizedKernel)}
  out = {}
  for path, value in nnx.iter_graph(model):
    collection = _collection(value) if isinstance(value, nnx.Variable) else None
    if collection is None:
      continue
    path = tuple(path)
    linen = path[:-2] + path[-1:] if path[:-1] in kernels else path
    out[path] = (collection, *map(str, linen))
  return out


def _flat_variables(model: nnx.Module) -> dict[tuple[str, ...], nnx.Variable]:
  """(collection, *linen-style path) → Variable of `model`."""
  variables = dict((tuple(p), v) for p, v in nnx.iter_graph(model))
  return {key: variables[path] for path, key in linen_keys(model).items()}


def to_variables(model: nnx.Module) -> dict[str, Any]:
  """Linen-layout variables of `model` (arrays shared, not copied), with each quantized layer's
  `shape` / `view_shape` in `quant` as the linen layers record them."""
  flat = {key: var[...] for key, var in _flat_variables(model).items()}
  for path, module in nnx.iter_modules(model):
    if isinstance(module, QuantizedKernel):
      layer = tuple(map(str, path[:-1]))
      flat[(QUANT, *layer, "shape")] = jnp.asarray(module.plan.shape, jnp.int32)
      flat[(QUANT, *layer, "view_shape")] = jnp.asarray(module.plan.view_shape, jnp.int32)
  return traverse_util.unflatten_dict(flat)


def bn_epsilon(model: nnx.Module) -> float:
  """The epsilon of the model's BatchNorm layers (export folds them); one value or an error."""
  eps = {float(m.epsilon) for _, m in nnx.iter_modules(model) if isinstance(m, nnx.BatchNorm)}
  if len(eps) > 1:
    raise ValueError(f"BatchNorm layers use several epsilons {sorted(eps)}; export folds one")
  return eps.pop() if eps else DEFAULT_BN_EPSILON


def export(
  model: nnx.Module,
  rules: Rule | Sequence[Rule],
  path: str | os.PathLike,
  *,
  config: QuantConfig | None = None,
  metadata: Mapping[str, Any] | None = None,
) -> dict:
  """Writes the artifact of a quantize- or frozen-mode NNX model (`lq.export`'s format)."""
  return export_lib.export(
    to_variables(model),
    rules,
    path,
    config=config,
    bn_epsilon=bn_epsilon(model),
    metadata=metadata,
  )


def _decoded(source: Artifact | str | os.PathLike | Mapping) -> tuple[dict, float | None]:
  if isinstance(source, Mapping):
    return dict(source), None
  artifact = source if isinstance(source, Artifact) else export_lib.load(source)
  return artifact.decode(), float(artifact.manifest["bn_epsilon"])


def load_into(model: nnx.Module, source: Artifact | str | os.PathLike | Mapping) -> nnx.Module:
  """Loads an artifact (directory, `Artifact`, or decoded variables) into the unedited float NNX
  `model`, in place; returns it. Every artifact leaf must name a Param/BatchStat of the model with
  the same shape and a float dtype (values are cast to the model's dtype and placed like it), and
  every Param/BatchStat must be given: `ArtifactError` says which is not, and nothing is changed."""
  quantized = [path for path, m in nnx.iter_modules(model) if isinstance(m, QuantizedKernel)]
  if quantized:
    raise ArtifactError(
      f"load_into needs the float model; layer {'/'.join(map(str, quantized[0][:-1]))!r} holds a "
      "QuantizedKernel (build a fresh model, or lq.nnx.dequantize)"
    )
  decoded, eps = _decoded(source)
  if eps is not None and any(isinstance(m, nnx.BatchNorm) for _, m in nnx.iter_modules(model)):
    if abs(bn_epsilon(model) - eps) > 1e-12:
      raise ArtifactError(
        f"the artifact folds BatchNorm with epsilon {eps}, the model uses {bn_epsilon(model)}"
      )
  given = {
    (collection, *key): value
    for collection in ("params", "batch_stats")
    for key, value in traverse_util.flatten_dict(dict(decoded.get(collection, {}))).items()
  }
  targets = {k: v for k, v in _flat_variables(model).items() if k[0] != QUANT}
  updates = []
  for key, value in sorted(given.items()):
    name = "/".join(key)
    var = targets.get(key)
    if var is None:
      raise ArtifactError(f"artifact leaf {name!r} is not a variable of the model")
    current, value = var.get_value(), np.asarray(value)
    if tuple(current.shape) != value.shape:
      raise ArtifactError(
        f"{name}: artifact shape {value.shape}, model shape {tuple(current.shape)}"
      )
    if not (
      jnp.issubdtype(current.dtype, jnp.floating) and np.issubdtype(value.dtype, np.floating)
    ):
      raise ArtifactError(f"{name}: artifact dtype {value.dtype}, model dtype {current.dtype}")
    updates.append((var, value, current))
  missing = sorted("/".join(k) for k in set(targets) - set(given))
  if missing:
    raise ArtifactError(f"the artifact gives no value for model variables {missing[:5]}")
  for var, value, current in updates:
    new = jnp.asarray(value, current.dtype)
    sharding = getattr(current, "sharding", None)
    var.set_value(jax.device_put(new, sharding) if isinstance(current, jax.Array) else new)
  return model
