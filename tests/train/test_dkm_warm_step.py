"""The train step carries warm-started DKM's offsets (`quant.dkm_warm`) in its state."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from flax import traverse_util

from lr2vq_jax.core import dkm as dkm_lib
from lr2vq_jax.nn import DKM_LISTS
from lr2vq_jax.train import input_pipeline, partitioning, run_config, trainer
from lr2vq_jax.train.config import load_config
from lr2vq_jax.train.state import create_train_state
from lr2vq_jax.train.step import make_train_step
from lr2vq_jax.train.validate import ConfigError, validate_config
from tests.support.paths import QUICK


def test_two_warm_steps_carry_the_refinement_offset(tmp_path):
  config = load_config(QUICK)
  config.quant.update(dkm_warm=True, dkm_iters=1, dkm_refresh=2)
  stage = trainer.build_stage(config, "quantize", str(tmp_path))
  target = trainer.abstract_state(stage)
  state = create_train_state(
    stage.model, stage.tx, stage.sample_input, stage.mesh, jax.random.key(0)
  )
  step = partitioning.jit_train_step(
    make_train_step(stage.model, stage.cfg, stage.tx), target, stage.mesh
  )
  batches = input_pipeline.build_input(config.data, split="train", start_step=0)
  history = []
  for _ in range(2):
    history.append(jax.device_get(state))
    state, metrics = step(state, partitioning.global_batch(next(batches), stage.mesh))
    assert bool(metrics["finite"])
  flat = [traverse_util.flatten_dict(h.model_state[DKM_LISTS]) for h in (*history, state)]
  params = traverse_util.flatten_dict(history[0].params)
  tau = traverse_util.flatten_dict(history[0].model_state["quant"])
  layers = [key[:-1] for key in flat[0] if key[-1] == "offset"]
  assert layers
  for layer in layers:
    assert not np.any(flat[0][(*layer, "offset")])  # converted / initial state: a cold start
    z, c = params[(*layer, "z")], params[(*layer, "codebook")]
    # Step 0 starts cold: its offset is one top-t update from the codebook.
    _, refined = dkm_lib.dkm(z, c, tau=tau[(*layer, "tau")], iters=1, top_t=config.quant.dkm_top_t)
    np.testing.assert_allclose(flat[1][(*layer, "offset")], refined - c, atol=1e-5)
    assert not np.array_equal(flat[2][(*layer, "offset")], flat[1][(*layer, "offset")])


def test_warm_must_be_set_and_old_runs_read_as_cold(tmp_path):
  config = load_config(QUICK)
  config.quant.dkm_warm = None
  with pytest.raises(ConfigError, match=r"quant\.dkm_warm"):
    validate_config(config, str(tmp_path))
  cold = load_config(QUICK)
  cold.quant.dkm_warm = False
  new = run_config.resolved(cold, "quantize")
  old = json.loads(json.dumps(new))
  del old["quant"]["dkm_warm"]  # a run's config.json from before the field existed
  assert run_config.differences(old, new, "quantize") == []
  new = run_config.resolved(load_config(QUICK), "quantize")  # the default: warm
  assert run_config.differences(old, new, "quantize") == ["quant.dkm_warm: False → True"]


# The 8-device sharded warm step = one device (losses, offsets, lists): tests/train/
# test_dkm_refresh.py::test_sharded_step_with_carried_lists_and_offsets_equals_one_device.
