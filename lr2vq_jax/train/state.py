"""A model's train state, created directly on its target shardings.

As in flax's lm1b and big_vision: the state's shapes come from `jax.eval_shape` (no weights), the
partitioning rules turn them into shardings, and `jax.jit(init, out_shardings=...)` builds the
state already split over the mesh, so no device ever holds an unsharded copy.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils

from lr2vq_jax.nn import DKM_LISTS, LOSSES
from lr2vq_jax.train import partitioning
from lr2vq_jax.train.step import TrainState


def state_from_variables(variables: Mapping, tx: optax.GradientTransformation, rng) -> TrainState:
  """Step 0 of training from a model's variables (`params` + state collections; no `losses`)."""
  variables = {c: v for c, v in variables.items() if c != LOSSES}
  params = variables.pop("params")
  return TrainState(jnp.zeros((), jnp.int32), params, variables, tx.init(params), rng)


def abstract_variables(model, sample_input: jax.Array) -> dict:
  """Shapes and dtypes of `model.init(rng, sample_input, train=False)`, computed without weights.

  Traced once per (model, input shape) in a process: a stage's optimizer, its restore target and
  the next stage's start all ask for the same shapes.
  """
  shape, dtype = tuple(sample_input.shape), jnp.dtype(sample_input.dtype)
  trace = _abstract_variables if _hashable(model) else _abstract_variables.__wrapped__
  return dict(trace(model, shape, dtype))


def _hashable(model) -> bool:
  """Whether `model` can key the cache (a module with an unhashable field is traced every time);
  asked up front so that a TypeError raised inside `model.init` is never mistaken for it."""
  try:
    hash(model)
  except TypeError:
    return False
  return True


@functools.lru_cache(maxsize=16)
def _abstract_variables(model, shape: tuple[int, ...], dtype) -> dict:
  init = lambda rng: dict(model.init(rng, jnp.zeros(shape, dtype), train=False))  # noqa: E731
  return jax.eval_shape(init, jax.random.key(0))


def abstract_train_state(
  model,
  tx: optax.GradientTransformation,
  sample_input: jax.Array,
  mesh: jax.sharding.Mesh,
  sharding: str = "replicated",
) -> TrainState:
  """Shapes, dtypes and target shardings (`partitioning.STATE_RULES`, `sharding` mode) of the
  state; what a restore places a checkpoint on."""

  variables = abstract_variables(model, sample_input)
  shapes = jax.eval_shape(
    lambda v, rng: state_from_variables(v, tx, rng), variables, jax.random.key(0)
  )
  return partitioning.with_state_shardings(shapes, mesh, sharding)


def with_model_lists(variables: dict, target: TrainState) -> dict:
  """`variables` with the `DKM_LISTS` collection that `target` (the model's own state) has:
  zeros (ranked at the first step) where the variables predate it (a conversion from the previous
  stage), none where the model keeps none (quant.dkm_refresh = 1 and no dkm_warm, a later mode)."""
  wanted = target.model_state.get(DKM_LISTS)
  given = variables.pop(DKM_LISTS, None)
  if wanted is not None:
    same = given is not None and jax.tree.structure(given) == jax.tree.structure(wanted)
    zeros = jax.tree.map(lambda leaf: np.zeros(leaf.shape, leaf.dtype), wanted)
    variables[DKM_LISTS] = given if same else zeros
  return variables


def create_train_state(
  model,
  tx: optax.GradientTransformation,
  sample_input: jax.Array,
  mesh: jax.sharding.Mesh,
  rng: jax.Array,
  variables: Mapping | None = None,
  sharding: str = "replicated",
) -> TrainState:
  """The state at step 0 on its target shardings: from `model.init(rng, ...)`, or from given
  host `variables` (e.g. converted from the previous stage; then `model` only shapes the state).

  With several processes, process 0's `variables` are broadcast so that every replica is identical
  even if a conversion (k-means on each host) differed in the last bit.
  """
  target = abstract_train_state(model, tx, sample_input, mesh, sharding)
  out = partitioning.shardings_of(target)
  with jax.set_mesh(mesh):
    if variables is None:

      def init(key):
        return state_from_variables(dict(model.init(key, sample_input, train=False)), tx, key)

      return jax.jit(init, out_shardings=out)(rng)
    variables = with_model_lists(dict(variables), target)
    if jax.process_count() > 1:
      variables = multihost_utils.broadcast_one_to_all(variables)
    variables = jax.device_put(variables, partitioning.replicated(mesh))
    return jax.jit(lambda v, key: state_from_variables(v, tx, key), out_shardings=out)(
      variables, rng
    )
