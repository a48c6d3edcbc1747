"""Mesh, shardings and the jitted entry points (jit with explicit shardings and donation).

This is the one place where shardings are decided. One mesh axis, `data`: batches are split over
it, and so are the rows of every LR²VQ `z` (n × d̃, with its optimizer moments), of its carried
top-t DKM lists and of every frozen `codes` vector (`STATE_RULES`); the DKM inside the layers then
splits its work over the same axis (`shard_map`, sums over rows become `psum`s), because
clustering does not depend on the batch and replicating it would repeat it on every device.
Everything else is replicated, or with `config.sharding = "fsdp"` large tensors are also split
along their largest divisible axis.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

DATA = "data"
ROW_AXIS = DATA  # the mesh axis that the rows of Z and the DKM work are split over
MODES = ("replicated", "fsdp")
FSDP_MIN_SIZE = 2**14  # fsdp: smaller tensors stay replicated (gathering them costs more)

# Logical axis rules: regex on a state leaf's path -> spec; first match wins. Paths join the
# pytree keys with "/": "params/conv2/z", "opt_state/0/mu/conv2/z", "model_state/quant/fc/codes".
# A spec whose sharded dimension the mesh does not divide falls back to replicated.
STATE_RULES: tuple[tuple[str, P], ...] = (
  (r"(^|/)z$", P(ROW_AXIS, None)),
  (r"(^|/)quant/(.+/)?codes$", P(ROW_AXIS)),
  (r"(^|/)dkm_lists/(.+/)?neighbors$", P(ROW_AXIS, None)),  # top-t DKM's carried lists
)


def make_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
  """A 1-D mesh over all (or the first `num_devices`) devices, axis `data` (auto sharding)."""
  n = num_devices or jax.device_count()
  return jax.make_mesh((n,), (DATA,), axis_types=(AxisType.Auto,), devices=jax.devices()[:n])


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA))


def path_str(path) -> str:
  """The "/"-joined names of a `tree_flatten_with_path` key path ("params/conv2/z")."""
  parts = []
  for key in path:
    for attr in ("name", "key", "idx"):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
    else:
      parts.append(str(key))
  return "/".join(parts)


def _divides(spec: P, shape: tuple[int, ...], mesh) -> bool:
  for dim, axes in zip(shape, spec, strict=False):
    if axes is None:
      continue
    names = (axes,) if isinstance(axes, str) else tuple(axes)
    if dim % math.prod(mesh.shape[a] for a in names) != 0:
      return False
  return len(spec) <= len(shape)


def _fsdp_spec(shape: tuple[int, ...], mesh) -> P:
  """`data` on the largest dimension it divides (ties: the first), for tensors >= FSDP_MIN_SIZE."""
  size = mesh.shape[DATA]
  if math.prod(shape) < FSDP_MIN_SIZE or size == 1:
    return P()
  dims = [i for i, s in enumerate(shape) if s % size == 0]
  if not dims:
    return P()
  best = max(dims, key=lambda i: (shape[i], -i))
  return P(*(DATA if i == best else None for i in range(len(shape))))


def spec_for(path: str, shape: tuple[int, ...], mesh, mode: str = "replicated") -> P:
  """The PartitionSpec of one state leaf (see `STATE_RULES` and the module docstring)."""
  if mode not in MODES:
    raise ValueError(f"config.sharding={mode!r}: expected one of {MODES}")
  for pattern, spec in STATE_RULES:
    if re.search(pattern, path):
      return spec if _divides(spec, shape, mesh) else P()
  return _fsdp_spec(shape, mesh) if mode == "fsdp" else P()


def sharding_mode(config) -> str:
  mode = (config.get("sharding", None) if config is not None else None) or "replicated"
  if mode not in MODES:
    raise ValueError(f"config.sharding={mode!r}: expected one of {MODES}")
  return mode


def with_state_shardings(shapes: Any, mesh, mode: str = "replicated") -> Any:
  """Attaches the target sharding (`spec_for`, `mode` in MODES) to every `ShapeDtypeStruct` of
  an abstract train state."""

  def one(path, s):
    spec = spec_for(path_str(path), tuple(s.shape), mesh, mode)
    return jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=NamedSharding(mesh, spec))

  return jax.tree_util.tree_map_with_path(one, shapes)


def shardings_of(abstract: Any) -> Any:
  return jax.tree.map(lambda s: s.sharding, abstract)


def jit_train_step(step: Callable, target: Any, mesh) -> Callable:
  """`step(state, batch)` jitted with the state's shardings, the batch on `data`, state donated.

  Calls (and so tracing) happen under `jax.set_mesh(mesh)`, which the DKM of the quantized layers
  reads to split its rows over `ROW_AXIS`.
  """
  state_sh = shardings_of(target)
  jitted = jax.jit(
    step,
    in_shardings=(state_sh, batch_sharding(mesh)),
    out_shardings=(state_sh, replicated(mesh)),
    donate_argnums=0,
  )

  def run(state, batch):
    with jax.set_mesh(mesh):
      return jitted(state, batch)

  run.jitted = jitted
  return run


def global_batch(local: Mapping[str, np.ndarray], mesh) -> dict[str, jax.Array]:
  """Global arrays from this process's slice of the batch (`make_array_from_process_local_data`).

  The slice must split evenly over this process's devices. Evaluation batches (those with a
  `mask`) that do not are padded with masked-out rows, so any eval batch size works on any mesh.
  """
  sharding = batch_sharding(mesh)
  local_devices = len(mesh.local_devices)
  rows = len(next(iter(local.values())))
  if rows % local_devices:
    if "mask" not in local:
      raise ValueError(
        f"this process's batch of {rows} does not split over its {local_devices} devices: "
        f"choose a global batch size divisible by the {mesh.size} devices"
      )
    pad = local_devices - rows % local_devices
    local = {
      k: np.concatenate([v, np.zeros((pad, *np.shape(v)[1:]), np.asarray(v).dtype)])
      for k, v in local.items()
    }
  return {
    k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()
  }


def to_host(tree: Any) -> Any:
  """NumPy copies of every array of `tree`, whole and equal on every process.

  Arrays sharded over several processes are gathered (`process_allgather`, a collective: every
  process must call this with the same tree); others are simply fetched.
  """

  def one(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
      return multihost_utils.process_allgather(x, tiled=True)
    return jax.device_get(x)

  return jax.tree.map(one, tree)
