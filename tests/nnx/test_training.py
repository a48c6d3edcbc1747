"""The training system runs the NNX digits CNN by one switch: stages, resume, export, eval."""

from __future__ import annotations

import json

from lr2vq_jax import cli
from lr2vq_jax.train import pipeline
from lr2vq_jax.train.config import load_config
from tests.support.paths import QUICK


def _rows(path):
  return [json.loads(line) for line in open(path)]


def test_nnx_model_pipeline_interrupted_resumed_exported(tmp_path, capsys):
  config = load_config(QUICK)
  config.model = "digits_cnn_nnx"
  config.stages = "float,lowrank,quantize"
  config.quantize.max_steps_this_run = 3
  config.quantize.checkpoint_every = 3
  pipeline.run(config, str(tmp_path))
  stopped = [r["step"] for r in _rows(tmp_path / "quantize" / "metrics.jsonl")]
  assert max(stopped) == 3  # interrupted mid-stage, checkpoint at step 3
  config.quantize.max_steps_this_run = 0
  records = pipeline.run(config, str(tmp_path), allow_config_change=True)
  rows = _rows(tmp_path / "quantize" / "metrics.jsonl")
  assert any("eval_top1" in r["scalars"] for r in rows) and max(r["step"] for r in rows) == 6
  assert [r["method"] for r in records] == ["float", "LR²VQ"]
  lr2vq = records[1]
  assert lr2vq["ratio"] > 20
  manifest = json.loads((tmp_path / "quantize" / "artifact" / "manifest.json").read_text())
  assert manifest["metadata"]["model"] == "digits_cnn_nnx"
  assert sorted(manifest["layers"]) == ["conv2", "conv3"]
  capsys.readouterr()
  assert cli.main(["eval", "--artifact", str(tmp_path / "quantize" / "artifact")]) == 0
  assert f"top-1 {lr2vq['top1']:.2f}%" in capsys.readouterr().out
