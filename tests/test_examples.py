"""The own-model example in examples/ runs end to end and its artifact decodes to what it evaluated."""

import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _example(name: str):
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "examples", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.slow
def test_own_model_example(tmp_path, capsys):
  result = _example("own_model").main(str(tmp_path), steps=10)
  assert result["max_abs_diff"] < 1e-4  # decoded artifact == the evaluated quantized model
  assert 0 < result["payload_bytes"] < 4 * 6000  # far below the float model's fp32 bytes
  assert 0 <= result["lr2vq_top1"] <= 100
  assert result["commitment"] > 0  # the config's β reaches the quantized model's sown losses
  out = capsys.readouterr().out
  assert "decoded artifact == evaluated model" in out and "conv   ^conv$" in out


def test_readme_own_model_snippet_runs(tmp_path, monkeypatch):
  """README "Use in your own model": the code block runs as written on the example's model."""
  import jax
  import optax

  with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
    readme = f.read()
  section = readme.split("## Use in your own model", 1)[1]
  code = section.split("```python\n", 1)[1].split("```", 1)[0]
  example = _example("own_model")
  x, y = example.make_data(jax.random.key(0), n=16)
  monkeypatch.chdir(tmp_path)
  namespace = {
    "MyNet": example.MyNet,
    "x": x,
    "key": jax.random.key(1),
    "task_loss": lambda logits: optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(),
  }
  exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 -- the README's own code
  assert namespace["float_vars_again"]["params"]["conv"]["kernel"].shape == (3, 3, 16, 32)
  assert float(namespace["lq"].sum_losses(namespace["upd"])) > 0  # β=0.1 is sown
  assert float(namespace["loss"]) > 0 and (tmp_path / "artifact" / "manifest.json").exists()
