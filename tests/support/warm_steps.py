"""Train steps of the quick quantize stage with carried DKM lists and warm offsets, on whatever
mesh the process has: one device in the test process, eight in its child (tests/train/
test_dkm_refresh.py), so both run the very same setup."""

from __future__ import annotations

from collections.abc import Iterator

import jax
import ml_collections

from lr2vq_jax.train import input_pipeline, partitioning, trainer
from lr2vq_jax.train.state import create_train_state
from lr2vq_jax.train.step import make_train_step


def warm_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config` with lists re-ranked every 2 steps and one warm-started DKM update per step."""
  config.quant.update(dkm_refresh=2, dkm_warm=True, dkm_iters=1)
  return config


def run_steps(config: ml_collections.ConfigDict, workdir: str, steps: int) -> Iterator[tuple]:
  """Yields (stage, state, metrics of the step that made it; None for the first) before each of
  `steps` steps of the quantize stage and after the last."""
  stage = trainer.build_stage(config, "quantize", workdir)
  state = create_train_state(
    stage.model, stage.tx, stage.sample_input, stage.mesh, jax.random.key(0)
  )
  step = partitioning.jit_train_step(
    make_train_step(stage.model, stage.cfg, stage.tx), trainer.abstract_state(stage), stage.mesh
  )
  batches = input_pipeline.build_input(config.data, split="train", start_step=0)
  metrics = None
  for _ in range(steps):  # the step donates `state`: read it before the next one
    yield stage, state, metrics
    state, metrics = step(state, partitioning.global_batch(next(batches), stage.mesh))
  yield stage, state, metrics
