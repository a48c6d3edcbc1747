"""Per-layer sensitivity: the mean diagonal of the Fisher information of each kernel.

A small change ΔW of a layer raises the loss by about ½·Σ F_ii·ΔW_i² (second order, at a trained
minimum); with the per-layer mean s = mean(F_ii) this is ½·s·‖ΔW‖², which is what the planner
multiplies with each candidate's clustering error. F is estimated from the squared gradients of a
few batches with labels drawn from the model's own softmax (the true Fisher: the empirical one,
with the data's labels, vanishes on a model that fits its training set), scaled by the batch size
(a batch gradient's variance is 1/B of an example's).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import traverse_util


def layer_sensitivity(
  model: nn.Module,
  variables: Mapping,
  batches: Iterable[Mapping],
  paths: Iterable[str],
  key: jax.Array | None = None,
) -> tuple[dict[str, float], int]:
  """(mean Fisher diagonal per kernel path, number of batches used)."""
  variables = dict(variables)
  params = variables["params"]
  rest = {k: v for k, v in variables.items() if k != "params"}

  def loss(p, image, key):
    logits = model.apply({"params": p, **rest}, image, train=False)
    label = jax.random.categorical(key, jax.lax.stop_gradient(logits))
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, label))

  grad = jax.jit(jax.grad(loss))
  key = jax.random.key(0) if key is None else key
  paths = list(paths)
  sums = {p: 0.0 for p in paths}
  count = 0
  for batch in batches:
    image = jnp.asarray(batch["image"])
    flat = traverse_util.flatten_dict(
      dict(grad(params, image, jax.random.fold_in(key, count))), sep="/"
    )
    size = image.shape[0]
    for p in paths:
      sums[p] += size * float(jnp.mean(jnp.square(flat[f"{p}/kernel"])))
    count += 1
  if not count:
    return {p: 1.0 for p in paths}, 0
  return {p: s / count for p, s in sums.items()}, count
