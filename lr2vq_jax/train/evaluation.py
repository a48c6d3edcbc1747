"""Evaluation: top-1/top-5 and loss of a model (or an exported artifact) over one pass of a split,
on the mesh."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable

import jax
import numpy as np

from lr2vq_jax.core.mode import Mode
from lr2vq_jax.models import create_model
from lr2vq_jax.nn import QuantizedModel
from lr2vq_jax.train import hard_codes, input_pipeline, partitioning
from lr2vq_jax.train.step import make_eval_step


def evaluate(model, variables, make_iter: Callable[[], Iterable], mesh) -> dict[str, float]:
  """Top-1/top-5 (%) and loss over one pass of a split, each example counted once.

  A quantize-mode model is evaluated through its frozen equivalent: hard codes and tables are
  computed once here (sharded over the mesh), not in every batch.
  """
  model, variables = hard_codes.frozen_model(model, variables, mesh)
  if isinstance(model, QuantizedModel) and model.mode == Mode.FLOAT:
    model = model.model  # what a float-mode model runs (same scope): one eval step, not two
  variables = _on_mesh(variables, mesh)
  eval_step = _jitted_eval_step(model)
  totals: dict[str, float] = {}
  for batch in make_iter():
    out = jax.device_get(eval_step(variables, partitioning.global_batch(batch, mesh)))
    for key, value in out.items():
      totals[key] = totals.get(key, 0.0) + float(value)
  count = max(totals.get("count", 0.0), 1.0)
  return {
    "top1": 100 * totals["top1"] / count,
    "top5": 100 * totals["top5"] / count,
    "loss": totals["loss"] / count,
  }


def evaluate_artifact(artifact, model_name: str, data, split: str = "test") -> dict[str, float]:
  """`evaluate` of an exported artifact (`lq.load`) decoded into `model_name`'s float model, on
  `split` ("eval" or "test") of the data config `data`: what `lr2vq eval` reports."""
  model = create_model(model_name, num_classes=input_pipeline.dataset_info(data).num_classes)
  batches = lambda: input_pipeline.eval_batches(data, split)  # noqa: E731
  return evaluate(model, artifact.decode(), batches, partitioning.make_mesh())


@functools.lru_cache(maxsize=8)
def _jitted_eval_step(model):
  """One jitted eval step per model (modules compare by their fields): a stage's final evaluation
  and the test and validation passes over its artifact compile it once, not once per call."""
  return jax.jit(make_eval_step(model))


def _on_mesh(variables: dict, mesh) -> dict:
  """Host (numpy) leaves replicated on the mesh, as a stage's own state is: its final evaluation
  and the passes over its exported artifact then share one compiled step (same input layout)."""
  sharding = partitioning.replicated(mesh)
  place = lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x))  # noqa: E731
  return jax.tree.map(lambda x: x if isinstance(x, jax.Array) else place(x), variables)
