"""d̃ for any model: `lq.select_dim` with the caller's evaluation; CLI on weights and configs."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

import lr2vq_jax as lq
from lr2vq_jax import cli
from lr2vq_jax.models import DigitsCNN
from tests.support.paths import config as config_path
from tests.support.plain_net import RULES, PlainNet, X


@pytest.mark.slow
def test_select_dim_for_any_model_scores_every_candidate():
  variables = PlainNet().init(jax.random.key(0), X)
  labels = jnp.array([0, 1])
  seen = []

  def eval_fn(qmodel, qvars):
    seen.append(qvars["params"]["body"]["z"].shape[1])
    logits = qmodel.apply(qvars, X)  # hard codes: the model's train flag defaults to False
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  sel = lq.select_dim(PlainNet(), variables, RULES, eval_fn, (1, 2, 8), sample=X, kmeans_iters=2)
  assert sel.candidates == (1, 2, 8) and seen == [1, 2, 8]
  assert sel.best == sel.candidates[int(np.argmin(sel.scores))]
  assert f"best d = {sel.best}" in str(sel)
  with pytest.raises(ValueError, match="in 1..8"):
    lq.select_dim(PlainNet(), variables, RULES, eval_fn, (9,))


def test_estimate_dim_on_trained_weights_file(tmp_path, capsys):
  params = DigitsCNN().init(jax.random.key(1), jnp.zeros((1, 8, 8, 1)), train=False)["params"]
  flat = {"/".join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(params).items()}
  path = tmp_path / "weights.npz"
  np.savez(path, **flat)
  argv = ["estimate-dim", "--model", "digits_cnn", "--weights", str(path), "--candidates", "2,9"]
  assert cli.main([*argv, "--layer", "conv2", "--iters", "3"]) == 0
  out = capsys.readouterr().out
  assert f"model digits_cnn, preset digits_large_blocks (weights {path})" in out
  assert "conv2" in out and "conv3" not in out
  assert cli.main(["estimate-dim", "--weights", str(tmp_path / "nope.npz")]) == 2
  assert "cannot read --weights" in capsys.readouterr().err


def test_report_from_a_config_for_any_registered_model(capsys):
  config = config_path("default.py")
  assert cli.main(["report", "--config", config]) == 0
  out = capsys.readouterr().out
  assert f"config {config}: model digits_cnn" in out
  assert "ratio 27.3×" in out  # the README's demo row: 376,744 / 13,800 bytes
