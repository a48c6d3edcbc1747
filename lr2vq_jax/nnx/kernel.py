"""`QuantizedKernel`: the NNX stand-in for a layer's `kernel` Param in an LR²VQ mode.

Every flax NNX linear layer reads its weight as `self.kernel[...]`; a `QuantizedKernel` assigned to
`layer.kernel` answers that read with the mode's kernel, so the layer's class, configuration, bias
and call code stay as they were. State lives under the layer's `kernel`:

  mode       nnx.Param                       QuantState (never trained)
  lowrank    z (n,d̃), projection (d̃,m)      projection_mode
  quantize   z, projection, codebook (k,d̃)  tau, projection_mode, store_mode, dkm_iters
  frozen     codebook, projection            codes (n,), projection_mode, store_mode

The math is `lr2vq_jax.core.kernel`, the one the linen layers run. Training follows NNX's
convention: `deterministic=False` (after `model.train()`) is soft DKM, `True` (`model.eval()`) the
hard codes an export ships. The geometry (`plan`), mode and config are static: a mode change is a
new GraphDef, hence a new compile, as a new linen mode is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from lr2vq_jax.core import kernel as kernel_math
from lr2vq_jax.core import recorded
from lr2vq_jax.core.kernel import QuantConfig
from lr2vq_jax.core.mode import QUANTIZED, Mode, as_mode, deprecated_stage
from lr2vq_jax.core.rules import LayerPlan
from lr2vq_jax.nnx.variables import Losses, QuantState

PARAMS = ("z", "projection", "codebook")  # trainable arrays, in the order they are made
STATE = ("tau", "codes")  # non-trainable arrays besides the recorded settings
ROW_SHARDED = ("z", "codes")  # split over `config.shard_axis` by rows when a mesh divides n


def _row_sharding(name: str, n: int, config: QuantConfig) -> dict:
  """`out_sharding` metadata for z / codes under an active mesh whose shard axis divides n."""
  axis = config.shard_axis
  if name not in ROW_SHARDED or axis is None:
    return {}
  mesh = jax.sharding.get_abstract_mesh()
  if axis not in mesh.axis_names or n % mesh.shape[axis] != 0:
    return {}
  return {"out_sharding": (axis, None) if name == "z" else (axis,)}


class QuantizedKernel(nnx.Module):
  """A layer's kernel as its LR²VQ variables in `mode` (`kernel[...]` gives the kernel)."""

  def __init__(
    self,
    plan: LayerPlan,
    mode: Mode | str,
    arrays: Mapping[str, Any],
    settings: Mapping[str, Any],
    *,
    config: QuantConfig | None = None,
    param_dtype: Any = jnp.float32,
    deterministic: bool = False,
  ):
    self.plan = plan
    self.mode = mode = as_mode(mode, QUANTIZED)
    self.config = config = config or QuantConfig()
    if mode == Mode.QUANTIZE and config.carries_lists(plan.k):
      raise ValueError(
        f"QuantConfig.dkm_refresh={config.dkm_refresh}: carried top-t DKM lists are linen-only; "
        "NNX kernels rank on every call (use dkm_refresh=1)"
      )
    if mode == Mode.QUANTIZE and config.dkm_warm:
      raise ValueError(
        "QuantConfig.dkm_warm=True: the carried warm-start offset is linen-only; NNX kernels "
        "start DKM from the codebook on every call (use dkm_warm=False)"
      )
    self.param_dtype = jnp.dtype(param_dtype)
    self.deterministic = deterministic
    for name in (*PARAMS, *STATE):
      if name in arrays:
        value = jnp.asarray(arrays[name])
        if name in PARAMS:
          value = value.astype(self.param_dtype)
        kind = nnx.Param if name in PARAMS else QuantState
        setattr(self, name, kind(value, **_row_sharding(name, plan.n, config)))
    for name in recorded.MODE_SETTINGS[mode]:
      setattr(self, recorded.KEYS[name], QuantState(recorded.encode(name, settings[name])))

  @property
  def stage(self) -> Mode:
    """Deprecated: the kernel's `mode`."""
    return deprecated_stage(self)

  # -- what layer code reads ---------------------------------------------------------------------

  def __getitem__(self, index) -> jax.Array:
    return self.materialize()[index]

  @property
  def shape(self) -> tuple[int, ...]:
    return self.plan.shape

  @property
  def ndim(self) -> int:
    return len(self.plan.shape)

  @property
  def dtype(self):
    return self.param_dtype

  @property
  def value(self) -> jax.Array:
    return self.materialize()

  def get_value(self) -> jax.Array:
    return self.materialize()

  def set_view(self, deterministic: bool | None = None) -> None:
    """`nnx.view(model, deterministic=...)`: hard codes (True) or soft DKM (False)."""
    if deterministic is not None:
      self.deterministic = deterministic

  # -- the mode's kernel -------------------------------------------------------------------------

  def arrays(self) -> dict[str, jax.Array]:
    """The mode's z / projection / codebook / tau / codes (those it has)."""
    return {n: getattr(self, n)[...] for n in (*PARAMS, *STATE) if hasattr(self, n)}

  def settings(self) -> dict:
    """Recorded settings: names where Python can read them (checked against an explicit config
    field), the recorded scalars as they are under tracing."""
    out = {}
    for name in recorded.MODE_SETTINGS[self.mode]:
      value = getattr(self, recorded.KEYS[name])[...]
      if recorded.is_concrete(value):
        value = recorded.decode(name, value)
        recorded.check(name, getattr(self.config, name), value, f"layer {self.plan.path!r}")
      out[name] = value
    return out

  def materialize(self) -> jax.Array:
    """The kernel (param dtype, the float layer's shape) in this mode (soft or hard codes)."""
    rows, commitment = kernel_math.mode_rows(
      self.mode, self.arrays(), self.settings(), self.config, train=not self.deterministic
    )
    if commitment is not None and hasattr(self, "__captures__"):
      self.sow(Losses, "commitment", commitment)  # collected by nnx.capture(model, Losses)
    return self.plan.to_kernel(rows).astype(self.param_dtype)
