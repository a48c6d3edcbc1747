"""`QuantizedKernel`: the NNX stand-in for a layer's `kernel` Param in an LR²VQ mode.

Every flax NNX linear layer reads its weight as `self.kernel[...]`; a `QuantizedKernel` assigned to
`layer.kernel` answers that read with the mode's kernel, so the layer's class, configuration, bias
and call code stay as they were. State lives under the layer's `kernel`:

  mode       nnx.Param                       QuantState (never trained)
  lowrank    z (n,d̃), projection (d̃,m)      projection_mode
  quantize   z, projection, codebook (k,d̃)  tau, projection_mode, store_mode, dkm_iters
                                             (+ DkmState: neighbors, count, offset, see below)
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
from lr2vq_jax.nnx.variables import DkmState, Losses, QuantState

PARAMS = ("z", "projection", "codebook")  # trainable arrays, in the order they are made
STATE = ("tau", "codes")  # non-trainable arrays besides the recorded settings
ROW_SHARDED = (
  "z",
  "codes",
  "neighbors",
)  # split over `config.shard_axis` by rows when a mesh divides n


def _row_sharding(name: str, n: int, config: QuantConfig) -> dict:
  """`out_sharding` metadata for z / codes under an active mesh whose shard axis divides n."""
  axis = config.shard_axis
  if name not in ROW_SHARDED or axis is None:
    return {}
  mesh = jax.sharding.get_abstract_mesh()
  if axis not in mesh.axis_names or n % mesh.shape[axis] != 0:
    return {}
  return {"out_sharding": (axis,) if name == "codes" else (axis, None)}


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
    if mode == Mode.QUANTIZE:
      self._init_carried(plan, config)

  def _init_carried(self, plan: LayerPlan, config: QuantConfig) -> None:
    """Training DKM's carried state, as the linen layers keep it in `dkm_lists`: each row's
    top-t lists and a call counter (dkm_refresh > 1; count 0: ranked at the first training
    call) and the warm-start offset (dkm_warm; zeros: the first call starts cold)."""
    if config.carries_lists(plan.k):
      lists = jnp.zeros((plan.n, config.dkm_top_t), jnp.int32)
      self.neighbors = DkmState(lists, **_row_sharding("neighbors", plan.n, config))
      self.count = DkmState(jnp.zeros((), jnp.int32))
    if config.dkm_warm:
      self.offset = DkmState(jnp.zeros((plan.k, plan.d), jnp.float32))

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

  def _with_carried(self, arrays: dict, train: bool) -> dict:
    """`arrays` with the warm offset (every call) and, in training, the carried lists (re-ranked
    every `dkm_refresh` calls, written back): the linen layers' `dkm_lists` logic."""
    if hasattr(self, "offset"):
      arrays = {**arrays, "offset": self.offset[...]}
    if train and hasattr(self, "neighbors"):
      lists, count = kernel_math.carried_neighbors(
        arrays, self.neighbors[...], self.count[...], self.config
      )
      self.neighbors[...], self.count[...] = lists, count
      arrays = {**arrays, "neighbors": lists}
    return arrays

  def materialize(self) -> jax.Array:
    """The kernel (param dtype, the float layer's shape) in this mode (soft or hard codes).

    A training read also advances the carried DKM state (`DkmState`), as a linen training call
    with `dkm_lists` mutable does."""
    train = not self.deterministic
    arrays = self.arrays()
    if self.mode == Mode.QUANTIZE:
      arrays = self._with_carried(arrays, train)
    if train and hasattr(self, "offset"):
      rows, commitment, self.offset[...] = kernel_math.quantize_train_rows(
        arrays, self.settings(), self.config
      )
    else:
      rows, commitment = kernel_math.mode_rows(
        self.mode, arrays, self.settings(), self.config, train=train
      )
    if commitment is not None and hasattr(self, "__captures__"):
      self.sow(Losses, "commitment", commitment)  # collected by nnx.capture(model, Losses)
    return self.plan.to_kernel(rows).astype(self.param_dtype)
