"""The recipe options the ablations compare: distillation, τ annealing, orthonormal P, BN re-estimation."""

import json
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lr2vq_jax as lq
from lr2vq_jax.core import lowrank
from lr2vq_jax.nn.kernel import effective_projection
from lr2vq_jax.train import checkpointing, partitioning, pipeline
from lr2vq_jax.train.bn_reestimate import reestimate_batch_stats
from lr2vq_jax.train.config import load_config
from lr2vq_jax.train.step import anneal_tau, distillation_loss
from lr2vq_jax.train.trainer import abstract_state, build_stage
from lr2vq_jax.train.validate import ConfigError, validate_config
from tests.support.paths import QUICK


def test_orthonormal_projection_has_orthonormal_rows_and_keeps_svd_init():
  p = jax.random.normal(jax.random.key(0), (3, 9))
  q = effective_projection(p, "orthonormal")
  np.testing.assert_allclose(q @ q.T, np.eye(3), atol=1e-5)
  # Gram-Schmidt is the Q of QR with a positive diagonal of R.
  qq, rr = np.linalg.qr(np.asarray(p, np.float64).T)
  np.testing.assert_allclose(q, (qq * np.sign(np.diag(rr))).T, atol=1e-5)
  # Same row space: q = L·p for a lower-triangular L (Gram-Schmidt), so p's rows are in span(q).
  np.testing.assert_allclose(p @ q.T @ q, p, atol=1e-4)
  _, p_svd = lowrank.svd_init(jax.random.normal(jax.random.key(1), (50, 9)), 3)
  np.testing.assert_allclose(effective_projection(p_svd, "orthonormal"), p_svd, atol=1e-5)
  grad = jax.grad(lambda p: jnp.sum(effective_projection(p, "orthonormal") ** 3))(p_svd)
  assert np.all(np.isfinite(grad)) and np.abs(grad).sum() > 0
  assert effective_projection(p, "learned") is not None
  np.testing.assert_array_equal(effective_projection(p, "learned"), p)
  # The baselines keep P = I exactly (PQ and vanilla DKM are unchanged by the option).
  np.testing.assert_array_equal(effective_projection(jnp.eye(9), "orthonormal"), np.eye(9))


def test_distillation_loss_is_zero_at_the_teacher_and_positive_elsewhere():
  t = jax.random.normal(jax.random.key(0), (8, 10))
  assert float(distillation_loss(t, t, 2.0)) == pytest.approx(0.0, abs=1e-6)
  s = t + jax.random.normal(jax.random.key(1), (8, 10))
  assert float(distillation_loss(s, t, 1.0)) > 0.01
  # Gradient flows to the student only.
  g_t = jax.grad(lambda t: distillation_loss(s, t, 1.0))(t)
  assert float(jnp.abs(g_t).sum()) == 0.0


def test_anneal_tau_scales_only_the_temperatures():
  state = {"quant": {"conv2": {"tau": jnp.float32(2.0), "shape": jnp.array([3, 3])}}, "x": 1}
  out = anneal_tau(state, 0.5)
  assert float(out["quant"]["conv2"]["tau"]) == 1.0
  np.testing.assert_array_equal(out["quant"]["conv2"]["shape"], [3, 3])
  assert anneal_tau(state, 1.0)["quant"]["conv2"]["tau"] is state["quant"]["conv2"]["tau"]


class _ConvBN(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(4, (3, 3))(x)
    return nn.BatchNorm(use_running_average=not train, momentum=0.7)(x)


def test_bn_reestimation_is_the_plain_mean_of_batch_statistics():
  model = lq.quantize_model(_ConvBN(), (lq.Rule(r"Conv_0", k=4, m=3, d=2),), "lowrank")
  x = jax.random.normal(jax.random.key(0), (3, 8, 6, 6, 2))
  variables = model.init(jax.random.key(1), x[0])
  mesh = partitioning.make_mesh()
  out = reestimate_batch_stats(model, variables, iter([{"image": b} for b in x]), 3, mesh)
  # Reference: BN input (the conv output) statistics of each batch, averaged.
  outs = []
  for b in x:
    _, inter = model.apply(variables, b, capture_intermediates=True, mutable=["intermediates"])
    outs.append(np.asarray(inter["intermediates"]["Conv_0"]["__call__"][0]).reshape(-1, 4))
  want_mean = np.mean([o.mean(0) for o in outs], 0)
  want_var = np.mean([o.var(0) for o in outs], 0)
  got = out["batch_stats"]["BatchNorm_0"]
  np.testing.assert_allclose(got["mean"], want_mean, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(got["var"], want_var, rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(out["params"]["Conv_0"]["z"], variables["params"]["Conv_0"]["z"])


@pytest.mark.slow
def test_pipeline_with_every_option_on(quick_run, tmp_path):
  """The options are those of lowrank and quantize: their float stage (the teacher) is the
  session's quick run's, the same float config, resumed; lowrank and quantize trained here."""
  shutil.copytree(quick_run / "float", tmp_path / "float")
  config = load_config(QUICK)
  config.stages = "float,lowrank,quantize"
  config.lowrank.distill = 0.5
  config.quantize.distill = 0.5
  config.quantize.distill_temperature = 2.0
  config.quantize.tau_final_factor = 0.1
  config.quantize.bn_reestimate_batches = 2
  config.quant.projection = "orthonormal"
  records = pipeline.run(config, str(tmp_path))
  assert records[-1]["method"] == "LR²VQ" and records[-1]["bn_reestimated"] == 2
  stage = build_stage(config, "quantize", str(tmp_path))
  ckpt = checkpointing.Checkpointer(checkpointing.checkpoint_dir(stage.workdir))
  taus = {}  # the last two checkpoints are kept: half way and the end
  half, last = config.quantize.num_steps // 2, config.quantize.num_steps
  for step in (half, last):
    state, _ = ckpt.restore(step, abstract_state=abstract_state(stage))
    taus[step] = {k: float(v["tau"]) for k, v in state.model_state["quant"].items()}
  ckpt.close()
  for layer, tau_half in taus[half].items():  # τ_t = τ_0·0.1^(t/T)
    assert taus[last][layer] == pytest.approx(0.1 ** ((last - half) / last) * tau_half, rel=1e-4)
  manifest = json.loads((tmp_path / "quantize" / "artifact" / "manifest.json").read_text())
  assert manifest["layers"]


@pytest.mark.parametrize(
  "field, value",
  [("quantize.distill", 1.5), ("float.distill", 0.5), ("quantize.tau_final_factor", 0.0),
   ("quant.projection", "stiefel")],
)  # fmt: skip
def test_bad_option_values_are_one_config_error(tmp_path, field, value):
  config = load_config(QUICK)
  section, name = field.split(".")
  config[section][name] = value
  with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
    validate_config(config, str(tmp_path))
