"""The distillation teacher: the finished root (float) stage's logits, for a stage with `distill`."""

from __future__ import annotations

from collections.abc import Callable

import jax

from lr2vq_jax import paths
from lr2vq_jax.train import partitioning, stages
from lr2vq_jax.train.stage_setup import Stage, build_stage, restore_final


def make_teacher(stage: Stage) -> Callable[[jax.Array], jax.Array]:
  """images → logits of the finished float stage (`cfg.teacher` or `<workdir>/float`), jitted to
  leave its logits sharded like the batch."""
  if stage.name == stages.ROOT:
    raise ValueError(f"stage {stage.name} cannot distill from itself: set {stage.name}.distill = 0")
  root = build_stage(stage.config, stages.ROOT, paths.parent(stage.workdir))
  variables = restore_final(root, stage.cfg.get("teacher") or root.workdir).variables()
  forward = jax.jit(
    lambda v, x: root.model.apply(v, x, train=False),
    out_shardings=partitioning.batch_sharding(stage.mesh),
  )

  def logits(images: jax.Array) -> jax.Array:
    with jax.set_mesh(stage.mesh):
      return forward(variables, images)

  return logits
