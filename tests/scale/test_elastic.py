"""A checkpoint written on an 8-device mesh resumes on a 4-device mesh and training finishes."""

from __future__ import annotations

import json

import pytest

from tests.support.devices import child_env, copy_workdir, finish, main_cmd, run, start
from tests.support.drift import assert_same_training, final_params


def _steps(workdir):
  return sorted(
    int(p.name) for p in (workdir / "quantize" / "checkpoints").iterdir() if p.name.isdigit()
  )


@pytest.mark.slow
def test_checkpoint_from_8_devices_resumes_on_4(prepared, request, tmp_path):
  workdir = copy_workdir(prepared, tmp_path / "run")
  flags = ("--config.stages=quantize",)
  log = tmp_path / "log8.txt"
  cmd = main_cmd(workdir, *flags, "--config.quantize.max_steps_this_run=3")
  proc = start(cmd, child_env(8, tmp_path / "a"), log)
  try:
    reference = request.getfixturevalue("reference_4dev")  # trains meanwhile, if not done yet
    finish(proc, log)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert _steps(workdir)[-1] == 3
  assert not (workdir / "results.json").exists()  # interrupted: nothing reported yet

  out = run(main_cmd(workdir, *flags), child_env(4, tmp_path / "b"), tmp_path / "log4.txt")
  assert _steps(workdir)[-1] == 6
  assert "[quantize] top-1" in out
  assert [r["method"] for r in json.loads((workdir / "results.json").read_text())] == ["LR²VQ"]
  rows = [json.loads(line) for line in open(workdir / "quantize" / "metrics.jsonl")]
  assert [r["step"] for r in rows if "loss" in r["scalars"]] == [3, 6]
  # the resumed run continued the same training: close to the uninterrupted 4-device run
  assert_same_training(final_params(workdir), final_params(reference))
