"""MetricsLogger: JSONL rows, truncate_after for resumes, silent non-primary processes."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

metrics = pytest.importorskip("lr2vq_jax.train.metrics")


def _rows(path):
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def test_jsonl_rows(tmp_path):
  with metrics.MetricsLogger(
    tmp_path, is_primary=True, stage="finetune", asynchronous=False
  ) as log:
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
  log = metrics.MetricsLogger(tmp_path / "a", is_primary=True, stage="s", asynchronous=False)
  for step in range(1, 7):  # the interrupted run got to step 6; its checkpoint is at step 4
    log.write_scalars(step, {"x": step})
  log.close()
  resumed = metrics.MetricsLogger(tmp_path / "a", is_primary=True, stage="s", asynchronous=False)
  assert resumed.truncate_after(4) == 2
  for step in (5, 6):
    resumed.write_scalars(step, {"x": step})
  resumed.close()
  straight = metrics.MetricsLogger(tmp_path / "b", is_primary=True, stage="s", asynchronous=False)
  for step in range(1, 7):
    straight.write_scalars(step, {"x": step})
  straight.close()
  assert _rows(tmp_path / "a" / "metrics.jsonl") == _rows(tmp_path / "b" / "metrics.jsonl")
  assert resumed.truncate_after(100) == 0


def test_truncate_keeps_other_stages(tmp_path):
  first = metrics.MetricsLogger(tmp_path, is_primary=True, stage="pretrain", asynchronous=False)
  first.write_scalars(50, {"x": 1})
  second = metrics.MetricsLogger(tmp_path, is_primary=True, stage="finetune", asynchronous=False)
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
  log = metrics.MetricsLogger(workdir, is_primary=False, stage="s", asynchronous=False)
  log.write_scalars(1, {"loss": 1.0})
  log.write_hparams({"lr": 0.1})
  assert log.truncate_after(0) == 0
  log.close()
  assert not workdir.exists()


def test_periodic_hooks(tmp_path):
  log = metrics.MetricsLogger(tmp_path, is_primary=True, asynchronous=False)
  hooks = metrics.periodic_hooks(
    tmp_path, num_train_steps=10, writer=log.writer, is_primary=True, profile_steps=2
  )
  assert [type(h).__name__ for h in hooks] == ["ReportProgress", "StepTrace"]
  hooks = metrics.periodic_hooks(tmp_path, num_train_steps=10, is_primary=False, profile_steps=2)
  assert [type(h).__name__ for h in hooks] == ["ReportProgress"]
  for step in range(1, 4):
    hooks[0](step)
  log.close()
