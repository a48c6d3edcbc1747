"""Flax NNX front end of LR²VQ: direct layers, no-edit conversion by rules, export and load.

  import lr2vq_jax as lq
  lq.nnx.quantize_model(model, rules, lq.Mode.QUANTIZE, key=key)   # in place: layer.kernel swapped
  model.train()   # soft DKM;  model.eval(): hard codes (what an export ships)
  lq.nnx.export(model, rules, "artifact/");  lq.nnx.load_into(FloatModel(...), "artifact/")

The math is shared with the linen front end (`lr2vq_jax.core`); paths are NNX attribute paths
("blocks/0/mlp"), not linen scope names ("blocks_0"), so rules are written per front end.
"""

from lr2vq_jax.core.mode import MODES, Mode
from lr2vq_jax.nnx.convert import METHODS, dequantize, quantize_model
from lr2vq_jax.nnx.interop import bn_epsilon, export, load_into, to_variables
from lr2vq_jax.nnx.kernel import QuantizedKernel
from lr2vq_jax.nnx.layers import Conv, Linear, LinearGeneral
from lr2vq_jax.nnx.linen_view import LinenView, init_mode, init_stage
from lr2vq_jax.nnx.transform import LAYER_TYPES, describe, iter_layers, n_out_dims, plan_model
from lr2vq_jax.nnx.variables import DkmState, Losses, QuantState, sum_losses

__all__ = [
  "LAYER_TYPES",
  "METHODS",
  "MODES",
  "Conv",
  "DkmState",
  "Linear",
  "LinearGeneral",
  "LinenView",
  "Losses",
  "Mode",
  "QuantState",
  "QuantizedKernel",
  "bn_epsilon",
  "dequantize",
  "describe",
  "export",
  "init_mode",
  "init_stage",
  "iter_layers",
  "load_into",
  "n_out_dims",
  "plan_model",
  "quantize_model",
  "sum_losses",
  "to_variables",
]
