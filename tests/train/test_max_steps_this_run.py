"""`max_steps_this_run`: each invocation trains at most N steps, checkpoints off the cadence, and
the next invocation of the same command continues; the log rows are those of one run."""

from __future__ import annotations

import json

from lr2vq_jax.train import checkpointing, pipeline
from lr2vq_jax.train.config import load_config
from tests.support.paths import QUICK


def _steps(stage_dir) -> list[int]:
  return checkpointing.committed_steps(checkpointing.checkpoint_dir(stage_dir))


def test_runs_of_at_most_n_steps_checkpoint_and_continue(tmp_path):
  config = load_config(QUICK)
  config.stages = "float"
  config.float.update(num_steps=6, log_every=3, checkpoint_every=100, max_steps_this_run=2)
  assert pipeline.run(config, str(tmp_path)) is None  # stopped: nothing reported yet
  assert _steps(tmp_path / "float")[-1] == 2  # saved although 2 is off the checkpoint cadence
  assert not (tmp_path / "results.json").exists()
  config.float.max_steps_this_run = 3  # a neutral field: no --allow_config_change needed
  assert pipeline.run(config, str(tmp_path)) is None
  assert _steps(tmp_path / "float")[-1] == 5  # N steps of this invocation, not an absolute step
  records = pipeline.run(config, str(tmp_path))
  assert [r["method"] for r in records] == ["float"]
  rows = [json.loads(line) for line in open(tmp_path / "float" / "metrics.jsonl")]
  assert [r["step"] for r in rows] == [3, 6, 6]  # train rows, then eval: as uninterrupted
