"""The train step carries warm-started DKM's offsets (`quant.dkm_warm`) in its state."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

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
from tests.support.devices import child_env
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


SHARDED = textwrap.dedent(
  """
  import dataclasses, sys
  import jax, numpy as np
  from flax import traverse_util
  from configs.default import get_config
  from lr2vq_jax.nn import DKM_LISTS
  from lr2vq_jax.train import input_pipeline, partitioning, trainer
  from lr2vq_jax.train.state import create_train_state
  from lr2vq_jax.train.step import make_train_step

  config = get_config("quick")
  config.quant.update(dkm_warm=True, dkm_iters=1, dkm_refresh=2)
  base = trainer.build_stage(config, "quantize", sys.argv[1])
  batch = next(input_pipeline.build_input(config.data, split="train", start_step=0))
  out = {}
  for devices in (8, 1):
    stage = dataclasses.replace(base, mesh=partitioning.make_mesh(devices))
    target = trainer.abstract_state(stage)
    state = create_train_state(
      stage.model, stage.tx, stage.sample_input, stage.mesh, jax.random.key(0)
    )
    step = partitioning.jit_train_step(
      make_train_step(stage.model, stage.cfg, stage.tx), target, stage.mesh
    )
    losses = []
    for _ in range(2):
      state, metrics = step(state, partitioning.global_batch(batch, stage.mesh))
      losses.append(float(metrics["loss"]))
    flat = traverse_util.flatten_dict(jax.device_get(state.model_state[DKM_LISTS]))
    out[devices] = (losses, {k: v for k, v in flat.items() if k[-1] == "offset"})
  # The same math in other summation orders: losses and offsets to rounding.
  np.testing.assert_allclose(out[8][0], out[1][0], rtol=1e-5)
  assert out[1][1]
  for key, v in out[1][1].items():
    np.testing.assert_allclose(out[8][1][key], v, atol=1e-4)
  print("OK")
  """
)


def test_sharded_warm_step_equals_one_device(tmp_path):
  run = subprocess.run(
    [sys.executable, "-c", SHARDED, str(tmp_path / "work")],
    env=child_env(8, tmp_path),
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert run.returncode == 0 and "OK" in run.stdout, run.stderr[-3000:]
