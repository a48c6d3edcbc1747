"""What a layer's variables record about themselves, and which mode they are in (linen and NNX).

Every setting that changes what a quantized layer computes after training is written into the
layer's non-trainable `quant` collection when the variables are made (`init` or a conversion):

  projection_mode  int32  index into PROJECTIONS ("learned" / "orthonormal")   lowrank and later
  store_mode       int32  index into STORES (fp16 C·P, or fp16 C and P)        quantize, frozen
  dkm_iters        int32  DKM refinements before the hard codes                quantize

so evaluation, `quantize_to_frozen` and `export` read them from the variables, whatever the caller
passes: an artifact always decodes to the model that was evaluated. A `QuantConfig` field left at
None means "as the variables say"; a set field that disagrees with them is a `SettingError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lr2vq_jax.core import dkm as dkm_lib
from lr2vq_jax.core.accounting import STORES
from lr2vq_jax.core.mode import Mode

PROJECTIONS = ("learned", "orthonormal")
DEFAULTS = {"projection": PROJECTIONS[0], "store": STORES[0], "dkm_iters": dkm_lib.LAYER_ITERS}
KEYS = {"projection": "projection_mode", "store": "store_mode", "dkm_iters": "dkm_iters"}
_CHOICES = {"projection": PROJECTIONS, "store": STORES}
# The settings each mode's variables record (what its kernel depends on).
MODE_SETTINGS = {
  Mode.LOWRANK: ("projection",),
  Mode.QUANTIZE: ("projection", "store", "dkm_iters"),
  Mode.FROZEN: ("projection", "store"),
}
STAGE_SETTINGS = MODE_SETTINGS  # the former name, kept importable
# How to get from the mode a layer's variables are in to the mode a model wants.
CONVERSIONS = {
  (Mode.FLOAT, Mode.LOWRANK): "lq.convert.float_to_lowrank",
  (Mode.FLOAT, Mode.QUANTIZE): "lq.convert.float_to_lowrank, then lq.convert.lowrank_to_quantize",
  (Mode.FLOAT, Mode.FROZEN): "lq.convert.float_to_pq (or reach quantize, then quantize_to_frozen)",
  (Mode.LOWRANK, Mode.QUANTIZE): "lq.convert.lowrank_to_quantize",
  (Mode.LOWRANK, Mode.FROZEN): "lq.convert.lowrank_to_quantize, then lq.convert.quantize_to_frozen",
  (Mode.QUANTIZE, Mode.FROZEN): "lq.convert.quantize_to_frozen",
}


class SettingError(ValueError):
  """An explicit setting that contradicts what the variables record."""


class ModeError(ValueError):
  """Variables of another mode than the one asked for; the message names the conversion."""


StageError = ModeError  # the former name, kept importable


def encode(name: str, value: Any) -> jax.Array:
  """The int32 scalar recorded for setting `name`."""
  if name in _CHOICES:
    return jnp.asarray(_CHOICES[name].index(value), jnp.int32)
  return jnp.asarray(int(value), jnp.int32)


def decode(name: str, value: Any) -> Any:
  """The setting a concrete recorded scalar stands for."""
  i = int(np.asarray(value))
  if name in _CHOICES:
    if not 0 <= i < len(_CHOICES[name]):
      raise SettingError(f"recorded {KEYS[name]}={i} is not an index into {_CHOICES[name]}")
    return _CHOICES[name][i]
  return i


def is_concrete(x: Any) -> bool:
  """True outside tracing (a value that Python can read)."""
  return not isinstance(x, jax.core.Tracer)


def check(name: str, explicit: Any, recorded: Any, where: str) -> None:
  """`SettingError` when an explicit setting disagrees with the recorded one."""
  if explicit is not None and recorded is not None and explicit != recorded:
    raise SettingError(
      f"{where}: QuantConfig.{name}={explicit!r}, but the variables were made with "
      f"{name}={recorded!r} (recorded in their 'quant' collection); leave {name} unset (None) "
      f"to use the recorded value, or convert again with {name}={explicit!r}"
    )


def resolve(layer_quant: Mapping[str, Any], config: Any, mode: Mode, where: str) -> dict:
  """Settings of one layer from its concrete `quant` entries; `config` (or None) only checked
  against them, and used where nothing is recorded (variables made before settings were kept)."""
  out = {}
  for name in MODE_SETTINGS[mode]:
    explicit = None if config is None else getattr(config, name)
    key = KEYS[name]
    recorded = decode(name, layer_quant[key]) if key in layer_quant else None
    check(name, explicit, recorded, where)
    out[name] = next(v for v in (recorded, explicit, DEFAULTS[name]) if v is not None)
  return out


def record(quant: dict, layer: tuple, settings: Mapping[str, Any]) -> None:
  """Writes `settings` into a flat quant dict under `layer`."""
  for name, value in settings.items():
    quant[layer + (KEYS[name],)] = encode(name, value)


def layer_mode(leaves: set[str]) -> Mode:
  """The mode of one layer from the names of its params."""
  if "z" in leaves:
    return Mode.QUANTIZE if "codebook" in leaves else Mode.LOWRANK
  if "codebook" in leaves:
    return Mode.FROZEN
  return Mode.FLOAT


def mode_error(path: str, found: Mode, wanted: Mode, where: str) -> ModeError:
  """The error for a layer in mode `found` where `wanted` was expected, naming the way there."""
  how = CONVERSIONS.get((found, wanted))
  hint = (
    f"run {how} on them first"
    if how
    else f"use variables of mode '{wanted}' (modes only move float → lowrank → quantize → frozen)"
  )
  return ModeError(
    f"{where}: layer {path!r} holds {found}-mode variables, {wanted}-mode ones are needed; {hint}"
  )
