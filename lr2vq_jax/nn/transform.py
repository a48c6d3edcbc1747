"""Quantize an existing linen model by rules on module paths, without editing its source.

`quantize_model(model, rules, mode)` wraps `model`; inside the wrapper every plain
`flax.linen.Conv`, `Dense` and `DenseGeneral` call is intercepted (`nn.intercept_methods`) and
re-run as the matching `lr2vq_jax.nn` layer bound to the *same scope*, so the variable tree keeps
the original model's paths: only the kernels of matched layers become z/projection/codebook.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lr2vq_jax.core.accounting import describe_table
from lr2vq_jax.core.mode import Mode, as_mode, deprecated_stage, renamed_stage
from lr2vq_jax.core.rules import LayerPlan, Rule, as_rules, plan_layer, resolve
from lr2vq_jax.nn import layers
from lr2vq_jax.nn.kernel import LOSSES, QuantConfig

# Call arguments that name the training mode in models people write, and their sense.
TRAIN_FLAGS = {"train": True, "training": True, "is_training": True, "deterministic": False}

_REPLACEMENTS = {nn.Conv: layers.Conv, nn.Dense: layers.Dense, nn.DenseGeneral: layers.DenseGeneral}


def module_path(mdl: nn.Module) -> str:
  """The module path rules are matched against: scope names joined by '/'."""
  return "/".join(str(p) for p in mdl.path)


def _constructor_fields(mdl: nn.Module) -> dict[str, Any]:
  return {
    f.name: getattr(mdl, f.name)
    for f in dataclasses.fields(type(mdl))
    if f.init and f.name not in ("parent", "name")
  }


def _make_interceptor(rules: Sequence[Rule], mode: Mode, train: bool, config: QuantConfig):
  def interceptor(next_fun, args, kwargs, context):
    mdl = context.module
    replacement = _REPLACEMENTS.get(type(mdl))
    if replacement is None or context.method_name != "__call__":
      return next_fun(*args, **kwargs)
    rule = resolve(rules, module_path(mdl))
    if rule is None or rule.skip:
      return next_fun(*args, **kwargs)
    quantized = replacement(
      **_constructor_fields(mdl), rule=rule, mode=mode, train=train, quant=config, parent=None
    )
    return quantized.clone(parent=mdl.scope)(*args, **kwargs)

  return interceptor


class QuantizedModel(nn.Module):
  """`model` with LR²VQ kernels where `rules` say; same variable paths as `model`.

  The quantize mode runs soft DKM (training) or hard codes (evaluation, what export ships): which
  one is `quant_train=` when given (the explicit way, whatever the model calls its flag), else
  the wrapped model's own flag found by name in its call, positional or keyword (or its default
  when the call leaves it out): `train`, `training`, `is_training` (or the negation
  `deterministic`). Without either it is hard codes,
  and a call that makes `losses` mutable or takes gradients then raises instead of silently
  training nothing.
  """

  model: nn.Module
  rules: tuple[Rule, ...]
  mode: Mode | str = Mode.QUANTIZE
  config: QuantConfig = QuantConfig()

  @property
  def stage(self) -> Mode:
    """Deprecated: the model's `mode`."""
    return deprecated_stage(self)

  def setup(self):
    as_mode(self.mode)
    nn.share_scope(self, self.model)

  def __call__(self, *args, quant_train: bool | None = None, **kwargs):
    mode = as_mode(self.mode)
    if mode == Mode.FLOAT:
      return self.model(*args, **kwargs)
    train = quant_train
    if train is None:
      train = model_train_flag(self.model, args, kwargs)
    if train is None:
      train = False
      self._check_hard_is_meant(args)
    interceptor = _make_interceptor(self.rules, mode, bool(train), self.config)
    with nn.intercept_methods(interceptor):
      return self.model(*args, **kwargs)

  def _check_hard_is_meant(self, args: tuple) -> None:
    """Hard codes where training is evident (`losses` mutable, gradients taken) is an error."""
    if self.mode != Mode.QUANTIZE or self.is_initializing():
      return
    if self.is_mutable_collection(LOSSES):
      why = "'losses' is mutable"
    elif _under_grad(args, self.variables.get("params", {})):
      why = "gradients are taken"
    else:
      return
    raise ValueError(
      f"quantize_model: {type(self.model).__name__}'s call has no train/training/deterministic "
      f"argument, so the quantize mode would run hard codes (no gradient reaches z or the "
      f"codebook) although {why}: pass quant_train=True to apply() for soft-DKM training "
      "(quant_train=False: hard codes on purpose)"
    )


def sum_losses(updates: Any) -> jax.Array:
  """The sum of every term sown into the `losses` collection (e.g. β·commitment) of the mutable
  collections an `apply(..., mutable=[..., "losses"])` returned; 0.0 when there are none."""
  leaves = jax.tree.leaves(dict(updates).get(LOSSES, {}))
  return sum((jnp.sum(x).astype(jnp.float32) for x in leaves), jnp.zeros((), jnp.float32))


def model_train_flag(model: nn.Module, args: tuple, kwargs: dict) -> bool | None:
  """The training mode `model`'s call was given (positional or keyword), or None if it has no
  argument named in TRAIN_FLAGS or the call leaves it at its default None."""
  try:
    bound = inspect.signature(type(model).__call__).bind(model, *args, **kwargs)
  except TypeError:
    return None
  bound.apply_defaults()
  for name, sense in TRAIN_FLAGS.items():
    value = bound.arguments.get(name)
    if name in bound.arguments and value is not None:
      return bool(value) == sense
  return None


# Tracer types of forward/reverse differentiation (by name: their home module is private).
_GRAD_TRACERS = ("JVPTracer", "LinearizeTracer")


def _under_grad(*trees) -> bool:
  """True when params or inputs are being differentiated here (`jax.grad`/`value_and_grad`
  around the apply; a `jit` between them hides it, `losses` being mutable still shows)."""
  return any(type(x).__name__ in _GRAD_TRACERS for x in jax.tree.leaves(trees))


def quantize_model(
  model: nn.Module,
  rules: Sequence[Rule],
  mode: Mode | str = Mode.QUANTIZE,
  config: QuantConfig | None = None,
  *,
  stage: Mode | str | None = None,
) -> QuantizedModel:
  """Returns `model` with its layers in `mode` by `rules` (first match wins on module paths).

  `rules` is a sequence of `Rule`s or a single one. A model with an `lr2vq_quantize` method (an
  NNX model seen through `lq.nnx.LinenView`) quantizes itself. `stage=` is the deprecated name
  of `mode=`.
  """
  mode = as_mode(renamed_stage(mode, stage, Mode.QUANTIZE, "quantize_model"))
  if hasattr(model, "lr2vq_quantize"):
    return model.lr2vq_quantize(as_rules(rules), mode, config)
  return QuantizedModel(model, as_rules(rules), mode, config or QuantConfig())


def _trace_layers(model: nn.Module, rules: Sequence[Rule], *args, **kwargs) -> list[tuple]:
  """(path, rule or None, kernel shape, n_out_dims) of every Conv/Dense/DenseGeneral call in init.

  Abstract (`jax.eval_shape`): no weights are computed.
  """
  rules = as_rules(rules)
  found = []

  def record(next_fun, a, kw, context):
    out = next_fun(*a, **kw)
    mdl = context.module
    if type(mdl) in _REPLACEMENTS and context.method_name == "__call__":
      path = module_path(mdl)
      shape = tuple(mdl.get_variable("params", "kernel").shape)
      found.append((path, resolve(rules, path), shape, layers.n_out_dims(mdl)))
    return out

  with nn.intercept_methods(record):
    jax.eval_shape(lambda: model.init(jax.random.key(0), *args, **kwargs))
  unused = [r for r in rules if r not in {rule for _, rule, _, _ in found}]
  if unused:
    raise ValueError(f"rule {unused[0]!r} matches no layer; layers are: {[f[0] for f in found]}")
  return found


def plan_model(model: nn.Module, rules: Sequence[Rule], *args, **kwargs) -> dict[str, LayerPlan]:
  """Geometry of every layer the rules compress, found by tracing `model.init(*args, **kwargs)`.

  A rule that matches no layer is an error. A model with an `lr2vq_plan` method (an NNX model
  seen through `lq.nnx.LinenView`) plans itself, without inputs.
  """
  rules = as_rules(rules)
  if hasattr(model, "lr2vq_plan"):
    return model.lr2vq_plan(rules)
  return {
    path: plan_layer(path, shape, rule, rules.index(rule), n_out_dims=n_out)
    for path, rule, shape, n_out in _trace_layers(model, rules, *args, **kwargs)
    if rule is not None and not rule.skip
  }


def describe(model: nn.Module, rules: Rule | Sequence[Rule], *args, **kwargs) -> str:
  """A table of every linear layer: the rule it matched, n, k (requested→used where clamped), m,
  d̃, bits per code and bytes; notes on clamped or non-power-of-two k follow the table.

  Bytes are the PQF-convention payload of the layer: packed codes + fp16 k×m codebook, or the
  fp32 kernel for layers left float.
  """
  layers = [
    (
      path,
      rule,
      shape,
      None if rule is None or rule.skip else plan_layer(path, shape, rule, n_out_dims=n_out),
    )
    for path, rule, shape, n_out in _trace_layers(model, rules, *args, **kwargs)
  ]
  return describe_table(layers)
