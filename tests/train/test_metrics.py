"""MetricsLogger: JSONL rows, truncate_after for resumes, silent non-primary processes."""

import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from tests.support import devices

metrics = pytest.importorskip("lr2vq_jax.train.metrics")


def _rows(path):
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def test_jsonl_rows(tmp_path):
  with metrics.MetricsLogger(tmp_path, is_primary=True, stage="finetune") as log:
    log.write_scalars(1, {"loss": jnp.float32(0.5), "acc": np.array([0.25]), "n": 3})
    log.write_scalars(2, {"loss": 0.25, "ok": True})
    log.flush()
  assert _rows(tmp_path / "metrics.jsonl") == [
    {"step": 1, "stage": "finetune", "scalars": {"loss": 0.5, "acc": 0.25, "n": 3}},
    {"step": 2, "stage": "finetune", "scalars": {"loss": 0.25, "ok": 1}},
  ]
  assert any(p.name.startswith("events.out.tfevents") for p in tmp_path.iterdir())
  with pytest.raises(ValueError, match="scalar expected"):
    metrics.MetricsLogger(tmp_path, is_primary=True).write_scalars(3, {"v": np.zeros(2)})


def test_truncate_after_matches_uninterrupted_run(tmp_path):
  log = metrics.MetricsLogger(tmp_path / "a", is_primary=True, stage="s")
  for step in range(1, 7):  # the interrupted run got to step 6; its checkpoint is at step 4
    log.write_scalars(step, {"x": step})
  log.close()
  resumed = metrics.MetricsLogger(tmp_path / "a", is_primary=True, stage="s")
  assert resumed.truncate_after(4) == 2
  for step in (5, 6):
    resumed.write_scalars(step, {"x": step})
  resumed.close()
  straight = metrics.MetricsLogger(tmp_path / "b", is_primary=True, stage="s")
  for step in range(1, 7):
    straight.write_scalars(step, {"x": step})
  straight.close()
  assert _rows(tmp_path / "a" / "metrics.jsonl") == _rows(tmp_path / "b" / "metrics.jsonl")
  assert resumed.truncate_after(100) == 0


def test_truncate_keeps_other_stages(tmp_path):
  first = metrics.MetricsLogger(tmp_path, is_primary=True, stage="pretrain")
  first.write_scalars(50, {"x": 1})
  second = metrics.MetricsLogger(tmp_path, is_primary=True, stage="finetune")
  second.write_scalars(5, {"x": 2})
  second.write_scalars(9, {"x": 3})
  assert second.truncate_after(5) == 1
  assert [(r["stage"], r["step"]) for r in second.read_rows()] == [
    ("pretrain", 50),
    ("finetune", 5),
  ]
  first.close()
  second.close()


def test_non_primary_writes_nothing(tmp_path):
  workdir = tmp_path / "w"
  log = metrics.MetricsLogger(workdir, is_primary=False, stage="s")
  log.write_scalars(1, {"loss": 1.0})
  log.write_hparams({"lr": 0.1})
  assert log.truncate_after(0) == 0
  log.close()
  assert not workdir.exists()


def test_periodic_hooks(tmp_path):
  log = metrics.MetricsLogger(tmp_path, is_primary=True)
  hooks = metrics.periodic_hooks(
    tmp_path, num_train_steps=10, writer=log.writer, is_primary=True, profile_steps=2
  )
  assert [type(h).__name__ for h in hooks] == ["Progress", "StepTrace"]
  hooks = metrics.periodic_hooks(tmp_path, num_train_steps=10, is_primary=False, profile_steps=2)
  assert [type(h).__name__ for h in hooks] == ["Progress"]
  for step in range(1, 4):
    hooks[0](step)
  log.close()


def test_event_files_read_by_tensorflow_and_tensorboard(tmp_path):
  """Scalars as clu's tf.summary wrote them (float32 tensors, scalars plugin) and the HParams
  record: TensorFlow's reader and TensorBoard's loader both see them."""
  log = metrics.MetricsLogger(tmp_path, is_primary=True, stage="s")
  log.write_hparams({"lr": 0.1, "opt": {"name": "sgd", "betas": [0.9, None]}})
  log.write_scalars(3, {"loss": 0.5, "n": 3})
  log.write_scalars(4, {"loss": 0.25})
  log.close()
  tf = pytest.importorskip("tensorflow")
  (path,) = tf.io.gfile.glob(str(tmp_path / "events.out.tfevents.*"))
  events = list(tf.compat.v1.train.summary_iterator(path))
  assert events[0].file_version == "brain.Event:2"
  values = [(e.step, v) for e in events[1:] for v in e.summary.value]
  scalars = [(s, v.tag, float(tf.make_ndarray(v.tensor))) for s, v in values if s]
  assert scalars == [(3, "loss", 0.5), (3, "n", 3.0), (4, "loss", 0.25)]
  assert {v.metadata.plugin_data.plugin_name for s, v in values} == {"hparams", "scalars"}
  from tensorboard.backend.event_processing import event_accumulator
  from tensorboard.plugins.hparams import metadata as hp_metadata

  acc = event_accumulator.EventAccumulator(str(tmp_path), size_guidance={"tensors": 0})
  acc.Reload()
  assert [(t.step, float(tf.make_ndarray(t.tensor_proto))) for t in acc.Tensors("loss")] == [
    (3, 0.5),
    (4, 0.25),
  ]
  start = hp_metadata.parse_session_start_info_plugin_data(
    acc.SummaryMetadata(hp_metadata.SESSION_START_INFO_TAG).plugin_data.content
  )
  assert dict(start.hparams)["opt.name"].string_value == "sgd"
  assert dict(start.hparams)["opt.betas.1"].string_value == ""
  assert dict(start.hparams)["lr"].number_value == 0.1


def test_progress_reports_when_due_and_at_the_end(tmp_path, monkeypatch):
  clock = iter([0.0, 0.0, 30.0, 61.0, 62.0, 63.0])
  monkeypatch.setattr(metrics.time, "monotonic", lambda: next(clock))
  log = metrics.MetricsLogger(tmp_path, is_primary=True)
  hook = metrics.Progress(10, writer=log.writer, every_secs=60)
  assert [hook(step) for step in (1, 2, 8, 9, 10)] == [False, False, True, False, True]
  log.close()
  tf = pytest.importorskip("tensorflow")
  (path,) = tf.io.gfile.glob(str(tmp_path / "events.out.tfevents.*"))
  rows = [
    (e.step, v.tag, float(tf.make_ndarray(v.tensor)))
    for e in tf.compat.v1.train.summary_iterator(path)
    for v in e.summary.value
  ]
  assert rows == [
    (8, "steps_per_sec", float(np.float32(7 / 61))),
    (8, "uptime", 61.0),
    (10, "steps_per_sec", 1.0),
    (10, "uptime", 63.0),
  ]


# Runs the training entry point and reports, at exit, the TensorFlow and clu modules it loaded.
_RUN_MAIN = """
import atexit, runpy, sys
atexit.register(lambda: print("HEAVY", sorted(
  m for m in sys.modules if m.split(".")[0] in ("tensorflow", "clu", "tensorflow_datasets"))))
sys.argv = sys.argv[1:]
runpy.run_module("lr2vq_jax.main", run_name="__main__", alter_sys=True)
"""


def test_digits_training_run_imports_neither_tensorflow_nor_clu(tmp_path):
  """The quick float stage (the suite's cached compilations): digits, metrics, TensorBoard events,
  checkpoints and evaluation, all without TensorFlow or clu."""
  env = devices.child_env(1, tmp_path)
  env["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "")  # the quick run's: its compilation cache
  cmd = devices.main_cmd(tmp_path / "run", "--config.stages=float")
  p = subprocess.run(
    [sys.executable, "-c", _RUN_MAIN, *cmd[2:]], cwd=devices.ROOT, env=env, capture_output=True,
    text=True, timeout=devices.TIMEOUT,
  )  # fmt: skip
  assert p.returncode == 0, p.stderr[-4000:]
  assert "HEAVY []" in p.stdout.splitlines(), p.stdout[-2000:]
  assert (tmp_path / "run" / "float" / "metrics.jsonl").exists()
  assert list((tmp_path / "run" / "float").glob("events.out.tfevents.*.v2"))
