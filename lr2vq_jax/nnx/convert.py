"""Stage conversions of an NNX model, in place: matched layers get a `QuantizedKernel`.

  method "lr2vq"  float → lowrank (SVD) → quantize (k-means++/Lloyd on Z, τ) → frozen (hard codes)
  method "pq"     float → frozen by k-means on the raw subvectors (d̃ = m; PQ / BGD baseline)
  method "dkm"    float → quantize with Z = X, P = I (d̃ = m; vanilla DKM), → frozen

Each step is the per-layer function of `lr2vq_jax.core.stages` that `lr2vq_jax.convert` runs on
linen variables, with the same keys (`fold_in(key, i)`, layers in sorted path order), so the same
weights give the same numbers on both front ends. Convert eagerly (or inside `nnx.eval_shape` /
a jitted function that returns the state): `jax.jit` drops in-place surgery on its inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from lr2vq_jax.core import kmeans as kmeans_lib
from lr2vq_jax.core import recorded, stages
from lr2vq_jax.core.kernel import STAGES, QuantConfig
from lr2vq_jax.core.recorded import StageError
from lr2vq_jax.core.rules import LayerPlan, Rule, as_rules, vanilla
from lr2vq_jax.nnx.kernel import QuantizedKernel
from lr2vq_jax.nnx.transform import layer_plan, matched_layers

METHODS = ("lr2vq", "pq", "dkm")
_ORDER = {s: i for i, s in enumerate(STAGES)}


class _Layer:
  """One matched layer's conversion state: stage, arrays and recorded settings (encoded)."""

  def __init__(self, path: str, layer: nnx.Module, plan: LayerPlan):
    self.path, self.layer, self.plan = path, layer, plan
    kernel = layer.kernel
    if isinstance(kernel, QuantizedKernel):
      self.stage, self.dtype, self.arrays = kernel.stage, kernel.param_dtype, kernel.arrays()
      self.quant = {
        recorded.KEYS[n]: getattr(kernel, recorded.KEYS[n])[...]
        for n in recorded.STAGE_SETTINGS[kernel.stage]
      }
    else:
      value = kernel[...]
      self.stage, self.dtype, self.quant = "float", value.dtype, {}
      self.arrays = {"rows": plan.to_rows(jnp.asarray(value, jnp.float32))}

  @property
  def key(self) -> tuple[str, ...]:
    return tuple(self.path.split("/"))

  def settings(self, config: QuantConfig | None, conversion: str) -> dict:
    where = f"{conversion}, layer {self.path!r}"
    return recorded.resolve(self.quant, config, self.stage, where)

  def set(self, stage: str, arrays: dict, settings: dict) -> None:
    self.stage, self.arrays = stage, arrays
    self.quant = {recorded.KEYS[n]: recorded.encode(n, v) for n, v in settings.items()}


def _need_key(key, what: str) -> jax.Array:
  if key is None:
    raise ValueError(f"quantize_model: {what} needs key= (a jax.random key)")
  return key


def _to_lowrank(layers: list[_Layer], method: str, config: QuantConfig) -> None:
  for layer in layers:
    rows = layer.arrays["rows"]
    if method == "dkm":
      z, p = stages.dkm_layer(rows)
    else:
      z, p = stages.lowrank_layer(rows, layer.plan.d)
    layer.set("lowrank", {"z": z, "projection": p}, config.settings("lowrank"))


def _to_quantize(layers: list[_Layer], key, config: QuantConfig, iters: int, alpha) -> None:
  for i, layer in enumerate(sorted(layers, key=lambda entry: entry.key)):
    resolved = layer.settings(config, "quantize_model (lowrank → quantize)")
    codebook, tau = stages.quantize_layer(
      layer.arrays["z"], layer.plan.k, jax.random.fold_in(key, i), iters=iters, tau_alpha=alpha
    )
    arrays = {**layer.arrays, "codebook": codebook, "tau": tau}
    layer.set("quantize", arrays, {**config.settings("quantize"), **resolved})


def _to_frozen(layers: list[_Layer], config: QuantConfig, explicit: QuantConfig | None) -> None:
  for layer in layers:
    settings = layer.settings(explicit, "quantize_model (quantize → frozen)")
    codebook, codes = stages.freeze_layer(
      layer.arrays["z"],
      layer.arrays["codebook"],
      layer.arrays["tau"],
      dkm_iters=settings["dkm_iters"],
      chunk_size=config.chunk_size,
    )
    arrays = {"projection": layer.arrays["projection"], "codebook": codebook, "codes": codes}
    layer.set("frozen", arrays, {n: settings[n] for n in recorded.STAGE_SETTINGS["frozen"]})


def _to_pq(layers: list[_Layer], key, config: QuantConfig, iters: int) -> None:
  for i, layer in enumerate(sorted(layers, key=lambda entry: entry.path)):
    codebook, projection, codes = stages.pq_layer(
      layer.arrays["rows"], layer.plan.k, jax.random.fold_in(key, i), iters=iters
    )
    arrays = {"codebook": codebook, "projection": projection, "codes": codes}
    layer.set("frozen", arrays, config.settings("frozen"))


def quantize_model(
  model: nnx.Module,
  rules: Rule | Sequence[Rule],
  stage: str = "quantize",
  *,
  key: jax.Array | None = None,
  config: QuantConfig | None = None,
  method: str = "lr2vq",
  kmeans_iters: int = kmeans_lib.ITERS,
  tau_alpha: float | None = None,
  deterministic: bool = False,
) -> nnx.Module:
  """Moves every layer the rules select to `stage`, in place, and returns `model`.

  A float kernel goes float → lowrank → quantize → frozen as far as `stage`; a `QuantizedKernel`
  at an earlier stage moves forward from where it is (stages never move back: `dequantize`).
  `key` seeds k-means (quantize step and PQ). `method` "pq" / "dkm" are the baselines (d̃ = m).
  New kernels start in NNX's training mode (`deterministic=False`: soft DKM); `model.eval()`
  selects the hard codes. The float weights are replaced: keep a copy with
  `nnx.clone(model, arrays=True)` first if you need it.
  """
  if stage not in STAGES[1:]:
    raise ValueError(f"stage={stage!r}: expected one of {STAGES[1:]} (dequantize goes to float)")
  if method not in METHODS:
    raise ValueError(f"method={method!r}: expected one of {METHODS}")
  if method == "pq" and stage != "frozen" or method == "dkm" and stage == "lowrank":
    raise ValueError(f"method={method!r} has no {stage} stage")
  explicit, config = config, config or QuantConfig()
  alpha = config.tau_alpha if tau_alpha is None else tau_alpha
  rules = as_rules(rules) if method == "lr2vq" else vanilla(rules)
  layers = [
    _Layer(path, layer, layer_plan(path, layer, rule, rules))
    for path, layer, rule in matched_layers(model, rules)
    if rule is not None and not rule.skip
  ]
  for layer in layers:
    if _ORDER[layer.stage] > _ORDER[stage]:
      raise recorded.stage_error(layer.path, layer.stage, stage, "quantize_model")
    if method != "lr2vq" and layer.stage != "float":
      raise StageError(f"quantize_model(method={method!r}): layer {layer.path!r} is not float")
  at = lambda s: [entry for entry in layers if entry.stage == s]  # noqa: E731
  if method == "pq":
    _to_pq(at("float"), _need_key(key, "PQ"), config, kmeans_iters)
  else:
    _to_lowrank(at("float"), method, config)
  if stage in ("quantize", "frozen") and at("lowrank"):
    _to_quantize(at("lowrank"), _need_key(key, "k-means"), config, kmeans_iters, alpha)
  if stage == "frozen":
    _to_frozen(at("quantize"), config, explicit)
  for entry in layers:
    settings = {n: recorded.decode(n, v) for n, v in _decoded_keys(entry.quant).items()}
    entry.layer.kernel = QuantizedKernel(
      entry.plan,
      entry.stage,
      entry.arrays,
      settings,
      config=config,
      param_dtype=entry.dtype,
      deterministic=deterministic,
    )
  return model


def _decoded_keys(quant: dict[str, Any]) -> dict[str, Any]:
  names = {key: name for name, key in recorded.KEYS.items()}
  return {names[key]: value for key, value in quant.items()}


def dequantize(model: nnx.Module) -> nnx.Module:
  """Every `QuantizedKernel` back to a float `nnx.Param` holding its hard-code kernel (what an
  export decodes to), in place; returns `model` (e.g. for BatchNorm re-estimation)."""
  for _, module in list(nnx.iter_modules(model)):
    kernel = getattr(module, "kernel", None)
    if isinstance(kernel, QuantizedKernel):
      kernel.deterministic = True
      module.kernel = nnx.Param(kernel.materialize())
  return model
