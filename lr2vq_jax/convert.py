"""Mode conversions as pure variables → variables functions.

`variables` is a flax variable dict ({"params", "batch_stats", "quant", ...}); only the layers the
rules select change, everything else passes through untouched, so the result plugs straight into
`quantize_model(model, rules, mode=...)`.

  float_to_lowrank     kernel → z, projection (truncated SVD)            (LR²VQ step 2)
  lowrank_to_quantize  + codebook (k-means++ / Lloyd on Z), τ per layer  (LR²VQ step 3)
  quantize_to_frozen   hard codes from the DKM-refined codebook          (export / PQ-style tuning)
  float_to_pq          k-means on raw subvectors, codes frozen           (PQ / BGD / PQF baseline)
  float_to_dkm         z = X, projection = I, codebook by k-means        (vanilla DKM, d̃ = m)

Each conversion checks the mode of what it is given (`ModeError` naming the conversion to run
instead; nothing is returned unchanged by accident) and records the result-changing settings of
its `config` (projection mode, store, DKM iterations) in each layer's `quant` collection, where
evaluation and export read them (`lr2vq_jax.core.recorded`). The per-layer math is
`lr2vq_jax.core.conversions`, shared with the NNX front end.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import traverse_util

from lr2vq_jax.core import conversions, recorded
from lr2vq_jax.core import kmeans as kmeans_lib
from lr2vq_jax.core.kernel import DKM_LISTS, QUANT, QuantConfig, warm_start
from lr2vq_jax.core.mode import Mode
from lr2vq_jax.core.recorded import ModeError
from lr2vq_jax.core.rules import LayerPlan, Rule, as_rules, plan_layers, resolve, vanilla

Variables = Mapping[str, Any]
Plan = Mapping[str, LayerPlan]
Path = tuple[str, ...]


def mode_of(variables: Variables) -> Mode | str:
  """The mode of `variables`' quantized layers: a `Mode` ("float" when none), or "mixed"."""
  params = traverse_util.flatten_dict(dict(variables.get("params", {})))
  layers: dict[Path, set] = {}
  for k in params:
    layers.setdefault(k[:-1], set()).add(k[-1])
  modes = {recorded.layer_mode(leaves) for leaves in layers.values()} - {Mode.FLOAT}
  if len(modes) > 1:
    return "mixed"
  return modes.pop() if modes else Mode.FLOAT


def stage_of(variables: Variables) -> Mode | str:
  """Deprecated name of `mode_of`."""
  warnings.warn("lq.convert.stage_of is deprecated, use mode_of", DeprecationWarning, stacklevel=2)
  return mode_of(variables)


def _expect(variables: Variables, wanted: Mode, conversion: str) -> None:
  """`ModeError` unless `variables` are in mode `wanted`, naming what to run instead."""
  if "params" not in variables:
    raise ModeError(f"{conversion}: expected a flax variables dict with 'params'")
  found = mode_of(variables)
  if found == wanted:
    return
  if found == "mixed":
    raise ModeError(f"{conversion}: variables mix layers of several modes; expected {wanted}")
  how = recorded.CONVERSIONS.get((found, wanted))
  hint = f"; run {how} on them first" if how else ""
  raise ModeError(f"{conversion}: got {found}-mode variables, it converts {wanted}-mode ones{hint}")


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
    raise ModeError(f"layer {missing[0]!r} of the plan has no float kernel in the variables")
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
  records `config.projection` (default "learned") for the low-rank and later modes."""
  _expect(variables, Mode.FLOAT, "float_to_lowrank")
  config = config or QuantConfig()
  params, quant, rest, layers = _float_layers(variables, as_rules(rules), plan)
  for key, geo, rows in layers:
    params[key + ("z",)], params[key + ("projection",)] = conversions.lowrank_layer(rows, geo.d)
    recorded.record(quant, key, config.settings(Mode.LOWRANK))
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
  agree with the low-rank mode's).
  """
  _expect(variables, Mode.LOWRANK, "lowrank_to_quantize")
  config = config or QuantConfig()
  tau_alpha = config.tau_alpha if tau_alpha is None else tau_alpha
  rules = as_rules(rules)
  params, quant, rest = _split(variables)
  for i, layer in enumerate(_layers_with(params, "z")):
    where = f"lowrank_to_quantize, layer {'/'.join(layer)!r}"
    layer_quant = {k[-1]: v for k, v in quant.items() if k[:-1] == layer}
    settings = recorded.resolve(layer_quant, config, Mode.LOWRANK, where)
    recorded.record(quant, layer, {**config.settings(Mode.QUANTIZE), **settings})
    rule = resolve(rules, "/".join(layer))
    if rule is None or rule.skip:
      raise ValueError(f"low-rank layer {'/'.join(layer)!r} matches no quantizing rule")
    params[layer + ("codebook",)], quant[layer + ("tau",)] = conversions.quantize_layer(
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
  _expect(variables, Mode.QUANTIZE, "quantize_to_frozen")
  config = config or QuantConfig()
  params, quant, _ = _split(variables)
  layers = []
  for layer in _layers_with(params, "z"):
    where = f"quantize_to_frozen, layer {'/'.join(layer)!r}"
    layer_quant = {k[-1]: v for k, v in quant.items() if k[:-1] == layer}
    settings = recorded.resolve(layer_quant, config, Mode.QUANTIZE, where)
    layers.append((layer, tuple(sorted(settings.items()))))
  return _frozen(dict(variables), tuple(layers), config.chunk_size, config.shard_axis)


@functools.partial(jax.jit, static_argnames=("layers", "chunk_size", "axis_name"))
def _frozen(variables: Variables, layers: tuple, chunk_size: int, axis_name) -> dict:
  """The numbers of `quantize_to_frozen`; `layers` holds (path, resolved settings) per layer.

  The recorded DKM iteration count stays a traced scalar, as in the quantize mode's own hard
  evaluation under `jit`, so both run the same computation.
  """
  params, quant, rest = _split(variables)
  # training DKM's carried state: a warm offset moves the codebook the codes are made from (as in
  # the quantize mode's evaluation); the lists have nothing left to rank in frozen mode
  carried = traverse_util.flatten_dict(dict(rest.pop(DKM_LISTS, {})))
  for layer, items in layers:
    settings = dict(items)
    iters = quant.pop(layer + (recorded.KEYS["dkm_iters"],), settings["dkm_iters"])
    recorded.record(quant, layer, {n: settings[n] for n in recorded.MODE_SETTINGS[Mode.FROZEN]})
    params[layer + ("codebook",)], quant[layer + ("codes",)] = conversions.freeze_layer(
      params.pop(layer + ("z",)),
      warm_start(params[layer + ("codebook",)], carried.get(layer + ("offset",))),
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
  _expect(variables, Mode.FLOAT, "float_to_pq")
  config = config or QuantConfig()
  params, quant, rest, layers = _float_layers(variables, vanilla(rules), plan)
  for i, (layer, geo, rows) in enumerate(layers):
    recorded.record(quant, layer, config.settings(Mode.FROZEN))
    codebook, projection, codes = conversions.pq_layer(
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
  """Vanilla DKM: quantize mode with Z = X and P = I (d̃ = m, no low-rank representation)."""
  _expect(variables, Mode.FLOAT, "float_to_dkm")
  config = config or QuantConfig()
  params, quant, rest, layers = _float_layers(variables, vanilla(rules), plan)
  for layer, _, rows in layers:
    params[layer + ("z",)], params[layer + ("projection",)] = conversions.dkm_layer(rows)
    recorded.record(quant, layer, config.settings(Mode.LOWRANK))
  lowrank_vars = _join(params, quant, rest)
  return lowrank_to_quantize(
    lowrank_vars,
    vanilla(rules),
    key=key,
    kmeans_iters=kmeans_iters,
    tau_alpha=tau_alpha,
    config=config,
  )
