"""Mesh, shardings and the jitted entry points (jit with explicit shardings and donation).

One mesh axis, `data`: batches are split over it, the train state is replicated. This is the
one place where shardings are decided.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

DATA = "data"


def make_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
  """A 1-D mesh over all (or the first `num_devices`) devices, axis `data`."""
  n = num_devices or jax.device_count()
  return jax.make_mesh((n,), (DATA,), devices=jax.devices()[:n])


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA))


def with_state_shardings(shapes: Any, mesh, config=None) -> Any:
  """Attaches the target sharding to every `ShapeDtypeStruct` of an abstract train state."""
  del config  # every leaf replicated for now
  sharding = replicated(mesh)
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)


def shardings_of(abstract: Any) -> Any:
  return jax.tree.map(lambda s: s.sharding, abstract)


def init_state(stage, target, variables, key, from_variables: Callable, sample: Callable):
  """The initial state, created directly with its target shardings (jit + out_shardings)."""
  out = shardings_of(target)
  if variables is None:

    def init(rng):
      return from_variables(stage, dict(stage.model.init(rng, sample(stage), train=False)), rng)

    return jax.jit(init, out_shardings=out)(key)
  variables = jax.device_put(variables, replicated(stage.mesh))
  return jax.jit(lambda v, rng: from_variables(stage, v, rng), out_shardings=out)(variables, key)


def jit_train_step(step: Callable, target: Any, mesh) -> Callable:
  """`step(state, batch)` jitted with the state's shardings, the batch on `data`, state donated."""
  state_sh = shardings_of(target)
  return jax.jit(
    step,
    in_shardings=(state_sh, batch_sharding(mesh)),
    out_shardings=(state_sh, replicated(mesh)),
    donate_argnums=0,
  )


def global_batch(local: Mapping[str, np.ndarray], mesh) -> dict[str, jax.Array]:
  """Global arrays from this process's slice of the batch (`make_array_from_process_local_data`)."""
  sharding = batch_sharding(mesh)
  return {
    k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()
  }
