"""A linen layer's kernel from its LR²VQ variables, in every mode (`lr2vq_jax.core.mode`).

The variables live in the calling layer's own scope (big_vision `StdConv` style: the kernel is
computed from other params), so a quantized layer has the same path as the float layer it replaces.

  mode       params                         'quant' collection   kernel
  float      kernel                         -                     kernel
  lowrank    z (n,d̃), projection (d̃,m)      shapes                Z·P
  quantize   z, projection, codebook (k,d̃)  shapes, tau           train: DKM(Z)·P; eval: hard codes
  frozen     codebook, projection           shapes, codes (n,)    C[a]·P

"shapes" are `shape` (the kernel's) and `view_shape` (what is cut into subvectors), kept so that
an export or a later mode needs nothing but the variables. The settings that change the result
(projection mode, store, DKM iterations) are recorded there too (`core/recorded.py`).
The math is `lr2vq_jax.core.kernel` (shared with NNX); this file only makes and reads variables.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from lr2vq_jax.core import kernel as kernel_math
from lr2vq_jax.core import lowrank, recorded
from lr2vq_jax.core.kernel import (  # noqa: F401  (the linen-side names of the shared math)
  DKM_LISTS,
  LOSSES,
  MODES,
  QUANT,
  STAGES,
  QuantConfig,
  decode_rows,
  effective_projection,
  fp16_round,
  frozen_tables,
  hard_codes,
  projection_as,
  random_rows,
  refined_codebook,
  stored_rows,
  temperature,
)
from lr2vq_jax.core.mode import QUANTIZED, Mode, as_mode
from lr2vq_jax.core.rules import LayerPlan, Rule, plan_layer


def quantized_kernel(
  mdl: Any,
  *,
  init_fn: Callable,
  shape: Sequence[int],
  param_dtype: Any,
  rule: Rule,
  mode: Mode | str,
  train: bool,
  config: QuantConfig,
  n_out_dims: int | None,
) -> jax.Array:
  """Creates/reads the mode's variables in `mdl`'s scope and returns the kernel (param_dtype)."""
  mode = as_mode(mode, QUANTIZED)
  geo = plan_layer("/".join(map(str, mdl.path)), shape, rule, n_out_dims=n_out_dims)
  _check_mode(mdl, mode)
  mdl.variable(QUANT, "shape", lambda: jnp.asarray(geo.shape, jnp.int32))
  mdl.variable(QUANT, "view_shape", lambda: jnp.asarray(geo.view_shape, jnp.int32))
  settings = _settings(mdl, mode, config)
  arrays = _mode_arrays(mdl, mode, geo, config, init_fn, param_dtype)
  offset = None
  if mode == Mode.QUANTIZE:
    arrays, offset = _with_warm_offset(mdl, geo, arrays, config, train=train)
    arrays = _with_carried_lists(mdl, geo, arrays, config, train=train)
  if offset is not None and train and not mdl.is_initializing():
    rows, commitment, offset.value = kernel_math.quantize_train_rows(arrays, settings, config)
  else:
    rows, commitment = kernel_math.mode_rows(mode, arrays, settings, config, train=train)
  if commitment is not None:
    mdl.sow(LOSSES, "commitment", commitment)
  return geo.to_kernel(rows).astype(param_dtype)


def _initial_rows(mdl, geo: LayerPlan, init_fn, param_dtype) -> jax.Array | None:
  """At init, the rows of a random float kernel the mode's variables start from; else None."""
  if not mdl.is_initializing():
    return None
  kernel = init_fn(mdl.make_rng("params"), geo.shape, param_dtype)
  return geo.to_rows(jnp.asarray(kernel, jnp.float32))


def _lowrank_params(mdl, geo: LayerPlan, rows0, param_dtype) -> tuple:
  """(z, projection, float32 z at init or None): at init, the truncated SVD of the random kernel."""
  z0, p0 = (None, None) if rows0 is None else lowrank.svd_init(rows0, geo.d)
  z = mdl.param("z", _given(z0, (geo.n, geo.d), param_dtype))
  p = mdl.param("projection", _given(p0, (geo.d, geo.m), param_dtype))
  return z, p, z0


def _lowrank_arrays(mdl, geo: LayerPlan, rows0, param_dtype, config) -> dict:
  """z and projection."""
  del config
  z, p, _ = _lowrank_params(mdl, geo, rows0, param_dtype)
  return {"z": z, "projection": p}


def _quantize_arrays(mdl, geo: LayerPlan, rows0, param_dtype, config) -> dict:
  """z, projection, a codebook (at init: k random rows of Z) and DKM's temperature τ."""
  z, p, z0 = _lowrank_params(mdl, geo, rows0, param_dtype)
  c0 = None if z0 is None else _random_rows(mdl, z0, geo.k)
  c = mdl.param("codebook", _given(c0, (geo.k, geo.d), param_dtype))
  tau = mdl.variable(QUANT, "tau", lambda: temperature(z, c, config.tau_alpha)).value
  return {"z": z, "projection": p, "codebook": c, "tau": tau}


def _with_warm_offset(mdl, geo: LayerPlan, arrays: dict, config, *, train: bool):
  """(`arrays` plus the carried warm-start "offset", its variable or None): `QuantConfig.dkm_warm`.

  The offset (`kernel.warm_start`) is made at init (zeros: the first call starts cold) or when a
  training call makes `DKM_LISTS` mutable, and returned for the call to overwrite. Any call that
  finds one (evaluation, a plain `apply`) starts from it too, so evaluation decodes the codebook
  training used; a training call that cannot write it runs from it unchanged.
  """
  writable = mdl.is_initializing() or mdl.is_mutable_collection(DKM_LISTS)
  if config.dkm_warm and writable:
    shape = (geo.k, geo.d)
    var = mdl.variable(DKM_LISTS, "offset", lambda: jnp.zeros(shape, jnp.float32))
    return {**arrays, "offset": var.value}, var
  if mdl.has_variable(DKM_LISTS, "offset"):
    return {**arrays, "offset": mdl.get_variable(DKM_LISTS, "offset")}, None
  return arrays, None


def _with_carried_lists(mdl, geo: LayerPlan, arrays: dict, config, *, train: bool) -> dict:
  """`arrays` plus each row's top-t lists carried in `DKM_LISTS` (`QuantConfig.dkm_refresh`).

  The lists exist only with dkm_refresh > 1 and are made at init (zeros, count 0: ranked at the
  first training call) or when a training call makes the collection mutable; calls that cannot
  write it (evaluation, a plain `apply`) rank every time, as with dkm_refresh = 1.
  """
  if not config.carries_lists(geo.k):
    return arrays
  if not (mdl.is_initializing() or mdl.is_mutable_collection(DKM_LISTS)):
    return arrays
  shape = (geo.n, config.dkm_top_t)
  lists = mdl.variable(DKM_LISTS, "neighbors", lambda: jnp.zeros(shape, jnp.int32))
  count = mdl.variable(DKM_LISTS, "count", lambda: jnp.zeros((), jnp.int32))
  if not train or mdl.is_initializing():
    return arrays
  lists.value, count.value = kernel_math.carried_neighbors(arrays, lists.value, count.value, config)
  return {**arrays, "neighbors": lists.value}


def _frozen_arrays(mdl, geo: LayerPlan, rows0, param_dtype, config) -> dict:
  """Codes, codebook and projection (at init: SVD of the random kernel, or P = I at d̃ = m)."""
  del config
  codes = mdl.variable(QUANT, "codes", lambda: jnp.zeros((geo.n,), jnp.int32)).value
  z0 = p0 = c0 = None
  if rows0 is not None:
    z0, p0 = (
      (rows0, lowrank.identity_projection(geo.m))
      if geo.d == geo.m
      else lowrank.svd_init(rows0, geo.d)
    )
    c0 = _random_rows(mdl, z0, geo.k)
  c = mdl.param("codebook", _given(c0, (geo.k, geo.d), param_dtype))
  p = mdl.param("projection", _given(p0, (geo.d, geo.m), param_dtype))
  return {"codes": codes, "codebook": c, "projection": p}


def _mode_arrays(mdl, mode: Mode, geo: LayerPlan, config, init_fn, param_dtype) -> dict:
  """The mode's params and 'quant' variables in `mdl` (made at init from a random kernel)."""
  rows0 = _initial_rows(mdl, geo, init_fn, param_dtype)
  return _MODE_ARRAYS[mode](mdl, geo, rows0, param_dtype, config)


# The variables of each quantized mode: (mdl, geo, initial rows or None, dtype, config) -> arrays.
_MODE_ARRAYS = {
  Mode.LOWRANK: _lowrank_arrays,
  Mode.QUANTIZE: _quantize_arrays,
  Mode.FROZEN: _frozen_arrays,
}


def _check_mode(mdl, mode: Mode) -> None:
  """Outside init, the layer's params must be of `mode`: else the conversion to run, by name."""
  if mdl.is_initializing() or mdl.scope is None:
    return
  names = {n for n in ("kernel", "z", "codebook") if mdl.has_variable("params", n)}
  found = recorded.layer_mode(names)
  if found != mode:
    raise recorded.mode_error(module_name(mdl), found, mode, "quantize_model(mode=...)")


def module_name(mdl) -> str:
  return "/".join(map(str, mdl.path))


def _settings(mdl, mode: Mode, config: QuantConfig) -> dict:
  """The mode's recorded settings: created at init from `config`, else read from the variables
  (a concrete value is checked against an explicit `config` field; a traced one is used as is)."""
  out = {}
  for name in recorded.MODE_SETTINGS[mode]:
    key, explicit = recorded.KEYS[name], getattr(config, name)
    if mdl.is_initializing():
      out[name] = mdl.variable(QUANT, key, lambda n=name: recorded.encode(n, config.value(n))).value
    elif mdl.has_variable(QUANT, key):
      out[name] = value = mdl.get_variable(QUANT, key)
      if recorded.is_concrete(value):
        out[name] = recorded.decode(name, value)
        recorded.check(name, explicit, out[name], f"layer {module_name(mdl)!r}")
    else:  # variables made before settings were recorded
      out[name] = config.value(name)
  return out


def _given(value, shape, dtype) -> Callable:
  """A param initializer returning `value` (computed once for several params at init time).

  Flax also calls initializers abstractly in `apply` to check shapes, where `value` is None.
  """
  return lambda *_: jnp.zeros(shape, dtype) if value is None else jnp.asarray(value, dtype)


def _random_rows(mdl, x: jax.Array, k: int) -> jax.Array:
  """k distinct rows of x: a cheap codebook for `init` (real codebooks come from convert)."""
  return random_rows(mdl.make_rng("params"), x, k)
