"""d̃ for any model: `lq.select_dim` with the caller's evaluation; CLI on weights and configs."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

import lr2vq_jax as lq
from lr2vq_jax import cli, convert
from lr2vq_jax.core import kmeans as kmeans_lib
from lr2vq_jax.core.kernel import effective_projection
from lr2vq_jax.dim_choice import at_rank, narrow, widen
from lr2vq_jax.models import DigitsCNN
from lr2vq_jax.nn import plan_model
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

  # d̃ = 1 is below every rule's m; d̃ = 8 is above proj's and head's m = 4, where they use m.
  # (Each candidate's evaluation compiles its own layer shapes: two candidates cover both cases.)
  sel = lq.select_dim(PlainNet(), variables, RULES, eval_fn, (1, 8), sample=X, kmeans_iters=3)
  assert sel.candidates == (1, 8) and seen == [1, 8]
  assert sel.best == sel.candidates[int(np.argmin(sel.scores))]
  assert f"best d = {sel.best}" in str(sel)
  with pytest.raises(ValueError, match="in 1..8"):
    lq.select_dim(PlainNet(), variables, RULES, eval_fn, (9,))


def _lowrank(variables, d):
  rules = lq.presets.with_d(RULES, d)
  plan = plan_model(PlainNet(), rules, X)
  return convert.float_to_lowrank(variables, rules, plan=plan)["params"]


def test_candidates_at_width_m_are_the_rank_d_factors():
  """What lets select_dim compile k-means, τ and evaluation once for every d̃: the rank-d̃ model at
  width m (zero columns in Z, P completed) has the same factors, Z·P and k-means solution."""
  variables = PlainNet().init(jax.random.key(0), X)
  full = {"params": _lowrank(variables, 8)}
  low = _lowrank(variables, 3)  # body (m = 8) and proj, head (m = 4) at d̃ = 3
  cut = at_rank(full, 3)["params"]
  wide = widen({"params": low})["params"]
  back = narrow({"params": cut}, 3)["params"]
  for name in ("body", "proj", "head"):
    z, p = low[name]["z"], low[name]["projection"]
    m = p.shape[1]
    assert (
      cut[name]["z"].shape[1] == wide[name]["z"].shape[1] == wide[name]["projection"].shape[0] == m
    )
    assert not np.any(cut[name]["z"][:, 3:]) and not np.any(wide[name]["z"][:, 3:])
    np.testing.assert_allclose(back[name]["z"], z, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(back[name]["projection"], p, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(wide[name]["z"] @ wide[name]["projection"], z @ p, atol=1e-6)
    # The completed P is orthonormal, so the "orthonormal" projection mode keeps P's first rows.
    q = effective_projection(wide[name]["projection"], "orthonormal")
    np.testing.assert_allclose(q @ q.T, np.eye(m), atol=1e-5)
    np.testing.assert_allclose(q[:3], effective_projection(p, "orthonormal"), atol=1e-5)
  # k-means sees the same distances: the same centroids, zero in the padded columns.
  z3, z8 = low["body"]["z"], cut["body"]["z"]
  a = kmeans_lib.kmeans(z3, 16, key=jax.random.key(1), iters=3)  # as select_dim's above
  b = kmeans_lib.kmeans(z8, 16, key=jax.random.key(1), iters=3)
  np.testing.assert_array_equal(a.codes, b.codes)
  np.testing.assert_allclose(b.centroids[:, :3], a.centroids, rtol=1e-5, atol=1e-6)
  assert not np.any(b.centroids[:, 3:]) and float(b.sse) == pytest.approx(float(a.sse), rel=1e-5)


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
