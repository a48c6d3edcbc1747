"""The mode of a quantized layer: which LR²VQ variables its kernel is computed from.

  float     the layer's own kernel (not quantized)
  lowrank   z (n, d̃) and projection P (d̃, m): X = Z·P
  quantize  + codebook C (k, d̃): soft DKM in training, hard codes in evaluation
  frozen    codebook, projection and fixed hard codes a: X̂ = C[a]·P (what an export ships)

Modes only move forward (float → lowrank → quantize → frozen). A `Mode` is a `str`: it equals,
hashes and prints as its value, so configs, checkpoints and artifacts that say "quantize" keep
working. A step of the training pipeline (float, lowrank, quantize, pq, dkm) is a *stage*; each
runs its layers in one mode.
"""

from __future__ import annotations

import enum
import sys
import warnings


class Mode(enum.StrEnum):
  """A quantized layer's mode; a `str` (`Mode("quantize") is Mode.QUANTIZE == "quantize"`)."""

  FLOAT = "float"
  LOWRANK = "lowrank"
  QUANTIZE = "quantize"
  FROZEN = "frozen"

  @property
  def order(self) -> int:
    """Position in float → lowrank → quantize → frozen."""
    return MODES.index(self)


MODES = tuple(Mode)
QUANTIZED = MODES[1:]  # the modes with a quantized kernel (all but float)


def as_mode(value: Mode | str, allowed: tuple[Mode, ...] = MODES, *, name: str = "mode") -> Mode:
  """`value` as a `Mode`, or one ValueError naming the choices (`allowed`, default all)."""
  try:
    mode = Mode(value)
  except ValueError:
    mode = None
  if mode not in allowed:
    raise ValueError(f"{name}={str(value)!r}: expected one of {names(allowed)}")
  return mode


def names(modes: tuple[Mode, ...]) -> tuple[str, ...]:
  """The plain names of `modes`, for messages."""
  return tuple(m.value for m in modes)


def renamed_stage(mode, stage, default, where: str):
  """The mode given to a function whose `stage=` keyword is now `mode=`: `stage` (deprecated,
  with a DeprecationWarning) when given, else `mode`. Both given and different: TypeError."""
  if stage is None:
    return mode
  warnings.warn(
    f"{where}: the keyword stage= is deprecated, use mode= (a layer's mode; a stage is a step of "
    "the training pipeline)",
    DeprecationWarning,
    stacklevel=_user_stacklevel(),
  )
  if mode is not None and mode != default and mode != stage:
    raise TypeError(f"{where}: got mode={mode!r} and stage={stage!r}; give mode= only")
  return stage


def deprecated_stage(obj) -> Mode:
  """The `.stage` attribute kept for reading: the object's `mode`, with a DeprecationWarning."""
  warnings.warn(
    f"{type(obj).__name__}.stage is deprecated, use .mode",
    DeprecationWarning,
    stacklevel=_user_stacklevel(),
  )
  return obj.mode


def _user_stacklevel() -> int:
  """`warnings.warn`'s stacklevel, for the function calling this, that names the first caller
  outside lr2vq_jax and flax (whose module wrappers and metaclasses sit in between)."""
  level, frame = 1, sys._getframe(1)
  while frame.f_back is not None and frame.f_globals.get("__name__", "").split(".")[0] in (
    "lr2vq_jax",
    "flax",
  ):
    level, frame = level + 1, frame.f_back
  return level
