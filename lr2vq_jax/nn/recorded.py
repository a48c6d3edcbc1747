"""The recorded settings and mode errors, kept importable from their former linen home."""

from lr2vq_jax.core.recorded import (
  CONVERSIONS,
  DEFAULTS,
  KEYS,
  MODE_SETTINGS,
  PROJECTIONS,
  STAGE_SETTINGS,
  STORES,
  ModeError,
  SettingError,
  StageError,
  check,
  decode,
  encode,
  is_concrete,
  layer_mode,
  mode_error,
  record,
  resolve,
)

layer_stage = layer_mode  # the former names
stage_error = mode_error

__all__ = [
  "CONVERSIONS",
  "DEFAULTS",
  "KEYS",
  "MODE_SETTINGS",
  "PROJECTIONS",
  "STAGE_SETTINGS",
  "STORES",
  "ModeError",
  "SettingError",
  "StageError",
  "check",
  "decode",
  "encode",
  "is_concrete",
  "layer_mode",
  "layer_stage",
  "mode_error",
  "record",
  "resolve",
  "stage_error",
]
