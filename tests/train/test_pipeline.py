"""End to end: the embedded pipeline (shortened); every config validates (ImageNet on mock data).

The ImageNet ResNet-18 run is tests/test_documented_commands.py: the README's commands on a tiny
ImageNet in the official tar layout, prepared by `lr2vq prepare` (real TFRecords, JPEG decoding).
"""

import json
import os

import pytest
import tensorflow_datasets as tfds

from lr2vq_jax import cli
from lr2vq_jax.train import pipeline
from lr2vq_jax.train.config import load_config
from tests.support.devices import copy_workdir
from tests.support.paths import QUICK
from tests.support.paths import config as config_path


def _assert_stage_outputs(workdir, stage, artifact: bool):
  assert os.listdir(os.path.join(workdir, stage, "checkpoints")), stage
  rows = [json.loads(line) for line in open(os.path.join(workdir, stage, "metrics.jsonl"))]
  assert any("eval_top1" in r["scalars"] for r in rows), stage
  assert all(r["stage"] == stage for r in rows)
  if artifact:
    assert os.path.isfile(os.path.join(workdir, stage, "artifact", "manifest.json"))


@pytest.mark.slow
def test_embedded_pipeline_runs_every_stage(quick_run, tmp_path, capsys):
  """Every stage of the quick config: float, lowrank and quantize as the session's quick run
  trained them (the same config, through the training entry point), resumed here; PQ and vanilla
  DKM trained here from its float and lowrank checkpoints."""
  config = load_config(QUICK)
  tmp_path = copy_workdir(quick_run, tmp_path / "run")
  records = pipeline.run(config, str(tmp_path))
  assert [r["method"] for r in records] == ["float", "LR²VQ", "PQ", "vanilla DKM"]
  for stage in ("float", "lowrank", "quantize", "pq", "dkm"):
    _assert_stage_outputs(tmp_path, stage, artifact=stage in ("quantize", "pq", "dkm"))
  saved = json.loads((tmp_path / "results.json").read_text())
  assert saved == records
  compressed = [r for r in records if r["method"] != "float"]
  # Same (k, m) everywhere, so PQ, vanilla DKM and LR²VQ ship the same bytes.
  assert len({r["exported_bytes"] for r in compressed}) == 1
  assert all(r["ratio"] > 20 for r in compressed)
  assert "exported_bytes" in capsys.readouterr().out
  # `lr2vq eval` reads the artifact back and reports the same test top-1.
  assert cli.main(["eval", "--artifact", str(tmp_path / "quantize" / "artifact")]) == 0
  lr2vq = next(r for r in records if r["method"] == "LR²VQ")
  assert f"top-1 {lr2vq['top1']:.2f}%" in capsys.readouterr().out


@pytest.mark.parametrize(
  "spec",
  [
    f"imagenet_{m}_{b}_{meth}.py:runlocal"
    for m in ("resnet18", "resnet50")
    for b in ("small", "large")
    for meth in ("lr2vq", "dkm", "pq")
  ]
  + ["cifar10_resnet18_lr2vq.py:runlocal", "default.py"],
)
def test_every_config_loads_and_validates(spec, tmp_path):
  from lr2vq_jax.train.validate import validate_config

  config = load_config(config_path(spec))
  with tfds.testing.mock_data(num_examples=8):
    validate_config(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()
