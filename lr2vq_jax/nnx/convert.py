"""Mode conversions of an NNX model, in place: matched layers get a `QuantizedKernel`.

  method "lr2vq"  float → lowrank (SVD) → quantize (k-means++/Lloyd on Z, τ) → frozen (hard codes)
  method "pq"     float → frozen by k-means on the raw subvectors (d̃ = m; PQ / BGD baseline)
  method "dkm"    float → quantize with Z = X, P = I (d̃ = m; vanilla DKM), → frozen

Each step is the per-layer function of `lr2vq_jax.core.conversions` that `lr2vq_jax.convert` runs on
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

from lr2vq_jax.core import conversions, recorded
from lr2vq_jax.core import kmeans as kmeans_lib
from lr2vq_jax.core.kernel import QuantConfig
from lr2vq_jax.core.mode import QUANTIZED, Mode, as_mode, names, renamed_stage
from lr2vq_jax.core.recorded import ModeError
from lr2vq_jax.core.rules import LayerPlan, Rule, as_rules, vanilla
from lr2vq_jax.nnx.kernel import QuantizedKernel
from lr2vq_jax.nnx.transform import layer_plan, matched_layers

METHODS = ("lr2vq", "pq", "dkm")


class _Layer:
  """One matched layer's conversion state: mode, arrays and recorded settings (encoded)."""

  def __init__(self, path: str, layer: nnx.Module, plan: LayerPlan):
    self.path, self.layer, self.plan = path, layer, plan
    kernel = layer.kernel
    if isinstance(kernel, QuantizedKernel):
      self.mode, self.dtype, self.arrays = kernel.mode, kernel.param_dtype, kernel.arrays()
      self.quant = {
        recorded.KEYS[n]: getattr(kernel, recorded.KEYS[n])[...]
        for n in recorded.MODE_SETTINGS[kernel.mode]
      }
    else:
      value = kernel[...]
      self.mode, self.dtype, self.quant = Mode.FLOAT, value.dtype, {}
      self.arrays = {"rows": plan.to_rows(jnp.asarray(value, jnp.float32))}

  @property
  def key(self) -> tuple[str, ...]:
    return tuple(self.path.split("/"))

  def settings(self, config: QuantConfig | None, conversion: str) -> dict:
    where = f"{conversion}, layer {self.path!r}"
    return recorded.resolve(self.quant, config, self.mode, where)

  def set(self, mode: Mode, arrays: dict, settings: dict) -> None:
    self.mode, self.arrays = mode, arrays
    self.quant = {recorded.KEYS[n]: recorded.encode(n, v) for n, v in settings.items()}


def _need_key(key, what: str) -> jax.Array:
  if key is None:
    raise ValueError(f"quantize_model: {what} needs key= (a jax.random key)")
  return key


def _to_lowrank(layers: list[_Layer], method: str, config: QuantConfig) -> None:
  for layer in layers:
    rows = layer.arrays["rows"]
    if method == "dkm":
      z, p = conversions.dkm_layer(rows)
    else:
      z, p = conversions.lowrank_layer(rows, layer.plan.d)
    layer.set(Mode.LOWRANK, {"z": z, "projection": p}, config.settings(Mode.LOWRANK))


def _to_quantize(layers: list[_Layer], key, config: QuantConfig, iters: int, alpha) -> None:
  for i, layer in enumerate(sorted(layers, key=lambda entry: entry.key)):
    resolved = layer.settings(config, "quantize_model (lowrank → quantize)")
    codebook, tau = conversions.quantize_layer(
      layer.arrays["z"], layer.plan.k, jax.random.fold_in(key, i), iters=iters, tau_alpha=alpha
    )
    arrays = {**layer.arrays, "codebook": codebook, "tau": tau}
    layer.set(Mode.QUANTIZE, arrays, {**config.settings(Mode.QUANTIZE), **resolved})


def _to_frozen(layers: list[_Layer], config: QuantConfig, explicit: QuantConfig | None) -> None:
  for layer in layers:
    settings = layer.settings(explicit, "quantize_model (quantize → frozen)")
    codebook, codes = conversions.freeze_layer(
      layer.arrays["z"],
      layer.arrays["codebook"],
      layer.arrays["tau"],
      dkm_iters=settings["dkm_iters"],
      chunk_size=config.chunk_size,
    )
    arrays = {"projection": layer.arrays["projection"], "codebook": codebook, "codes": codes}
    layer.set(Mode.FROZEN, arrays, {n: settings[n] for n in recorded.MODE_SETTINGS[Mode.FROZEN]})


def _to_pq(layers: list[_Layer], key, config: QuantConfig, iters: int) -> None:
  for i, layer in enumerate(sorted(layers, key=lambda entry: entry.path)):
    codebook, projection, codes = conversions.pq_layer(
      layer.arrays["rows"], layer.plan.k, jax.random.fold_in(key, i), iters=iters
    )
    arrays = {"codebook": codebook, "projection": projection, "codes": codes}
    layer.set(Mode.FROZEN, arrays, config.settings(Mode.FROZEN))


def quantize_model(
  model: nnx.Module,
  rules: Rule | Sequence[Rule],
  mode: Mode | str = Mode.QUANTIZE,
  *,
  stage: Mode | str | None = None,
  key: jax.Array | None = None,
  config: QuantConfig | None = None,
  method: str = "lr2vq",
  kmeans_iters: int = kmeans_lib.ITERS,
  tau_alpha: float | None = None,
  deterministic: bool = False,
) -> nnx.Module:
  """Moves every layer the rules select to `mode`, in place, and returns `model`.

  A float kernel goes float → lowrank → quantize → frozen as far as `mode`; a `QuantizedKernel`
  in an earlier mode moves forward from where it is (modes never move back: `dequantize`).
  `key` seeds k-means (quantize step and PQ). `method` "pq" / "dkm" are the baselines (d̃ = m).
  New kernels start in NNX's training mode (`deterministic=False`: soft DKM); `model.eval()`
  selects the hard codes. The float weights are replaced: keep a copy with
  `nnx.clone(model, arrays=True)` first if you need it. `stage=` is the deprecated name of `mode=`.
  """
  mode = as_mode(renamed_stage(mode, stage, Mode.QUANTIZE, "quantize_model"))
  if mode == Mode.FLOAT:
    raise ValueError(f"mode='float': expected one of {names(QUANTIZED)} (dequantize goes to float)")
  if method not in METHODS:
    raise ValueError(f"method={method!r}: expected one of {METHODS}")
  if method == "pq" and mode != Mode.FROZEN or method == "dkm" and mode == Mode.LOWRANK:
    raise ValueError(f"method={method!r} has no {mode} mode")
  explicit, config = config, config or QuantConfig()
  alpha = config.tau_alpha if tau_alpha is None else tau_alpha
  rules = as_rules(rules) if method == "lr2vq" else vanilla(rules)
  layers = [
    _Layer(path, layer, layer_plan(path, layer, rule, rules))
    for path, layer, rule in matched_layers(model, rules)
    if rule is not None and not rule.skip
  ]
  for layer in layers:
    if layer.mode.order > mode.order:
      raise recorded.mode_error(layer.path, layer.mode, mode, "quantize_model")
    if method != "lr2vq" and layer.mode != Mode.FLOAT:
      raise ModeError(f"quantize_model(method={method!r}): layer {layer.path!r} is not float")
  at = lambda m: [entry for entry in layers if entry.mode == m]  # noqa: E731
  if method == "pq":
    _to_pq(at(Mode.FLOAT), _need_key(key, "PQ"), config, kmeans_iters)
  else:
    _to_lowrank(at(Mode.FLOAT), method, config)
  if mode in (Mode.QUANTIZE, Mode.FROZEN) and at(Mode.LOWRANK):
    _to_quantize(at(Mode.LOWRANK), _need_key(key, "k-means"), config, kmeans_iters, alpha)
  if mode == Mode.FROZEN:
    _to_frozen(at(Mode.QUANTIZE), config, explicit)
  for entry in layers:
    settings = {n: recorded.decode(n, v) for n, v in _decoded_keys(entry.quant).items()}
    entry.layer.kernel = QuantizedKernel(
      entry.plan,
      entry.mode,
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
