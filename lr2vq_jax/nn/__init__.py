"""Flax linen layers and the model transform for LR²VQ."""

from lr2vq_jax.core.mode import MODES, Mode
from lr2vq_jax.nn.kernel import DKM_LISTS, LOSSES, QUANT, STAGES, QuantConfig
from lr2vq_jax.nn.layers import Conv, Dense, DenseGeneral, n_out_dims
from lr2vq_jax.nn.transform import (
  QuantizedModel,
  describe,
  module_path,
  plan_model,
  quantize_model,
  sum_losses,
)

__all__ = [
  "DKM_LISTS",
  "LOSSES",
  "MODES",
  "QUANT",
  "STAGES",
  "Conv",
  "Dense",
  "DenseGeneral",
  "Mode",
  "QuantConfig",
  "QuantizedModel",
  "describe",
  "module_path",
  "n_out_dims",
  "plan_model",
  "quantize_model",
  "sum_losses",
]
