"""`config.profile_steps`: a jax.profiler trace of a few early train steps in <workdir>/<stage>."""

from __future__ import annotations

from pathlib import Path

import pytest

from lr2vq_jax.train import metrics, trainer
from lr2vq_jax.train.config import load_config
from lr2vq_jax.train.validate import ConfigError, validate_config
from tests.support.paths import QUICK


def _traces(directory: Path) -> list[Path]:
  return sorted(directory.glob("plugins/profile/*/*.xplane.pb"))


def test_step_trace_covers_the_steps_after_the_first(tmp_path):
  hooks = metrics.periodic_hooks(tmp_path, num_train_steps=9, is_primary=True, profile_steps=2)
  trace = hooks[-1]
  assert isinstance(trace, metrics.StepTrace)
  seen = []
  for step in range(1, 6):
    trace(step)
    seen.append(trace.running)
  assert seen == [True, True, False, False, False]  # started after step 1, stopped after step 3
  assert len(_traces(tmp_path)) == 1
  hooks.close()  # nothing left running: a no-op


def test_off_by_default_and_off_the_primary_process(tmp_path):
  assert not any(isinstance(h, metrics.StepTrace) for h in metrics.periodic_hooks(
    tmp_path, num_train_steps=9, is_primary=True))  # fmt: skip
  assert not any(isinstance(h, metrics.StepTrace) for h in metrics.periodic_hooks(
    tmp_path, num_train_steps=9, is_primary=False, profile_steps=3))  # fmt: skip


def test_a_stage_with_profile_steps_writes_a_trace(tmp_path):
  """A window longer than the stage: the trace is closed by the end of the loop, not lost. The
  quick float stage's own length (6 steps): the train step is the one its runs compile."""
  config = load_config(QUICK)
  config.profile_steps = 8
  config.float.update(num_steps=6, log_every=6, checkpoint_every=6)
  trainer.run_stage(config, "float", str(tmp_path))
  assert _traces(tmp_path / "float")
  # the profiler was stopped: another trace can start in this process
  again = metrics.StepTrace(tmp_path / "again", num_steps=1, after_step=1)
  again(1)
  assert again.running
  again.close()
  assert _traces(tmp_path / "again")


def test_profile_steps_is_validated(tmp_path):
  config = load_config(QUICK)
  config.profile_steps = -1
  with pytest.raises(ConfigError) as info:
    validate_config(config, str(tmp_path / "wd"))
  assert info.value.field == "profile_steps"


def test_a_trace_that_cannot_start_does_not_stop_training(tmp_path):
  first = metrics.StepTrace(tmp_path / "a", num_steps=1, after_step=1)
  first(1)
  second = metrics.StepTrace(tmp_path / "b", num_steps=1, after_step=1)
  second(1)  # the profiler is busy: a warning, no exception
  assert first.running and not second.running
  first.close()
  second.close()
  assert not first.running
