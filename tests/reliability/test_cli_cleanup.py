"""A failed command ends in one line and a hint, with nothing left behind and no thread noise."""

import sys

from tests.support import train_cli


def test_failed_export_leaves_nothing_and_no_traceback(tmp_path):
  workdir = tmp_path / "never_trained"
  out = train_cli.run(
    [
      sys.executable,
      "-m",
      "lr2vq_jax",
      "export",
      f"--config={train_cli.QUICK}",
      f"--workdir={workdir}",
    ]
  )
  assert out.returncode == 2
  lines = [line for line in out.stderr.splitlines() if line.strip()]
  assert "Traceback" not in out.stderr and "cannot schedule new futures" not in out.stderr
  assert "has no checkpoint in" in lines[-2] and lines[-1].startswith("hint: ")
  assert not workdir.exists()
