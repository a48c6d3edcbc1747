"""Label-free BatchNorm re-estimation with the hard (exported) weights, before export.

Training-mode BN statistics were gathered with the soft DKM weights; the artifact runs the hard
codes. Re-estimating the running mean/variance on unlabeled training batches with the hard weights
(AdaBN / BN recalibration, as quantization toolkits do) removes that mismatch. Each batch's own
statistics are recovered exactly from one training-mode pass, whatever the layers' momentum, and
averaged with equal weights.
"""

from __future__ import annotations

from collections.abc import Iterator

import jax
import jax.numpy as jnp

from lr2vq_jax.train import hard_codes, partitioning


def reestimate_batch_stats(model, variables: dict, batches: Iterator, num_batches: int, mesh):
  """`variables` with `batch_stats` replaced by the mean of `num_batches` batches' statistics.

  `model` is a quantized model (`quantize_model`): it runs with `quant_train=False` (hard codes,
  computed once for a quantize-stage model) and BatchNorm in training mode. Labels are never read.
  """
  if "batch_stats" not in variables or num_batches <= 0:
    return variables
  given = variables
  model, variables = hard_codes.frozen_model(model, variables, mesh)  # codes once, not per batch

  @jax.jit
  def updated(rest, stats, images):  # variables passed in, not closed over: no constant folding
    v = {**rest, "batch_stats": stats}
    _, new = model.apply(v, images, train=True, quant_train=False, mutable=["batch_stats"])
    return new["batch_stats"]

  rest = {c: v for c, v in variables.items() if c != "batch_stats"}

  stats = variables["batch_stats"]
  zeros = jax.tree.map(jnp.zeros_like, stats)
  ones = jax.tree.map(jnp.ones_like, stats)
  total, keep = None, None
  with jax.set_mesh(mesh):
    for _ in range(num_batches):
      images = partitioning.global_batch(next(batches), mesh)["image"]
      from_zero = updated(rest, zeros, images)  # (1 − momentum)·batch statistic
      if keep is None:  # momentum per leaf: new(1) − new(0)
        keep = jax.tree.map(lambda a, b: a - b, updated(rest, ones, images), from_zero)
      batch = jax.tree.map(lambda a, mom: a / (1.0 - mom), from_zero, keep)
      total = batch if total is None else jax.tree.map(jnp.add, total, batch)
  mean = jax.tree.map(lambda t: t / num_batches, total)
  return {**given, "batch_stats": mean}
