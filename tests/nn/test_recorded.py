"""Settings, training mode and stage travel with the variables: nothing is lost silently."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lr2vq_jax as lq
from lr2vq_jax import convert
from lr2vq_jax.nn.recorded import SettingError, StageError
from tests.support.plain_net import RULES, PlainNet, X

LABELS = jnp.array([1, 3])


# No config: everything from the variables (inside jit the recorded settings are traced, so
# every parametrization below trains and evaluates with the same two compiled programs).
MODEL = lq.quantize_model(PlainNet(), RULES)
TX = optax.adam(1e-2)
EVALUATE = jax.jit(MODEL.apply)


@jax.jit
def _step(params, rest, opt):
  def loss_fn(params):
    logits, upd = MODEL.apply(
      {"params": params, **rest}, X, train=True, mutable=["batch_stats", "losses"]
    )
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, LABELS).mean()
    return ce + lq.nn.sum_losses(upd), upd

  (_, upd), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  updates, opt = TX.update(grads, opt, params)
  return optax.apply_updates(params, updates), {**rest, "batch_stats": upd["batch_stats"]}, opt


def _trained(config, steps=4):
  """PlainNet through float → lowrank → quantize (made with `config`), then `steps` of soft DKM."""
  float_vars = PlainNet().init(jax.random.key(0), X)
  plan = lq.nn.plan_model(PlainNet(), RULES, X)
  lowrank = convert.float_to_lowrank(float_vars, RULES, plan=plan, config=config)
  variables = convert.lowrank_to_quantize(
    lowrank, RULES, key=jax.random.key(1), kmeans_iters=3, config=config
  )
  params, rest = variables["params"], {k: v for k, v in variables.items() if k != "params"}
  opt = TX.init(params)
  for _ in range(steps):
    params, rest, opt = _step(params, rest, opt)
  return {"params": params, **rest}


@pytest.mark.slow
@pytest.mark.parametrize("projection", ["learned", "orthonormal"])
@pytest.mark.parametrize("store", ["codebook", "factored"])
def test_artifact_decodes_to_the_evaluated_model_with_or_without_config(
  tmp_path, projection, store
):
  config = lq.QuantConfig(projection=projection, store=store, dkm_iters=2, commitment=0.1)
  variables = _trained(config)
  # Evaluated as the training loop would: jitted, no config (read from the variables).
  evaluated = EVALUATE(variables, X)
  for name, given in (("none", None), ("same", config)):
    manifest = lq.export(variables, RULES, tmp_path / name, config=given)
    assert {e["store"] for e in manifest["layers"].values()} == {store}
    assert {e["projection"] for e in manifest["layers"].values()} == {projection}
    logits = PlainNet().apply(lq.load(tmp_path / name).decode(), X)
    np.testing.assert_allclose(logits, evaluated, rtol=1e-5, atol=1e-5)
  # A frozen copy evaluates and exports the same.
  frozen = convert.quantize_to_frozen(variables)
  frozen_logits = lq.quantize_model(PlainNet(), RULES, "frozen").apply(frozen, X)
  np.testing.assert_allclose(frozen_logits, evaluated, rtol=1e-5, atol=1e-5)
  other = "learned" if projection == "orthonormal" else "orthonormal"
  with pytest.raises(SettingError, match=f"projection='{other}'.*made with projection"):
    lq.export(variables, RULES, tmp_path / "bad", config=lq.QuantConfig(projection=other))
  assert not (tmp_path / "bad").exists()
  with pytest.raises(SettingError, match="dkm_iters"):
    lq.quantize_model(PlainNet(), RULES, config=lq.QuantConfig(dkm_iters=5)).apply(variables, X)


class Positional(nn.Module):
  """A user's model whose flag is named `training` and may be passed positionally."""

  @nn.compact
  def __call__(self, x, training=False):
    x = nn.relu(nn.Conv(16, (3, 3), name="body")(x))
    return nn.Dense(5, name="head")(jnp.mean(x, axis=(1, 2)))


class NoFlag(nn.Module):
  @nn.compact
  def __call__(self, x):
    return Positional(name="inner")(x)


def _grads(model, variables, *args, **kwargs):
  def loss(params):
    out, upd = model.apply({**variables, "params": params}, *args, mutable=["losses"], **kwargs)
    return jnp.sum(out**2) + lq.nn.sum_losses(upd), upd

  (_, upd), grads = jax.value_and_grad(loss, has_aux=True)(variables["params"])
  return grads, upd


@pytest.mark.parametrize("how", ["positional", "keyword", "quant_train"])
def test_soft_dkm_whatever_the_flag_is_called(how):
  rules = (lq.Rule("body", k=8, m=9, d=3), lq.Rule("head", k=4, m=4))
  model = lq.quantize_model(Positional(), rules, config=lq.QuantConfig(commitment=0.5))
  variables = model.init(jax.random.key(0), X)
  call = {"positional": ((X, True), {}), "keyword": ((X,), {"training": True})}
  args, kwargs = call.get(how, ((X,), {"quant_train": True}))
  grads, upd = _grads(model, variables, *args, **kwargs)
  assert float(jnp.max(jnp.abs(grads["body"]["z"]))) > 0
  assert float(jnp.max(jnp.abs(grads["body"]["codebook"]))) > 0
  assert float(lq.nn.sum_losses(upd)) > 0


def test_hard_codes_under_training_are_an_error_unless_asked_for():
  rules = (lq.Rule("body", k=8, m=9, d=3),)
  model = lq.quantize_model(NoFlag(), rules)
  variables = model.init(jax.random.key(0), X)
  with pytest.raises(ValueError, match="quant_train=True"):
    model.apply(variables, X, mutable=["losses"])
  with pytest.raises(ValueError, match="gradients are taken"):
    jax.grad(lambda p: jnp.sum(model.apply({**variables, "params": p}, X)))(variables["params"])
  _, upd = _grads(model, variables, X, quant_train=False)  # hard codes on purpose: allowed
  assert float(lq.nn.sum_losses(upd)) == 0.0
  assert model.apply(variables, X).shape == (2, 5)  # plain evaluation


def test_stage_checks_name_the_conversion():
  float_vars = PlainNet().init(jax.random.key(0), X)
  plan = lq.nn.plan_model(PlainNet(), RULES, X)
  with pytest.raises(StageError, match="float-mode.*float_to_lowrank, then"):
    lq.quantize_model(PlainNet(), RULES).apply(float_vars, X)
  with pytest.raises(
    StageError, match="got float-mode.*run lq.convert.float_to_lowrank on them first"
  ):
    convert.lowrank_to_quantize(float_vars, RULES, key=jax.random.key(0))
  lowrank = convert.float_to_lowrank(float_vars, RULES, plan=plan)
  assert convert.mode_of(lowrank) == "lowrank"
  with pytest.raises(StageError, match="got lowrank-mode"):
    convert.float_to_lowrank(lowrank, RULES)
  with pytest.raises(StageError, match="got lowrank-mode.*run lq.convert.lowrank_to_quantize"):
    convert.quantize_to_frozen(lowrank)
  with pytest.raises(StageError, match="layer 'body' holds lowrank-mode"):
    lq.quantize_model(PlainNet(), RULES, "frozen").apply(lowrank, X)
  with pytest.raises(ValueError, match="float-mode ones"):
    lq.export(float_vars, RULES, "unused")


def test_a_single_rule_is_accepted_where_a_tuple_is_expected():
  rule = lq.Rule("body", k=8, m=8, d=2)
  float_vars = PlainNet().init(jax.random.key(0), X)
  lowrank = convert.float_to_lowrank(float_vars, rule)
  assert set(lowrank["params"]["body"]) == {"z", "projection", "bias"}
  out = lq.quantize_model(PlainNet(), rule, "lowrank").apply(lowrank, X)
  assert out.shape == (2, 5)
  assert lq.size_report(float_vars, rule).layers[0].path == "body"
