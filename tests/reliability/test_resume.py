"""SIGTERM, then kill -9, mid-stage; rerun the same command: same params and metrics.jsonl, bit for bit.

Three module fixtures, one after another, run a victim (float stage, checkpoint every 2 steps,
log rows every 3, so log windows straddle checkpoints): it gets SIGTERM (it must checkpoint and
exit 0), its rerun gets SIGKILL at some later step, and a third run of the same command, past a
half-written checkpoint left in the way, finishes the stage; then, in that third process, the same
command runs uninterrupted in a fresh workdir: the reference. Each fixture is set up by the first
test that reads it (the tests are in that order): no test phase waits for all three processes.
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
from tests.support import cli_chain, train_cli

# Every test reads the module fixture's interrupted and reference runs.
pytestmark = pytest.mark.slow

# Few steps: the properties need a SIGTERM, a SIGKILL a few checkpoints later and a rest to finish,
# each with margin (a stage of 24 steps is ~4 s of training).
STEPS = 24
OVERRIDES = (
  "--config.stages=float",
  f"--config.float.num_steps={STEPS}",
  "--config.float.checkpoint_every=2",
  "--config.float.log_every=3",
)


@pytest.fixture(scope="module")
def terminated(tmp_path_factory):
  """1. SIGTERM mid-stage: the victim must checkpoint at the current step and exit 0."""
  base = tmp_path_factory.mktemp("resume")
  ref, victim = base / "ref", base / "victim"
  out = {"base": base, "dirs": {"ref": ref, "victim": victim}, "logs": {}}
  stage_dir = victim / "float"
  proc = train_cli.start(train_cli.train_cmd(victim, *OVERRIDES), str(base / "term.log"))
  out["term_seen"] = train_cli.wait_for_checkpoint(proc, stage_dir, 4)
  proc.send_signal(signal.SIGTERM)
  out["term_rc"] = proc.wait(timeout=300)
  out["term_ckpts"] = train_cli.checkpoint_steps(stage_dir)
  out["term_rows"] = train_cli.metrics_rows(stage_dir)
  out["logs"]["term"] = (base / "term.log").read_text()
  return out


@pytest.fixture(scope="module")
def killed(terminated):
  """2. The same command again, SIGKILLed a few checkpoints later; then a half-written checkpoint
  left in the way, as a process killed mid-save leaves it (Orbax's tmp dir must be ignored)."""
  out, base = terminated, terminated["base"]
  stage_dir = out["dirs"]["victim"] / "float"
  proc = train_cli.start(
    train_cli.train_cmd(out["dirs"]["victim"], *OVERRIDES), str(base / "kill.log")
  )
  train_cli.wait_for_checkpoint(proc, stage_dir, out["term_ckpts"][-1] + 4)
  proc.send_signal(signal.SIGKILL)
  out["kill_rc"] = proc.wait(timeout=300)
  out["kill_ckpts"] = train_cli.checkpoint_steps(stage_dir)
  junk = stage_dir / "checkpoints" / f"{STEPS - 1}.orbax-checkpoint-tmp-123"
  (junk / "state").mkdir(parents=True)
  (junk / "state" / "garbage").write_bytes(b"\0" * 10)
  out["logs"]["kill"] = (base / "kill.log").read_text()
  return out


@pytest.fixture(scope="module")
def runs(killed):
  """3. The same command to the end; then, in the same process (tests/support/cli_chain), the
  reference: the same command uninterrupted in a fresh workdir (one start-up and import for both).
  Each step is its own fixture, so each is set up by the first test that needs it (three test
  phases of ~1/3 the whole, not one)."""
  out, base = killed, killed["base"]
  steps = [("final", _train_argv(out["dirs"]["victim"])), ("ref", _train_argv(out["dirs"]["ref"]))]
  proc = train_cli.start(cli_chain.command(steps, keep_going=True), str(base / "chain.txt"))
  proc.wait(timeout=300)
  text = (base / "chain.txt").read_text()
  ran = cli_chain.split(text)
  for name, _ in steps:
    out[f"{name}_rc"], out["logs"][name] = ran.get(name, (None, text))
  return out


def _train_argv(workdir) -> list[str]:
  """`lr2vq train ...`: the command line train_cli.train_cmd runs, for a chain."""
  return ["train", *train_cli.train_cmd(workdir, *OVERRIDES)[3:]]


def _final_state(workdir):
  config = load_config(train_cli.QUICK)
  config.stages = "float"
  config.float.num_steps = STEPS
  stage = build_stage(config, "float", str(workdir))
  ckpt = checkpointing.Checkpointer(checkpointing.checkpoint_dir(stage.workdir))
  assert ckpt.latest_step() == STEPS
  state, _ = ckpt.restore(STEPS, abstract_state=abstract_state(stage))
  ckpt.close()
  return jax.device_get(state)


def test_sigterm_checkpoints_current_step_and_exits_0(terminated):
  log = terminated["logs"]["term"]
  assert terminated["term_rc"] == 0, log[-3000:]
  stopped = re.search(r"stage float: stopping at step (\d+)", log)
  assert stopped, log[-3000:]
  step = int(stopped.group(1))
  assert step >= terminated["term_seen"] and terminated["term_ckpts"][-1] == step < STEPS
  assert all(r["step"] <= step for r in terminated["term_rows"])


def test_kill9_rerun_resumes_from_last_checkpoint(killed):
  assert killed["kill_rc"] == -signal.SIGKILL
  first = re.search(r"\[float\] step (\d+)/", killed["logs"]["kill"])
  assert first and int(first.group(1)) > killed["term_ckpts"][-1]  # resumed, not restarted
  assert killed["term_ckpts"][-1] < killed["kill_ckpts"][-1] < STEPS, killed["kill_ckpts"]


def test_final_rerun_resumes_from_the_kill9_checkpoint(runs):
  first = re.search(r"\[float\] step (\d+)/", runs["logs"]["final"])
  assert first and int(first.group(1)) > runs["kill_ckpts"][-1]


def test_reference_run_completes(runs):
  assert runs["ref_rc"] == 0, runs["logs"]["ref"][-3000:]
  rows = train_cli.metrics_rows(runs["dirs"]["ref"] / "float")
  assert [r["step"] for r in rows] == [*range(3, STEPS + 1, 3), STEPS]  # train rows, then eval


def test_interrupted_run_ends_bit_identical(runs):
  assert runs["final_rc"] == 0, runs["logs"]["final"][-3000:]
  ref, victim = runs["dirs"]["ref"], runs["dirs"]["victim"]
  assert train_cli.metrics_text(victim / "float") == train_cli.metrics_text(ref / "float")
  a, b = _final_state(ref), _final_state(victim)
  leaves = jax.tree_util.tree_leaves_with_path(a)
  assert len(leaves) == len(jax.tree_util.tree_leaves(b))
  for (path, x), y in zip(leaves, jax.tree_util.tree_leaves(b), strict=True):
    if jax.dtypes.issubdtype(getattr(x, "dtype", np.float32), jax.dtypes.prng_key):
      x, y = jax.random.key_data(x), jax.random.key_data(y)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(path))


def test_partial_checkpoint_dir_is_ignored_and_cleaned(runs):
  names = os.listdir(runs["dirs"]["victim"] / "float" / "checkpoints")
  assert not [n for n in names if "tmp" in n], names
