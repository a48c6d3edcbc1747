"""Quantize an existing linen model by rules on module paths, without editing its source.

`quantize_model(model, rules, stage)` wraps `model`; inside the wrapper every plain
`flax.linen.Conv`, `Dense` and `DenseGeneral` call is intercepted (`nn.intercept_methods`) and
re-run as the matching `lr2vq_jax.nn` layer bound to the *same scope*, so the variable tree keeps
the original model's paths: only the kernels of matched layers become z/projection/codebook.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax

from lr2vq_jax.core.rules import LayerPlan, Rule, plan_layer, resolve
from lr2vq_jax.nn import layers
from lr2vq_jax.nn.kernel import STAGES, QuantConfig

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


def _make_interceptor(rules: Sequence[Rule], stage: str, train: bool, config: QuantConfig):
  def interceptor(next_fun, args, kwargs, context):
    mdl = context.module
    replacement = _REPLACEMENTS.get(type(mdl))
    if replacement is None or context.method_name != "__call__":
      return next_fun(*args, **kwargs)
    rule = resolve(rules, module_path(mdl))
    if rule is None or rule.skip:
      return next_fun(*args, **kwargs)
    quantized = replacement(
      **_constructor_fields(mdl), rule=rule, stage=stage, train=train, quant=config, parent=None
    )
    return quantized.clone(parent=mdl.scope)(*args, **kwargs)

  return interceptor


class QuantizedModel(nn.Module):
  """`model` with LR²VQ kernels where `rules` say; same variable paths as `model`.

  The quantize stage runs soft DKM when training and hard codes otherwise: the mode is
  `quant_train` when given, else the wrapped call's `train=` keyword, else `not deterministic`.
  """

  model: nn.Module
  rules: tuple[Rule, ...]
  stage: str = "quantize"
  config: QuantConfig = QuantConfig()

  def setup(self):
    if self.stage not in STAGES:
      raise ValueError(f"stage={self.stage!r}: expected one of {STAGES}")
    nn.share_scope(self, self.model)

  def __call__(self, *args, quant_train: bool | None = None, **kwargs):
    if self.stage == "float":
      return self.model(*args, **kwargs)
    train = quant_train
    if train is None:
      train = bool(kwargs["train"]) if "train" in kwargs else not kwargs.get("deterministic", True)
    interceptor = _make_interceptor(self.rules, self.stage, train, self.config)
    with nn.intercept_methods(interceptor):
      return self.model(*args, **kwargs)


def quantize_model(
  model: nn.Module,
  rules: Sequence[Rule],
  stage: str = "quantize",
  config: QuantConfig | None = None,
) -> QuantizedModel:
  """Returns `model` transformed to `stage` by `rules` (first match wins on module paths)."""
  return QuantizedModel(model, tuple(rules), stage, config or QuantConfig())


def _trace_layers(model: nn.Module, rules: Sequence[Rule], *args, **kwargs) -> list[tuple]:
  """(path, rule or None, kernel shape, n_out_dims) of every Conv/Dense/DenseGeneral call in init.

  Abstract (`jax.eval_shape`): no weights are computed.
  """
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

  A rule that matches no layer is an error.
  """
  return {
    path: plan_layer(path, shape, rule, list(rules).index(rule), n_out_dims=n_out)
    for path, rule, shape, n_out in _trace_layers(model, rules, *args, **kwargs)
    if rule is not None and not rule.skip
  }


def describe(model: nn.Module, rules: Sequence[Rule], *args, **kwargs) -> str:
  """A table of every linear layer: the rule it matched, n, k (clamped), m, d̃, code bits, bytes.

  Bytes are the PQF-convention payload of the layer: packed codes + fp16 k×m codebook, or the
  fp32 kernel for layers left float.
  """
  rows = [("layer", "rule", "shape", "n", "k", "m", "d", "bits", "bytes")]
  total = 0
  for path, rule, shape, n_out in _trace_layers(model, rules, *args, **kwargs):
    if rule is None or rule.skip:
      nbytes = 4 * math.prod(shape)
      label = "float" if rule is None else f"{rule.pattern} (skip)"
      rows.append((path, label, str(shape), "-", "-", "-", "-", "-", str(nbytes)))
    else:
      plan = plan_layer(path, shape, rule, n_out_dims=n_out)
      nbytes = -(-plan.code_bits // 8) + 2 * plan.k * plan.m
      rows.append(
        (
          path,
          rule.pattern,
          str(shape),
          str(plan.n),
          str(plan.k),
          str(plan.m),
          str(plan.d),
          str(plan.code_bits),
          str(nbytes),
        )
      )
    total += nbytes
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
  lines.insert(1, "-" * len(lines[0]))
  lines.append(f"total {total} bytes (kernels only; biases and norms not included)")
  return "\n".join(lines)
