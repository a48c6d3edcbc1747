"""User errors end in one line plus a hint (traceback only with --verbose); NaN stops training."""

from __future__ import annotations

import os
import sys
import textwrap

import pytest

from lr2vq_jax import cli
from tests.reliability import helpers


def _two_lines(err: str, message: str) -> None:
  lines = [line for line in err.splitlines() if line.strip()]
  assert "Traceback" not in err, err
  assert message in lines[-2] and "error:" in lines[-2], err
  assert lines[-1].startswith("hint: "), err


@pytest.mark.parametrize(
  "argv, message",
  [
    (["eval", "--artifact", "missing_dir"], "missing_dir/manifest.json: missing"),
    (["report", "--preset", "nope"], "unknown preset 'nope'"),
  ],
)
def test_cli_errors_are_one_line(capsys, argv, message):
  assert cli.main(argv) == 2
  err = capsys.readouterr().err
  assert len(err.splitlines()) == 2
  _two_lines(err, message)
  assert cli.main([*argv, "--verbose"]) == 2
  assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize(
  "override, message",
  [
    ("--config.float.lr=-1", "config.float.lr: -1.0 is not a finite number > 0.0"),
    ("--config.float.lr=abc", "could not convert string to float: 'abc'"),
    ("--config.flaot.lr=1", "no config field"),
  ],
)
def test_train_bad_config_value(tmp_path, override, message):
  workdir = tmp_path / "wd"
  cmd = [os.path.join(os.path.dirname(sys.executable), "lr2vq")]
  if not os.path.exists(cmd[0]):
    cmd = [sys.executable, "-m", "lr2vq_jax"]
  out = helpers.run([*cmd, "train", f"--config={helpers.QUICK}", f"--workdir={workdir}", override])
  assert out.returncode == 2, out.stderr[-2000:]
  _two_lines(out.stderr, message)
  assert not workdir.exists()


NAN_CONFIG = """
import importlib.util

_spec = importlib.util.spec_from_file_location("_base", {base!r})
_base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_base)


def get_config(arg=None):
  config = _base.get_config("quick")
  config.stages = "float"
  config.float.update(num_steps=9, checkpoint_every=2, log_every=3, debug_nan_at_step=5)
  return config
"""


def test_nan_stops_with_step_and_keeps_last_good_checkpoint(tmp_path):
  path = tmp_path / "nan_config.py"
  path.write_text(textwrap.dedent(NAN_CONFIG.format(base=helpers.QUICK.split(":")[0])))
  workdir = tmp_path / "wd"
  out = helpers.run(helpers.train_cmd(workdir, config=str(path)))
  assert out.returncode == 1, out.stderr[-3000:]
  _two_lines(out.stderr, "stage float: non-finite loss or params at step 5 (layers: ")
  assert "last good checkpoint: step 4" in out.stderr
  # Detected at step 6 (log + checkpoint boundary): nothing at or after the bad step was saved.
  assert helpers.checkpoint_steps(workdir / "float") == [2, 4]
  assert [r["step"] for r in helpers.metrics_rows(workdir / "float")] == [3]
