"""User errors end in one line plus a hint (traceback only with --verbose); NaN stops training."""

from __future__ import annotations

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


@pytest.fixture(scope="module")
def bad_values(tmp_path_factory):
  """`lr2vq train` with each bad override, one after another in one process (one start-up, one
  import of jax; tests/support/cli_chain): {override: (exit code, stderr)} and the workdirs."""
  base = tmp_path_factory.mktemp("bad_values")
  workdirs = {o: base / f"wd{i}" for i, o in enumerate(BAD_VALUES)}
  steps = [
    (o, ["train", f"--config={train_cli.QUICK}", f"--workdir={workdirs[o]}", o]) for o in BAD_VALUES
  ]
  out = train_cli.run(cli_chain.command(steps, keep_going=True))
  return cli_chain.split(out.stderr), workdirs


@pytest.mark.parametrize("override", BAD_VALUES)
def test_train_bad_config_value(bad_values, override):
  found, workdirs = bad_values
  rc, err = found[override]
  assert rc == 2, err[-2000:]
  _two_lines(err, BAD_VALUES[override])
  assert not workdirs[override].exists()


def test_nan_stops_with_step_and_keeps_last_good_checkpoint(tmp_path):
  workdir = tmp_path / "wd"
  flags = ("stages=float", "float.num_steps=9", "float.checkpoint_every=2", "float.log_every=3")
  cmd = train_cli.train_cmd(workdir, *(f"--config.{f}" for f in flags))
  # the real entry point, NaN written into the params before step 5 (tests/support/nan_at_step.py)
  cmd[1:3] = ["-m", "tests.support.nan_at_step", "5"]
  out = train_cli.run(cmd)
  assert out.returncode == 1, out.stderr[-3000:]
  _two_lines(out.stderr, "stage float: non-finite loss or params at step 5 (layers: ")
  assert "last good checkpoint: step 4" in out.stderr
  # Detected at step 6 (log + checkpoint boundary): nothing at or after the bad step was saved.
  assert train_cli.checkpoint_steps(workdir / "float") == [2, 4]
  assert [r["step"] for r in train_cli.metrics_rows(workdir / "float")] == [3]
