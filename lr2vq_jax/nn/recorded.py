"""The recorded settings and stage errors, kept importable from their former linen home."""

from lr2vq_jax.core.recorded import (
  CONVERSIONS,
  DEFAULTS,
  KEYS,
  PROJECTIONS,
  STAGE_SETTINGS,
  STORES,
  SettingError,
  StageError,
  check,
  decode,
  encode,
  is_concrete,
  layer_stage,
  record,
  resolve,
  stage_error,
)

__all__ = [
  "CONVERSIONS",
  "DEFAULTS",
  "KEYS",
  "PROJECTIONS",
  "STAGE_SETTINGS",
  "STORES",
  "SettingError",
  "StageError",
  "check",
  "decode",
  "encode",
  "is_concrete",
  "layer_stage",
  "record",
  "resolve",
  "stage_error",
]
