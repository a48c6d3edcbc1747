"""Stage conversions as pure variables → variables functions.

`variables` is a flax variable dict ({"params", "batch_stats", "quant", ...}); only the layers the
rules select change, everything else passes through untouched, so the result plugs straight into
`quantize_model(model, rules, stage=...)`.

  float_to_lowrank     kernel → z, projection (truncated SVD)            (LR²VQ stage 2)
  lowrank_to_quantize  + codebook (k-means++ / Lloyd on Z), τ per layer  (LR²VQ stage 3)
  quantize_to_frozen   hard codes from the DKM-refined codebook          (export / PQ-style tuning)
  float_to_pq          k-means on raw subvectors, codes frozen           (PQ / BGD / PQF baseline)
  float_to_dkm         z = X, projection = I, codebook by k-means        (vanilla DKM, d̃ = m)

Each conversion checks the stage of what it is given (`StageError` naming the conversion to run
instead; nothing is returned unchanged by accident) and records the result-changing settings of
its `config` (projection mode, store, DKM iterations) in each layer's `quant` collection, where
evaluation and export read them (`lr2vq_jax.core.recorded`). The per-layer math is
`lr2vq_jax.core.stages`, shared with the NNX front end.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import traverse_util

from lr2vq_jax.core import kmeans as kmeans_lib
from lr2vq_jax.core import recorded, stages
from lr2vq_jax.core.kernel import QUANT, QuantConfig
from lr2vq_jax.core.recorded import StageError
from lr2vq_jax.core.rules import LayerPlan, Rule, as_rules, plan_layers, resolve, vanilla

Variables = Mapping[str, Any]
Plan = Mapping[str, LayerPlan]
Path = tuple[str, ...]


def stage_of(variables: Variables) -> str:
  """The stage of `variables`: "float", "lowrank", "quantize", "frozen", or "mixed"."""
  params = traverse_util.flatten_dict(dict(variables.get("params", {})))
  layers: dict[Path, set] = {}
  for k in params:
    layers.setdefault(k[:-1], set()).add(k[-1])
  stages = {recorded.layer_stage(leaves) for leaves in layers.values()} - {"float"}
  if len(stages) > 1:
    return "mixed"
  return stages.pop() if stages else "float"


def _expect(variables: Variables, wanted: str, conversion: str) -> None:
  """`StageError` unless `variables` are of stage `wanted`, naming what to run instead."""
  if "params" not in variables:
    raise StageError(f"{conversion}: expected a flax variables dict with 'params'")
  found = stage_of(variables)
  if found == wanted:
    return
  if found == "mixed":
    raise StageError(f"{conversion}: variables mix layers of several stages; expected {wanted}")
  how = recorded.CONVERSIONS.get((found, wanted))
  hint = f"; run {how} on them first" if how else ""
  raise StageError(
    f"{conversion}: got {found}-stage variables, it converts {wanted}-stage ones{hint}"
  )


def _split(variables: Variables):
  """Flat copies of the params and quant collections, plus the untouched rest."""
  params = traverse_util.flatten_dict(dict(variables["params"]))
  quant = traverse_util.flatten_dict(dict(variables.get(QUANT, {})))
  rest = {c: v for c, v in variables.items() if c not in ("params", QUANT)}
  return params, quant, rest


def _join(params, quant, rest) -> dict:
  out = dict(rest)
  out["params"] = traverse_util.unflatten_dict(params)
  if quant:
    out[QUANT] = traverse_util.unflatten_dict(quant)
  return out


def _shapes(quant: dict, key: Path, geo: LayerPlan) -> None:
  quant[key + ("shape",)] = jnp.asarray(geo.shape, jnp.int32)
  quant[key + ("view_shape",)] = jnp.asarray(geo.view_shape, jnp.int32)


def _layers_with(params: dict, leaf: str) -> list[Path]:
  return sorted({k[:-1] for k in params if k[-1] == leaf})


def _float_layers(variables: Variables, rules: Sequence[Rule], plan: Plan | None):
  """Flat params/quant/rest with the selected kernels removed, and (key, geometry, rows) per layer."""
  params, quant, rest = _split(variables)
  plan = plan if plan is not None else plan_layers(variables["params"], rules)
  missing = [p for p in plan if (tuple(p.split("/")) if p else ()) + ("kernel",) not in params]
  if missing:
    raise StageError(f"layer {missing[0]!r} of the plan has no float kernel in the variables")
  layers = []
  for path, geo in sorted(plan.items()):
    key = tuple(path.split("/")) if path else ()
    kernel = params.pop(key + ("kernel",))
    _shapes(quant, key, geo)
    layers.append((key, geo, geo.to_rows(jnp.asarray(kernel, jnp.float32))))
  return params, quant, rest, layers


def float_to_lowrank(
  variables: Variables,
  rules: Rule | Sequence[Rule],
  *,
  plan: Plan | None = None,
  config: QuantConfig | None = None,
) -> dict:
  """Replaces selected kernels by their rank-d̃ factors Z·P (truncated SVD, exact at d̃ = m);
  records `config.projection` (default "learned") for the low-rank and later stages."""
  _expect(variables, "float", "float_to_lowrank")
  config = config or QuantConfig()
  params, quant, rest, layers = _float_layers(variables, as_rules(rules), plan)
  for key, geo, rows in layers:
    params[key + ("z",)], params[key + ("projection",)] = stages.lowrank_layer(rows, geo.d)
    recorded.record(quant, key, config.settings("lowrank"))
  return _join(params, quant, rest)


def lowrank_to_quantize(
  variables: Variables,
  rules: Rule | Sequence[Rule],
  *,
  key: jax.Array,
  kmeans_iters: int = kmeans_lib.ITERS,
  tau_alpha: float | None = None,
  config: QuantConfig | None = None,
) -> dict:
  """Adds a k-means++/Lloyd codebook on Z and the DKM temperature τ to every low-rank layer.

  τ = α·(mean squared distance to the nearest centroid), α = `tau_alpha`, else
  `config.tau_alpha`; `config`'s store and DKM iterations are recorded (its projection must
  agree with the low-rank stage's).
  """
  _expect(variables, "lowrank", "lowrank_to_quantize")
  config = config or QuantConfig()
  tau_alpha = config.tau_alpha if tau_alpha is None else tau_alpha
  rules = as_rules(rules)
  params, quant, rest = _split(variables)
  for i, layer in enumerate(_layers_with(params, "z")):
    where = f"lowrank_to_quantize, layer {'/'.join(layer)!r}"
    layer_quant = {k[-1]: v for k, v in quant.items() if k[:-1] == layer}
    settings = recorded.resolve(layer_quant, config, "lowrank", where)
    recorded.record(quant, layer, {**config.settings("quantize"), **settings})
    rule = resolve(rules, "/".join(layer))
    if rule is None or rule.skip:
      raise ValueError(f"low-rank layer {'/'.join(layer)!r} matches no quantizing rule")
    params[layer + ("codebook",)], quant[layer + ("tau",)] = stages.quantize_layer(
      params[layer + ("z",)],
      rule.k,
      jax.random.fold_in(key, i),
      iters=kmeans_iters,
      tau_alpha=tau_alpha,
    )
  return _join(params, quant, rest)


def quantize_to_frozen(variables: Variables, config: QuantConfig | None = None) -> dict:
  """Fixes hard codes from the DKM-refined codebook, exactly as evaluation does; drops Z.

  The DKM iterations are the recorded ones (`config`, if given, must agree with them). One jitted
  computation for all layers: under a context mesh (`jax.set_mesh`) whose `config.shard_axis`
  has several devices, each layer's DKM splits the rows of Z over that axis, as in training.
  """
  _expect(variables, "quantize", "quantize_to_frozen")
  config = config or QuantConfig()
  params, quant, _ = _split(variables)
  layers = []
  for layer in _layers_with(params, "z"):
    where = f"quantize_to_frozen, layer {'/'.join(layer)!r}"
    layer_quant = {k[-1]: v for k, v in quant.items() if k[:-1] == layer}
    settings = recorded.resolve(layer_quant, config, "quantize", where)
    layers.append((layer, tuple(sorted(settings.items()))))
  return _frozen(dict(variables), tuple(layers), config.chunk_size, config.shard_axis)


@functools.partial(jax.jit, static_argnames=("layers", "chunk_size", "axis_name"))
def _frozen(variables: Variables, layers: tuple, chunk_size: int, axis_name) -> dict:
  """The numbers of `quantize_to_frozen`; `layers` holds (path, resolved settings) per layer.

  The recorded DKM iteration count stays a traced scalar, as in the quantize stage's own hard
  evaluation under `jit`, so both run the same computation.
  """
  params, quant, rest = _split(variables)
  for layer, items in layers:
    settings = dict(items)
    iters = quant.pop(layer + (recorded.KEYS["dkm_iters"],), settings["dkm_iters"])
    recorded.record(quant, layer, {n: settings[n] for n in recorded.STAGE_SETTINGS["frozen"]})
    params[layer + ("codebook",)], quant[layer + ("codes",)] = stages.freeze_layer(
      params.pop(layer + ("z",)),
      params[layer + ("codebook",)],
      quant.pop(layer + ("tau",)),
      dkm_iters=iters,
      chunk_size=chunk_size,
      axis_name=axis_name,
    )
  return _join(params, quant, rest)


def float_to_pq(
  variables: Variables,
  rules: Rule | Sequence[Rule],
  *,
  key: jax.Array,
  kmeans_iters: int = kmeans_lib.ITERS,
  plan: Plan | None = None,
  config: QuantConfig | None = None,
) -> dict:
  """Product quantization of the raw subvectors (d̃ = m): codebook k×m, projection I, codes fixed."""
  _expect(variables, "float", "float_to_pq")
  config = config or QuantConfig()
  params, quant, rest, layers = _float_layers(variables, vanilla(rules), plan)
  for i, (layer, geo, rows) in enumerate(layers):
    recorded.record(quant, layer, config.settings("frozen"))
    codebook, projection, codes = stages.pq_layer(
      rows, geo.k, jax.random.fold_in(key, i), iters=kmeans_iters
    )
    params[layer + ("codebook",)], params[layer + ("projection",)] = codebook, projection
    quant[layer + ("codes",)] = codes
  return _join(params, quant, rest)


def float_to_dkm(
  variables: Variables,
  rules: Rule | Sequence[Rule],
  *,
  key: jax.Array,
  kmeans_iters: int = kmeans_lib.ITERS,
  tau_alpha: float | None = None,
  plan: Plan | None = None,
  config: QuantConfig | None = None,
) -> dict:
  """Vanilla DKM: quantize stage with Z = X and P = I (d̃ = m, no low-rank representation)."""
  _expect(variables, "float", "float_to_dkm")
  config = config or QuantConfig()
  params, quant, rest, layers = _float_layers(variables, vanilla(rules), plan)
  for layer, _, rows in layers:
    params[layer + ("z",)], params[layer + ("projection",)] = stages.dkm_layer(rows)
    recorded.record(quant, layer, config.settings("lowrank"))
  lowrank_vars = _join(params, quant, rest)
  return lowrank_to_quantize(
    lowrank_vars,
    vanilla(rules),
    key=key,
    kmeans_iters=kmeans_iters,
    tau_alpha=tau_alpha,
    config=config,
  )
