"""A stage built again in the same process (a resumed run) reuses its jitted train step, unless
something the step computes with changed."""

from __future__ import annotations

from lr2vq_jax.train import trainer
from lr2vq_jax.train.config import load_config
from tests.support.paths import QUICK


def test_resumed_stage_reuses_its_step_and_a_changed_one_does_not(tmp_path):
  config = load_config(QUICK)
  first = trainer._jitted_train_step(trainer.build_stage(config, "float", str(tmp_path)))
  config.float.update(max_steps_this_run=2, log_every=1, checkpoint_every=1)  # run length only
  assert trainer._jitted_train_step(trainer.build_stage(config, "float", str(tmp_path))) is first
  config.float.lr = 2 * config.float.lr
  assert (
    trainer._jitted_train_step(trainer.build_stage(config, "float", str(tmp_path))) is not first
  )
