"""Evaluation computes each layer's hard codes once (frozen model) and matches the quantize stage's
own hard evaluation, which re-derives them in every batch: same codes, same logits, same metrics.

The two paths run the same functions (`refined_codebook`, `codec.encode`, `stored_rows`) on the
same inputs on one device, so the comparison is tight; 4 devices (rows of Z split over the mesh,
sums over rows psum-ed) are checked in tests/scale/test_sharded_eval.py.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from configs.default import get_config
from lr2vq_jax.train import evaluation, hard_codes, input_pipeline, partitioning, trainer
from lr2vq_jax.train.step import make_eval_step


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
  config = get_config("quick")
  stage = trainer.build_stage(config, "quantize", str(tmp_path_factory.mktemp("run")))
  variables = jax.jit(lambda key: stage.model.init(key, stage.sample_input, train=False))(
    jax.random.key(0)
  )
  return config, stage, dict(variables)


def _per_batch(stage, variables, batches) -> dict:
  """The evaluation as it was: the quantize-stage model, DKM and codes inside every batch."""
  step = jax.jit(make_eval_step(stage.model))
  totals = {}
  for batch in batches:
    out = jax.device_get(step(variables, partitioning.global_batch(batch, stage.mesh)))
    for key, value in out.items():
      totals[key] = totals.get(key, 0.0) + float(value)
  count = totals["count"]
  return {"top1": 100 * totals["top1"] / count, "top5": 100 * totals["top5"] / count,
          "loss": totals["loss"] / count}  # fmt: skip


def test_evaluate_computes_codes_once_with_the_per_batch_result(quantized):
  config, stage, variables = quantized
  make_iter = lambda: input_pipeline.build_input(config.data, split="eval")  # noqa: E731
  old = _per_batch(stage, variables, make_iter())
  new = trainer.evaluate(stage.model, variables, make_iter, stage.mesh)
  assert new["top1"] == old["top1"] and new["top5"] == old["top5"]
  assert abs(new["loss"] - old["loss"]) <= 1e-6 * abs(old["loss"])
  # A rebuilt, equal model (the export's evaluations of a finished stage) reuses the compiled step.
  rebuilt = trainer.build_stage(config, "quantize", str(stage.workdir)).model
  assert rebuilt is not stage.model
  jitted = evaluation._jitted_eval_step
  misses = jitted.cache_info().misses
  again = trainer.evaluate(rebuilt, variables, make_iter, stage.mesh)
  assert jitted.cache_info().misses == misses and again == new


def test_frozen_model_has_the_quantize_stage_logits_codes_and_tables(quantized):
  config, stage, variables = quantized
  model, frozen = hard_codes.frozen_model(stage.model, variables, stage.mesh)
  assert model.mode == "frozen" and "z" not in str(jax.tree_util.tree_structure(frozen))
  images = next(input_pipeline.build_input(config.data, split="eval"))["image"]
  expected = jax.jit(lambda v, x: stage.model.apply(v, x, train=False))(variables, images)
  got = jax.jit(lambda v, x: model.apply(v, x, train=False))(frozen, images)
  np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-6, atol=1e-6)
  # anything but a quantize-stage model passes through unchanged
  assert hard_codes.frozen_model(model, frozen, stage.mesh) == (model, frozen)
  assert hard_codes.frozen_model(stage.float_model, variables, stage.mesh)[1] is variables
