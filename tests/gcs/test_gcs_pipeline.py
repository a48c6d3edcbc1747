"""The embedded pipeline with `--workdir gs://bucket/run`, offline, against a local GCS emulator.

Module fixtures start the emulator (and the TLS proxy TensorFlow's client needs) on 127.0.0.1,
upload the session's `quick_run` float and lowrank stages to gs://bucket/run (the stages it
starts from: what a finished local run leaves, orbax's commit files included), and run, as a user
would, from a scratch folder (the reference, the same stages uninterrupted on a local work dir, is
`quick_run` itself):
* the victim: `lr2vq train ... --workdir gs://bucket/run`, which restores the two
  finished stages from gs:// and is SIGKILLed mid-`quantize` once orbax has committed a
  checkpoint there;
* in one new process, one after another: the same train command again, which resumes and
  finishes, `lr2vq export --out gs://bucket/artifact`, `lr2vq eval --artifact gs://bucket/artifact`
  and the TensorBoard events (quantize's, written to gs:// by both processes) read through
  TensorFlow's GCS client.
The upload (which waits for `quick_run`), the victim and the resumed process are fixtures of their
own, each set up by the first test that reads it: three test phases.
Every process whose programs equal `quick_run`'s loads them from the suite's compilation cache
(same XLA flags). Every client is pointed at 127.0.0.1 (metadata server, credentials, endpoints:
local_gcs.py) and every subprocess has a timeout.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.support import cli_chain
from tests.support.gcs import objects
from tests.support.gcs.local_gcs import local_gcs
from tests.support.paths import QUICK, ROOT, child_pythonpath

pytestmark = pytest.mark.slow  # every test reads the one gs:// pipeline run of the module fixture
pytest.importorskip("gcp_storage_emulator")
pytest.importorskip("google.cloud.storage")

BUCKET, RUN = "bucket", "run"
WORKDIR = f"gs://{BUCKET}/{RUN}"
STAGES = ("float", "lowrank", "quantize")  # those of `quick_run`, the reference
UPLOADED = ("float", "lowrank")  # copied from `quick_run`; only quantize is trained on gs://
KILLED = "quantize"
OVERRIDES = (f"--config.stages={','.join(STAGES)}",)  # :quick: 6 steps, checkpoints at 3 and 6
TIMEOUT = 300


def _train(workdir: str) -> list[str]:
  return [sys.executable, "-m", "lr2vq_jax", "train", f"--config={QUICK}", f"--workdir={workdir}",
          *OVERRIDES]  # fmt: skip


def _upload_stages(gcs, run_dir) -> None:
  """`quick_run`'s finished stages, file by file, to gs://bucket/run (their TensorBoard events
  stay behind: the events read back below are those written to gs:// by this module's runs)."""
  for stage in UPLOADED:
    for path in sorted((run_dir / stage).rglob("*")):
      if path.is_file() and not path.name.startswith("events.out.tfevents"):
        name = f"{RUN}/{path.relative_to(run_dir).as_posix()}"
        objects.write(gcs.url, BUCKET, name, path.read_bytes())


def _wait_committed(gcs, proc, prefix: str, step: int) -> list[int]:
  deadline = time.monotonic() + TIMEOUT
  while time.monotonic() < deadline:
    steps = objects.committed_steps(gcs.url, BUCKET, prefix)
    if steps and steps[-1] >= step:
      return steps
    if proc.poll() is not None:
      raise AssertionError(f"training ended (rc {proc.returncode}) before {prefix} step {step}")
    time.sleep(0.05)
  raise AssertionError(f"no committed checkpoint >= {step} under {prefix} in {TIMEOUT} s")


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
  """The emulator (and TLS proxy), up for the whole module, and a scratch folder to run from."""
  base = tmp_path_factory.mktemp("gcs")
  cwd = base / "cwd"  # where a stray local folder `gs:/bucket/run` would appear
  cwd.mkdir()
  with local_gcs(str(base)) as server:
    env = server.child_env({**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": child_pythonpath()})
    yield {"cwd": cwd, "base": base, "gcs": server, "env": env}


@pytest.fixture(scope="module")
def uploaded(gcs, quick_run):
  """`quick_run`'s float and lowrank stages on gs://bucket/run (its own fixture: the wait for the
  session's quick run is a test phase of its own, not the victim's)."""
  t0 = time.monotonic()
  _upload_stages(gcs["gcs"], quick_run)
  names = objects.list_names(gcs["gcs"].url, BUCKET, f"{RUN}/")
  return {**gcs, "logs": {}, "ref": quick_run, "uploaded": names, "upload_s": time.monotonic() - t0}


@pytest.fixture(scope="module")
def killed(uploaded):
  """The victim, SIGKILLed mid-`quantize` once orbax committed a step there, and a step dir as an
  interrupted save leaves it on GCS: files, but no commit_success.txt. (Its own fixture, set up
  by the module's second test, so the victim and the resumed pipeline are two test phases.)"""
  out = uploaded
  base, server = out["base"], out["gcs"]
  t0 = time.monotonic()
  with open(base / "killed.log", "wb") as log:
    victim = subprocess.Popen(_train(WORKDIR), cwd=out["cwd"], env=out["env"], stdout=log,
                              stderr=subprocess.STDOUT)  # fmt: skip
  prefix = f"{RUN}/{KILLED}/checkpoints"
  out["seen"] = _wait_committed(server, victim, prefix, 3)
  victim.send_signal(signal.SIGKILL)
  out["killed_rc"] = victim.wait(timeout=60)
  out["after_kill"] = objects.committed_steps(server.url, BUCKET, prefix)
  meta = json.dumps({"stage": KILLED, "model": "digits_cnn", "step": 5, "num_steps": 6})
  objects.write(server.url, BUCKET, f"{prefix}/5/meta/metadata", meta.encode())
  objects.write(server.url, BUCKET, f"{prefix}/5/state/_METADATA", b"{}")
  out["logs"]["killed"] = (base / "killed.log").read_text(errors="replace")
  out["victim_s"] = time.monotonic() - t0
  return out


@pytest.fixture(scope="module")
def gcs_run(killed):
  """The same command again, then export, eval and the TensorBoard read: one process, one after
  another (tests/support/cli_chain), the train command exactly as `lr2vq train` runs it."""
  out, server = killed, killed["gcs"]
  t0 = time.monotonic()
  chain = cli_chain.command([
    ("resumed", ["train", f"--config={QUICK}", f"--workdir={WORKDIR}", *OVERRIDES]),
    ("export", ["export", f"--config={QUICK}", f"--workdir={WORKDIR}", "--stage=quantize",
                f"--out=gs://{BUCKET}/artifact"]),
    ("eval", ["eval", f"--artifact=gs://{BUCKET}/artifact"]),
    ("tensorboard", ["-c", _READ_EVENTS, f"{WORKDIR}/{KILLED}"]),
  ])  # fmt: skip
  p = subprocess.run(
    chain, cwd=out["cwd"], env=out["env"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    text=True, timeout=TIMEOUT,
  )  # fmt: skip
  out["pipeline_s"] = time.monotonic() - t0
  ran = cli_chain.split(p.stdout)
  for name in ("resumed", "export", "eval", "tensorboard"):
    out[f"{name}_rc"], out["logs"][name] = ran.get(name, (None, p.stdout))
  out["names"] = objects.list_names(server.url, BUCKET)
  out["results"] = json.loads(objects.read(server.url, BUCKET, f"{RUN}/results.json"))
  out["metrics"] = {
    s: objects.read(server.url, BUCKET, f"{RUN}/{s}/metrics.jsonl").decode() for s in STAGES
  }
  timings = {k: round(v, 1) for k, v in out.items() if k.endswith("_s")}
  print(f"gs:// pipeline timings (s): {timings}")  # shown with -s
  return out


# Reads the TensorBoard event files of a gs:// folder through TensorFlow's own GCS client.
_READ_EVENTS = """
import sys, tensorflow as tf
files = tf.io.gfile.glob(sys.argv[1] + "/events.out.tfevents.*")
tags = {v.tag for f in files for e in tf.compat.v1.train.summary_iterator(f) for v in e.summary.value}
print("TAGS", sorted(tags))
"""


def _without_timing(records: list[dict]) -> list[dict]:
  return [{k: v for k, v in r.items() if k != "wall_s"} for r in records]


def test_uploaded_stages_are_committed_steps_on_gs(uploaded):
  """The stages the victim starts from are finished runs orbax on gs:// recognizes, and nothing
  of the stage it trains is there yet."""
  url = uploaded["gcs"].url
  for stage in UPLOADED:
    steps = objects.committed_steps(url, BUCKET, f"{RUN}/{stage}/checkpoints")
    assert steps == [3, 6], (stage, steps)
    assert f"{RUN}/{stage}/config.json" in uploaded["uploaded"]
  assert not [n for n in uploaded["uploaded"] if n.startswith(f"{RUN}/{KILLED}/")]


def test_victim_is_killed_mid_stage_after_a_commit(killed):
  assert killed["killed_rc"] == -signal.SIGKILL, killed["logs"]["killed"][-3000:]
  assert 3 <= killed["after_kill"][-1] < 6, killed["after_kill"]  # quick stages have 6 steps
  assert 5 not in killed["after_kill"]
  for stage in UPLOADED:  # finished stages, restored from gs://: not retrained
    assert f"[{stage}] step" not in killed["logs"]["killed"], stage


def test_killed_run_resumes_on_gs_to_the_uninterrupted_results(gcs_run):
  logs = gcs_run["logs"]
  assert gcs_run["killed_rc"] == -signal.SIGKILL
  assert gcs_run["resumed_rc"] == 0, logs["resumed"][-3000:]
  killed_at = gcs_run["after_kill"][-1]
  assert 3 <= killed_at < 6, gcs_run["after_kill"]  # mid-stage: quick stages have 6 steps
  # Progress rows come every 3 steps: a rerun from step 0 would print step 3 again.
  assert f"[{KILLED}] step 3/6" not in logs["resumed"], logs["resumed"][-3000:]
  assert f"[{KILLED}] step 6/6" in logs["resumed"], logs["resumed"][-3000:]
  for stage in UPLOADED:  # finished: not retrained
    assert f"[{stage}] step" not in logs["resumed"], stage
  reference = json.loads((gcs_run["ref"] / "results.json").read_text())
  assert [r["method"] for r in gcs_run["results"]] == ["float", "LR²VQ"]
  assert _without_timing(gcs_run["results"]) == _without_timing(reference)
  for (
    stage
  ) in STAGES:  # quantize's written on gs:// by the two processes; no rows added to the others
    local = (gcs_run["ref"] / stage / "metrics.jsonl").read_text()
    assert gcs_run["metrics"][stage] == local, stage


def test_uncommitted_step_dir_is_ignored_and_removed(gcs_run):
  """Step 5 without commit_success.txt was not resumed from (the results match), and is gone."""
  assert gcs_run["resumed_rc"] == 0
  assert 5 not in gcs_run["after_kill"]
  assert not [n for n in gcs_run["names"] if n.startswith(f"{RUN}/{KILLED}/checkpoints/5/")]


def test_orbax_commits_every_step_dir_on_gs(gcs_run):
  names = gcs_run["names"]
  step_dirs = {m.group(1) for n in names if (m := re.match(r"^(.*/checkpoints/\d+)/", n))}
  assert {d.split("/")[1] for d in step_dirs} == set(STAGES), sorted(step_dirs)
  for step_dir in step_dirs:
    assert f"{step_dir}/commit_success.txt" in names, step_dir
  written = {d for d in step_dirs if d.startswith(f"{RUN}/{KILLED}/")}  # by orbax, on gs://
  assert written == {f"{RUN}/{KILLED}/checkpoints/{s}" for s in (3, 6)}, sorted(step_dirs)
  for stage in STAGES:
    assert f"{RUN}/{stage}/config.json" in names


def test_export_to_gs_and_eval_from_gs_give_the_pipeline_number(gcs_run):
  logs = gcs_run["logs"]
  assert gcs_run["export_rc"] == 0, logs["export"][-3000:]
  assert gcs_run["eval_rc"] == 0, logs["eval"][-3000:]
  assert {f"artifact/{f}" for f in ("manifest.json", "arrays.npz")} <= set(gcs_run["names"])
  assert not [n for n in gcs_run["names"] if ".tmp" in n]  # one upload per file, no renames
  top1 = re.search(r"top-1 ([\d.]+)%", logs["eval"])
  quantize = gcs_run["results"][1]
  assert top1 and float(top1.group(1)) == pytest.approx(quantize["top1"], abs=0.005), logs["eval"]
  assert f"payload {quantize['exported_bytes']} bytes" in logs["eval"]


def test_tensorboard_events_are_readable_from_gs(gcs_run):
  log = gcs_run["logs"]["tensorboard"]
  assert gcs_run["tensorboard_rc"] == 0, log[-3000:]
  tags = re.search(r"TAGS \[(.*)\]", log)
  assert tags and "'loss'" in tags.group(1) and "'eval_top1'" in tags.group(1), log[-2000:]


def test_no_local_folder_is_made_from_a_gs_path(gcs_run):
  assert os.listdir(gcs_run["cwd"]) == []  # not `gs:/bucket/run`, nor anything else
  assert not os.path.exists(os.path.join(ROOT, "gs:"))
