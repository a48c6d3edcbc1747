"""The quantize mode's hard-code model, computed once per evaluation or export, split over `data`.

Evaluating quantize-mode variables directly re-runs every layer's DKM refinement over all of Z
and the nearest-centroid assignment inside each eval batch. `frozen_model` does that work once
(`convert.quantize_to_frozen`, jitted, under the mesh so that each layer's DKM splits the rows of
Z over the data axis as training does) and returns the frozen-mode model and variables that
compute the same logits from fixed codes and tables: batches then only decode and run the net.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

from lr2vq_jax import convert
from lr2vq_jax.core.mode import Mode
from lr2vq_jax.nn import QuantizedModel


def is_quantize_mode(model: Any, variables: dict) -> bool:
  """True for a quantize-mode `QuantizedModel` with quantize-mode variables."""
  return (
    isinstance(model, QuantizedModel)
    and model.mode == Mode.QUANTIZE
    and convert.mode_of(variables) == Mode.QUANTIZE
  )


def frozen_variables(model: QuantizedModel, variables: dict, mesh) -> dict:
  """Frozen-mode variables (hard codes, refined codebooks) of quantize-mode `variables`.

  The recorded settings are used as they are (the model's explicit ones are not re-checked: the
  model's own hard evaluation under `jit` reads the recorded values too). A collective under
  several processes: every process calls it with the same variables.
  """
  config = dataclasses.replace(model.config, dkm_iters=None, store=None, projection=None)
  variables = {c: v for c, v in variables.items() if c != "losses"}
  with jax.set_mesh(mesh):
    return convert.quantize_to_frozen(variables, config)


def frozen_model(model: Any, variables: dict, mesh) -> tuple[Any, dict]:
  """(model, variables) to evaluate: the frozen mode's for quantize-mode ones (same logits as
  `model`'s hard evaluation), anything else unchanged."""
  if not is_quantize_mode(model, variables):
    return model, variables
  return model.clone(mode=Mode.FROZEN), frozen_variables(model, variables, mesh)
