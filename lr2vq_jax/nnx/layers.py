"""flax NNX `Linear`, `LinearGeneral` and `Conv` with LR²VQ kernels, taking flax's arguments.

Each takes its parent's constructor arguments plus `rule` (k, m, d̃), `mode` (a `Mode` or its name;
`stage=` is its deprecated name) and `quant` (`QuantConfig`); only the kernel changes. With
`mode="float"` or `rule=None` the layer is its flax parent, weights included (same `rngs` draws).
Other modes start like the linen layers' init:
Z and P from the SVD of the random initial kernel, a codebook of k random rows of Z, τ from it;
real codebooks come from `lq.nnx.quantize_model`, which runs k-means.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from lr2vq_jax.core import lowrank
from lr2vq_jax.core.kernel import QuantConfig, random_rows, temperature
from lr2vq_jax.core.mode import Mode, as_mode, deprecated_stage, renamed_stage
from lr2vq_jax.core.rules import Rule, plan_layer
from lr2vq_jax.nnx.kernel import QuantizedKernel
from lr2vq_jax.nnx.transform import n_out_dims


def initial_arrays(rows: jax.Array, plan, mode: Mode, rng: jax.Array, alpha: float) -> dict:
  """The mode's arrays from a random initial kernel's rows (as the linen layers' init)."""
  if mode == Mode.FROZEN and plan.d == plan.m:
    z, p = rows, lowrank.identity_projection(plan.m)
  else:
    z, p = lowrank.svd_init(rows, plan.d)
  if mode == Mode.LOWRANK:
    return {"z": z, "projection": p}
  codebook = random_rows(rng, z, plan.k)
  if mode == Mode.FROZEN:
    return {"codebook": codebook, "projection": p, "codes": jnp.zeros((plan.n,), jnp.int32)}
  return {"z": z, "projection": p, "codebook": codebook, "tau": temperature(z, codebook, alpha)}


def _quantize_own_kernel(layer: nnx.Module, rule, mode: Mode, quant, rngs: nnx.Rngs) -> None:
  layer.rule, layer.mode, layer.quant = rule, mode, quant
  if rule is None or rule.skip or mode == Mode.FLOAT:
    return
  value = layer.kernel[...]
  plan = plan_layer(type(layer).__name__, value.shape, rule, n_out_dims=n_out_dims(layer))
  rows = plan.to_rows(jnp.asarray(value, jnp.float32))
  arrays = initial_arrays(rows, plan, mode, rngs.params(), quant.tau_alpha)
  layer.kernel = QuantizedKernel(
    plan, mode, arrays, quant.settings(mode), config=quant, param_dtype=value.dtype
  )


class _QuantizedInit:
  """Mixin: flax's constructor, then the layer's own kernel quantized by `rule` in `mode`."""

  def __init__(
    self,
    *args,
    rule: Rule | None = None,
    mode: Mode | str = Mode.FLOAT,
    quant: QuantConfig | None = None,
    rngs: nnx.Rngs,
    stage: Mode | str | None = None,
    **kwargs,
  ):
    mode = as_mode(renamed_stage(mode, stage, Mode.FLOAT, type(self).__name__))
    super().__init__(*args, rngs=rngs, **kwargs)
    _quantize_own_kernel(self, rule, mode, quant or QuantConfig(), rngs)

  @property
  def stage(self) -> Mode:
    """Deprecated: the layer's `mode`."""
    return deprecated_stage(self)


class Linear(_QuantizedInit, nnx.Linear):
  """`flax.nnx.Linear` whose kernel is LR²VQ-quantized according to `rule` and `mode`."""


class LinearGeneral(_QuantizedInit, nnx.LinearGeneral):
  """`flax.nnx.LinearGeneral` (no batch_axis) with an LR²VQ kernel; subvectors over prod(in)."""


class Conv(_QuantizedInit, nnx.Conv):
  """`flax.nnx.Conv` (groups included) with an LR²VQ kernel; subvectors in PyTorch OIHW order."""
