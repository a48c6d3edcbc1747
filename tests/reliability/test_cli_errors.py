"""User errors end in one line plus a hint (traceback only with --verbose); NaN stops training;
a failed command leaves nothing behind and no thread noise."""

from __future__ import annotations

import re

import pytest

from lr2vq_jax import cli
from tests.support import cli_chain, train_cli


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


BAD_VALUES = {  # override -> the error's message
  "--config.float.lr=-1": "config.float.lr: -1.0 is not a finite number > 0.0",
  "--config.float.lr=abc": "could not convert string to float: 'abc'",
  "--config.flaot.lr=1": "no config field",
}
NAN_FLAGS = ("stages=float", "float.num_steps=9", "float.checkpoint_every=2", "float.log_every=3")
# the real training entry point with NaN written into the params before step 5
# (tests/support/nan_at_step.py), as `python -m tests.support.nan_at_step 5 FLAGS...` runs it
NAN_AT_STEP = "import runpy; runpy.run_module('tests.support.nan_at_step', run_name='__main__')"


@pytest.fixture(scope="module")
def failed(tmp_path_factory):
  """The failing commands below one after another in one process (one start-up, one import of
  jax: tests/support/cli_chain): `lr2vq train` with each bad override, the NaN run, then
  `lr2vq export` of a run never trained, last, so that the process ends right after it (thread
  noise at exit would show). {name: (exit code, stderr)}, the workdirs, and the stderr after the
  last command ended."""
  base = tmp_path_factory.mktemp("failed")
  workdirs = {o: base / f"wd{i}" for i, o in enumerate(BAD_VALUES)}
  workdirs.update(nan=base / "nan", export=base / "never_trained")
  steps = [
    (o, ["train", f"--config={train_cli.QUICK}", f"--workdir={workdirs[o]}", o]) for o in BAD_VALUES
  ]
  nan_cmd = train_cli.train_cmd(workdirs["nan"], *(f"--config.{f}" for f in NAN_FLAGS))
  steps.append(("nan", ["-c", NAN_AT_STEP, "5", *nan_cmd[3:]]))
  steps.append(
    ("export", ["export", f"--config={train_cli.QUICK}", f"--workdir={workdirs['export']}"])
  )
  err = train_cli.run(cli_chain.command(steps, keep_going=True)).stderr
  tail = re.split(r"^=== exit \d+\n", err, flags=re.M)[-1]
  return cli_chain.split(err), workdirs, tail


@pytest.mark.parametrize("override", BAD_VALUES)
def test_train_bad_config_value(failed, override):
  found, workdirs, _ = failed
  rc, err = found[override]
  assert rc == 2, err[-2000:]
  _two_lines(err, BAD_VALUES[override])
  assert not workdirs[override].exists()


def test_nan_stops_with_step_and_keeps_last_good_checkpoint(failed):
  found, workdirs, _ = failed
  rc, err = found["nan"]
  assert rc == 1, err[-3000:]
  _two_lines(err, "stage float: non-finite loss or params at step 5 (layers: ")
  assert "last good checkpoint: step 4" in err
  # Detected at step 6 (log + checkpoint boundary): nothing at or after the bad step was saved.
  assert train_cli.checkpoint_steps(workdirs["nan"] / "float") == [2, 4]
  assert [r["step"] for r in train_cli.metrics_rows(workdirs["nan"] / "float")] == [3]


def test_failed_export_leaves_nothing_and_no_traceback(failed):
  found, workdirs, tail = failed
  rc, err = found["export"]
  assert rc == 2, err[-2000:]
  lines = [line for line in err.splitlines() if line.strip()]
  for text in (err, tail):  # the command's output, and what the process wrote as it ended
    assert "Traceback" not in text and "cannot schedule new futures" not in text, text[-2000:]
  assert "has no checkpoint in" in lines[-2] and lines[-1].startswith("hint: ")
  assert not workdirs["export"].exists()
