"""kill -9 or SIGTERM mid-stage, rerun the same command: same params and metrics.jsonl, bit for bit.

One module fixture runs, concurrently, an uninterrupted reference, a victim killed with SIGKILL
and a victim sent SIGTERM (float stage, checkpoint every 2 steps, log rows every 3, so log windows
straddle checkpoints); then it reruns both victims to the end.
"""

from __future__ import annotations

import os
import re
import signal

import jax
import numpy as np
import pytest

from lr2vq_jax.train import checkpointing
from lr2vq_jax.train.config import load_config
from lr2vq_jax.train.trainer import abstract_state, build_stage
from tests.reliability import helpers

STEPS = 60
OVERRIDES = (
  "--config.stages=float",
  f"--config.float.num_steps={STEPS}",
  "--config.float.checkpoint_every=2",
  "--config.float.log_every=3",
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  base = tmp_path_factory.mktemp("resume")
  dirs = {k: base / k for k in ("ref", "kill", "term")}
  procs = {
    k: helpers.start(helpers.train_cmd(d, *OVERRIDES), str(base / f"{k}.log"))
    for k, d in dirs.items()
  }
  killed_at = helpers.wait_for_checkpoint(procs["kill"], dirs["kill"] / "float", 8)
  procs["kill"].send_signal(signal.SIGKILL)
  term_seen = helpers.wait_for_checkpoint(procs["term"], dirs["term"] / "float", 12)
  procs["term"].send_signal(signal.SIGTERM)
  rcs = {k: p.wait(timeout=300) for k, p in procs.items()}
  term_log = (base / "term.log").read_text()
  interrupted = {
    "kill_ckpts": helpers.checkpoint_steps(dirs["kill"] / "float"),
    "term_ckpts": helpers.checkpoint_steps(dirs["term"] / "float"),
    "term_rows": helpers.metrics_rows(dirs["term"] / "float"),
  }
  # A checkpoint half-written when the process died: Orbax's tmp dir must be ignored.
  junk = dirs["kill"] / "float" / "checkpoints" / f"{STEPS - 1}.orbax-checkpoint-tmp-123"
  (junk / "state").mkdir(parents=True)
  (junk / "state" / "garbage").write_bytes(b"\0" * 10)
  reruns = {k: helpers.start(helpers.train_cmd(dirs[k], *OVERRIDES), str(base / f"{k}2.log"))
            for k in ("kill", "term")}  # fmt: skip
  rerun_rcs = {k: p.wait(timeout=300) for k, p in reruns.items()}
  logs = {p.name: p.read_text() for p in base.glob("*.log")}
  return dict(
    dirs=dirs,
    rcs=rcs,
    rerun_rcs=rerun_rcs,
    killed_at=killed_at,
    term_seen=term_seen,
    term_log=term_log,
    logs=logs,
    **interrupted,
  )


def _final_state(workdir):
  config = load_config(helpers.QUICK)
  config.stages = "float"
  config.float.num_steps = STEPS
  stage = build_stage(config, "float", str(workdir))
  ckpt = checkpointing.Checkpointer(checkpointing.checkpoint_dir(stage.workdir))
  assert ckpt.latest_step() == STEPS
  state, _ = ckpt.restore(STEPS, abstract_state=abstract_state(stage))
  ckpt.close()
  return jax.device_get(state)


def _assert_identical(runs, name):
  ref, other = runs["dirs"]["ref"] / "float", runs["dirs"][name] / "float"
  assert helpers.metrics_text(other) == helpers.metrics_text(ref)
  a, b = _final_state(ref.parent), _final_state(other.parent)
  paths_a = jax.tree_util.tree_leaves_with_path(a)
  for (path, x), y in zip(paths_a, jax.tree_util.tree_leaves(b), strict=True):
    if jax.dtypes.issubdtype(np.asarray(x).dtype, jax.dtypes.prng_key):
      x, y = jax.random.key_data(x), jax.random.key_data(y)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(path))


def test_reference_run_completes(runs):
  assert runs["rcs"]["ref"] == 0, runs["logs"]["ref.log"][-3000:]
  rows = helpers.metrics_rows(runs["dirs"]["ref"] / "float")
  assert [r["step"] for r in rows] == [*range(3, STEPS + 1, 3), STEPS]  # train rows, then eval


def test_kill9_then_rerun_resumes_and_matches(runs):
  assert runs["rcs"]["kill"] == -signal.SIGKILL
  assert 0 < runs["kill_ckpts"][-1] < STEPS, runs["kill_ckpts"]
  assert runs["rerun_rcs"]["kill"] == 0, runs["logs"]["kill2.log"][-3000:]
  assert "resumed at step" in runs["logs"]["kill2.log"]
  _assert_identical(runs, "kill")


def test_sigterm_checkpoints_current_step_and_exits_0(runs):
  assert runs["rcs"]["term"] == 0, runs["term_log"][-3000:]
  stopped = re.search(r"stage float: stopping at step (\d+)", runs["term_log"])
  assert stopped, runs["term_log"][-3000:]
  step = int(stopped.group(1))
  assert step >= runs["term_seen"] and runs["term_ckpts"][-1] == step < STEPS
  assert all(r["step"] <= step for r in runs["term_rows"])


def test_sigterm_then_rerun_matches(runs):
  assert runs["rerun_rcs"]["term"] == 0, runs["logs"]["term2.log"][-3000:]
  _assert_identical(runs, "term")


def test_partial_checkpoint_dir_is_ignored_and_cleaned(runs):
  names = os.listdir(runs["dirs"]["kill"] / "float" / "checkpoints")
  assert not [n for n in names if "tmp" in n], names
