"""A checkpoint written on an 8-device mesh resumes on a 4-device mesh and training finishes.

Two test phases: the 8-device run that stops after 3 steps (a module fixture, set up by the first
test), then the 4-device resume, compared with the session's 4-device reference (shared with the
multi-host test: its programs are the ones the resume loads from the compilation cache). When
this test is the first to need that reference, the resume runs in the reference's process, right
after it (one start-up and import for both); otherwise in a process of its own.
"""

from __future__ import annotations

import json

import pytest

from tests.support.devices import child_env, copy_workdir, main_cmd, run
from tests.support.drift import assert_same_training, final_params

pytestmark = pytest.mark.slow
FLAGS = ("--config.stages=quantize",)


def _steps(workdir):
  return sorted(
    int(p.name) for p in (workdir / "quantize" / "checkpoints").iterdir() if p.name.isdigit()
  )


@pytest.fixture(scope="module")
def written_on_8(prepared, tmp_path_factory):
  """The quantize stage on 8 devices from the session's float + lowrank stages, stopped by its
  step budget after 3 of 6 steps (a checkpoint at 3)."""
  base = tmp_path_factory.mktemp("elastic")
  workdir = copy_workdir(prepared, base / "run")
  cmd = main_cmd(workdir, *FLAGS, "--config.quantize.max_steps_this_run=3")
  run(cmd, child_env(8, base / "a"), base / "log8.txt")
  return workdir, base


def test_8_device_run_stops_after_3_steps_with_a_checkpoint(written_on_8):
  workdir, _ = written_on_8
  assert _steps(workdir)[-1] == 3
  assert not (workdir / "results.json").exists()  # interrupted: nothing reported yet


def test_checkpoint_from_8_devices_resumes_on_4(written_on_8, reference_4dev_beside):
  workdir, base = written_on_8
  assert _steps(workdir)[-1] == 3  # the 8-device checkpoint is where the 4-device run starts
  reference_4dev, beside = reference_4dev_beside(workdir)
  if beside is None:  # the reference was there already: the resume alone
    out = run(main_cmd(workdir, *FLAGS), child_env(4, base / "b"), base / "log4.txt")
  else:
    rc, out = beside
    assert rc == 0, f"the 4-device resume failed ({rc}):\n{out[-6000:]}"
  assert _steps(workdir)[-1] == 6
  assert "[quantize] top-1" in out
  assert [r["method"] for r in json.loads((workdir / "results.json").read_text())] == ["LR²VQ"]
  rows = [json.loads(line) for line in open(workdir / "quantize" / "metrics.jsonl")]
  assert [r["step"] for r in rows if "loss" in r["scalars"]] == [3, 6]
  # the resumed run continued the same training: close to the uninterrupted 4-device run
  assert_same_training(final_params(workdir), final_params(reference_4dev))
