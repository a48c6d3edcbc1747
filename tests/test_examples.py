"""The own-model example in examples/ runs end to end and its artifact decodes to what it evaluated."""

import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _example(name: str):
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "examples", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_own_model_example(tmp_path, capsys):
  result = _example("own_model").main(str(tmp_path), steps=10)
  assert result["max_abs_diff"] < 1e-4  # decoded artifact == the evaluated quantized model
  assert 0 < result["payload_bytes"] < 4 * 6000  # far below the float model's fp32 bytes
  assert 0 <= result["lr2vq_top1"] <= 100
  out = capsys.readouterr().out
  assert "decoded artifact == evaluated model" in out and "conv   ^conv$" in out
