"""A linen layer's kernel from its LR²VQ variables, for every stage of the pipeline.

The variables live in the calling layer's own scope (big_vision `StdConv` style: the kernel is
computed from other params), so a quantized layer has the same path as the float layer it replaces.

  stage      params                         'quant' collection   kernel
  float      kernel                         -                     kernel
  lowrank    z (n,d̃), projection (d̃,m)      shapes                Z·P
  quantize   z, projection, codebook (k,d̃)  shapes, tau           train: DKM(Z)·P; eval: hard codes
  frozen     codebook, projection           shapes, codes (n,)    C[a]·P

"shapes" are `shape` (the kernel's) and `view_shape` (what is cut into subvectors), kept so that
an export or a later stage needs nothing but the variables. The settings that change the result
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
  LOSSES,
  QUANT,
  STAGES,
  QuantConfig,
  decode_rows,
  effective_projection,
  fp16_round,
  frozen_tables,
  hard_codes,
  projection_as,
  refined_codebook,
  stored_rows,
  temperature,
)
from lr2vq_jax.core.rules import LayerPlan, Rule, plan_layer


def quantized_kernel(
  mdl: Any,
  *,
  init_fn: Callable,
  shape: Sequence[int],
  param_dtype: Any,
  rule: Rule,
  stage: str,
  train: bool,
  config: QuantConfig,
  n_out_dims: int | None,
) -> jax.Array:
  """Creates/reads the stage's variables in `mdl`'s scope and returns the kernel (param_dtype)."""
  if stage not in STAGES or stage == "float":
    raise ValueError(f"stage={stage!r}: expected one of {STAGES[1:]}")
  geo = plan_layer("/".join(map(str, mdl.path)), shape, rule, n_out_dims=n_out_dims)
  _check_stage(mdl, stage)
  mdl.variable(QUANT, "shape", lambda: jnp.asarray(geo.shape, jnp.int32))
  mdl.variable(QUANT, "view_shape", lambda: jnp.asarray(geo.view_shape, jnp.int32))
  settings = _settings(mdl, stage, config)
  arrays = _stage_arrays(mdl, stage, geo, config, init_fn, param_dtype)
  rows, commitment = kernel_math.stage_rows(stage, arrays, settings, config, train=train)
  if commitment is not None:
    mdl.sow(LOSSES, "commitment", commitment)
  return geo.to_kernel(rows).astype(param_dtype)


def _stage_arrays(mdl, stage: str, geo: LayerPlan, config, init_fn, param_dtype) -> dict:
  """The stage's params and 'quant' variables in `mdl` (made at init from a random kernel)."""
  initializing = mdl.is_initializing()
  rows0 = None
  if initializing:
    kernel = init_fn(mdl.make_rng("params"), geo.shape, param_dtype)
    rows0 = geo.to_rows(jnp.asarray(kernel, jnp.float32))
  z0 = p0 = c0 = None
  if stage == "frozen":
    codes = mdl.variable(QUANT, "codes", lambda: jnp.zeros((geo.n,), jnp.int32)).value
    if initializing:
      z0, p0 = (rows0, jnp.eye(geo.m)) if geo.d == geo.m else lowrank.svd_init(rows0, geo.d)
      c0 = _random_rows(mdl, z0, geo.k)
    c = mdl.param("codebook", _given(c0, (geo.k, geo.d), param_dtype))
    p = mdl.param("projection", _given(p0, (geo.d, geo.m), param_dtype))
    return {"codes": codes, "codebook": c, "projection": p}
  if initializing:
    z0, p0 = lowrank.svd_init(rows0, geo.d)
  z = mdl.param("z", _given(z0, (geo.n, geo.d), param_dtype))
  p = mdl.param("projection", _given(p0, (geo.d, geo.m), param_dtype))
  if stage == "lowrank":
    return {"z": z, "projection": p}
  c0 = _random_rows(mdl, z0, geo.k) if initializing else None
  c = mdl.param("codebook", _given(c0, (geo.k, geo.d), param_dtype))
  tau = mdl.variable(QUANT, "tau", lambda: temperature(z, c, config.tau_alpha)).value
  return {"z": z, "projection": p, "codebook": c, "tau": tau}


def _check_stage(mdl, stage: str) -> None:
  """Outside init, the layer's params must be of `stage`: else the conversion to run, by name."""
  if mdl.is_initializing() or mdl.scope is None:
    return
  names = {n for n in ("kernel", "z", "codebook") if mdl.has_variable("params", n)}
  found = recorded.layer_stage(names)
  if found != stage:
    raise recorded.stage_error(module_name(mdl), found, stage, "quantize_model(stage=...)")


def module_name(mdl) -> str:
  return "/".join(map(str, mdl.path))


def _settings(mdl, stage: str, config: QuantConfig) -> dict:
  """The stage's recorded settings: created at init from `config`, else read from the variables
  (a concrete value is checked against an explicit `config` field; a traced one is used as is)."""
  out = {}
  for name in recorded.STAGE_SETTINGS[stage]:
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
  idx = jax.random.choice(mdl.make_rng("params"), x.shape[0], (k,), replace=False)
  return x[idx]
