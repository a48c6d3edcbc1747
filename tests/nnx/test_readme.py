"""README "Use in your own model", NNX part: the code block runs as written."""

from __future__ import annotations

import os

import jax
import optax

from tests.support.nnx_models import MyNnxNet

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_readme_nnx_snippet_runs(tmp_path, monkeypatch):
  with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
    readme = f.read()
  section = readme.split("### With flax NNX", 1)[1]
  code = section.split("```python\n", 1)[1].split("```", 1)[0]
  x = jax.random.normal(jax.random.key(0), (8, 8, 8, 3))
  y = jax.numpy.arange(8) % 4
  monkeypatch.chdir(tmp_path)
  namespace = {
    "MyNnxNet": MyNnxNet,
    "x": x,
    "key": jax.random.key(1),
    "task_loss": lambda logits: optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(),
  }
  exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 -- the README's own code
  assert float(namespace["loss"]) > 0 and (tmp_path / "artifact" / "manifest.json").exists()
  fresh, logits = namespace["fresh"], namespace["logits"]
  assert float(abs(fresh(x) - logits).max()) < 1e-4  # decoded artifact == hard evaluation
  assert namespace["model"].conv.kernel.mode == "quantize"
