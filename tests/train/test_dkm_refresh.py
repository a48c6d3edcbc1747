"""The train step carries top-t DKM's lists (`quant.dkm_refresh`) in its state, rows-sharded."""

from __future__ import annotations

import json
import textwrap

import jax
import numpy as np
import pytest
from etils import epath
from flax import traverse_util

from lr2vq_jax.core import dkm as dkm_lib
from lr2vq_jax.nn import DKM_LISTS
from lr2vq_jax.train import checkpointing, input_pipeline, partitioning, run_config, trainer
from lr2vq_jax.train.config import load_config
from lr2vq_jax.train.state import create_train_state, with_model_lists
from lr2vq_jax.train.step import make_train_step
from lr2vq_jax.train.validate import ConfigError, validate_config
from tests.support.devices import run_script
from tests.support.paths import QUICK


def _stage(tmp_path, refresh: int, warm: bool = False):
  """The quick quantize stage with `dkm_refresh=refresh` (cold start unless `warm`: the lists
  are ranked against the codebook itself; tests/train/test_dkm_warm_step.py covers the offset)."""
  config = load_config(QUICK)
  config.quant.update(dkm_refresh=refresh, dkm_warm=warm)
  return config, trainer.build_stage(config, "quantize", str(tmp_path))


def test_three_steps_with_refresh_two_carry_the_lists(tmp_path):
  config, stage = _stage(tmp_path, 2)
  target = trainer.abstract_state(stage)
  state = create_train_state(
    stage.model, stage.tx, stage.sample_input, stage.mesh, jax.random.key(0)
  )
  counts = [
    v
    for k, v in traverse_util.flatten_dict(state.model_state[DKM_LISTS]).items()
    if k[-1] == "count"
  ]
  assert counts and all(int(c) == 0 for c in counts)
  step = partitioning.jit_train_step(
    make_train_step(stage.model, stage.cfg, stage.tx), target, stage.mesh
  )
  batches = input_pipeline.build_input(config.data, split="train", start_step=0)
  structure = jax.tree.structure(state)
  history = []
  for _ in range(3):
    history.append(jax.device_get(state))
    state, metrics = step(state, partitioning.global_batch(next(batches), stage.mesh))
    assert bool(metrics["finite"]) and jax.tree.structure(state) == structure
  # Ranked at step 2 against that step's params (count 2 % 2 == 0), carried at step 1.
  lists = traverse_util.flatten_dict(jax.device_get(state.model_state[DKM_LISTS]))
  params = traverse_util.flatten_dict(history[2].params)
  before = [traverse_util.flatten_dict(h.model_state[DKM_LISTS]) for h in history[1:]]
  layers = {key[:-1] for key in lists}
  assert layers
  for layer in layers:
    assert int(lists[(*layer, "count")]) == 3
    want = dkm_lib.neighbors(
      params[(*layer, "z")], params[(*layer, "codebook")], top_t=config.quant.dkm_top_t
    )
    np.testing.assert_array_equal(lists[(*layer, "neighbors")], want)
    np.testing.assert_array_equal(
      before[0][(*layer, "neighbors")], before[1][(*layer, "neighbors")]
    )
    assert not np.array_equal(before[1][(*layer, "neighbors")], want)  # step 2 re-ranked


def test_refresh_one_keeps_no_lists_and_converted_variables_get_zeros(tmp_path):
  _, stage = _stage(tmp_path, 1)
  assert DKM_LISTS not in trainer.abstract_state(stage).model_state  # nothing carried
  default = trainer.build_stage(load_config(QUICK), "quantize", str(tmp_path))
  assert default.layer_config.dkm_refresh == 16 and default.layer_config.dkm_warm  # fast path
  carried = traverse_util.flatten_dict(trainer.abstract_state(default).model_state[DKM_LISTS])
  assert {k[-1] for k in carried} == {"neighbors", "count", "offset"}
  _, stage4 = _stage(tmp_path, 4)
  target = trainer.abstract_state(stage4)
  wanted = target.model_state[DKM_LISTS]
  got = with_model_lists({"params": {}}, target)[DKM_LISTS]  # a conversion's variables: none
  assert jax.tree.structure(got) == jax.tree.structure(wanted)
  assert all(not np.any(leaf) for leaf in jax.tree.leaves(got))
  assert DKM_LISTS not in with_model_lists(
    {"params": {}, DKM_LISTS: got}, trainer.abstract_state(stage)
  )


def test_refresh_below_one_is_a_config_error(tmp_path):
  config = load_config(QUICK)
  config.quant.dkm_refresh = 0
  with pytest.raises(ConfigError, match=r"quant\.dkm_refresh"):
    validate_config(config, str(tmp_path))


SHARDED = textwrap.dedent(
  """
  import dataclasses, sys
  import jax, numpy as np
  from flax import traverse_util
  from jax.sharding import PartitionSpec as P
  from configs.default import get_config
  from lr2vq_jax.nn import DKM_LISTS
  from lr2vq_jax.train import input_pipeline, partitioning, trainer
  from lr2vq_jax.train.state import create_train_state
  from lr2vq_jax.train.step import make_train_step

  config = get_config("quick")
  config.quant.update(dkm_refresh=2, dkm_warm=True, dkm_iters=1)  # lists and the warm offset
  base = trainer.build_stage(config, "quantize", sys.argv[1])
  assert base.mesh.shape["data"] == 8
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
    for _ in range(2):  # a ranking step and a carried one
      state, metrics = step(state, partitioning.global_batch(batch, stage.mesh))
      losses.append(float(metrics["loss"]))
    flat = traverse_util.flatten_dict(state.model_state[DKM_LISTS])
    lists = {k: v for k, v in flat.items() if k[-1] == "neighbors"}
    if devices == 8:
      specs = [v.sharding.spec for v in lists.values()]
      assert all(s == P("data", None) for s in specs), specs
    offsets = {k: v for k, v in flat.items() if k[-1] == "offset"}
    out[devices] = (losses, jax.device_get(lists), jax.device_get(offsets))
  # The same math in other summation orders: losses and warm offsets to rounding, rankings up to
  # near-ties.
  np.testing.assert_allclose(out[8][0], out[1][0], rtol=1e-5)
  assert out[1][1] and out[1][2]
  for key, v in out[1][1].items():
    assert np.mean(out[8][1][key] == v) > 0.999, key
  for key, v in out[1][2].items():
    np.testing.assert_allclose(out[8][2][key], v, atol=1e-4)
  print("OK")
  """
)


def test_sharded_step_with_carried_lists_and_offsets_equals_one_device(tmp_path):
  assert "OK" in run_script(SHARDED, str(tmp_path / "work"), devices=8, tmp=tmp_path)


def test_runs_written_before_dkm_refresh_resume_and_a_change_is_flagged(tmp_path):
  """A run's config.json from before `dkm_refresh` / `dkm_warm` existed reads as 1 / False:
  resuming it under the new defaults stops and names both fields; the old values resume."""
  old_config = load_config(QUICK)
  old_config.quant.update(dkm_refresh=1, dkm_warm=False)
  old = run_config.resolved(old_config, "quantize")
  del old["quant"]["dkm_refresh"], old["quant"]["dkm_warm"]
  new = run_config.resolved(load_config(QUICK), "quantize")
  assert run_config.differences(old, run_config.resolved(old_config, "quantize"), "quantize") == []
  assert run_config.differences(old, new, "quantize") == [
    "quant.dkm_refresh: 1 → 16",
    "quant.dkm_warm: False → True",
  ]
  stage_dir = tmp_path / "quantize"
  (epath.Path(checkpointing.checkpoint_dir(str(stage_dir))) / "5").mkdir(parents=True)
  run_config.config_path(str(stage_dir)).write_text(json.dumps(old))
  with pytest.raises(run_config.ConfigChangedError) as err:
    run_config.check_unchanged(load_config(QUICK), str(tmp_path), ["quantize"])
  assert "quant.dkm_refresh: 1 → 16" in str(err.value)
  assert "quant.dkm_warm: False → True" in str(err.value)
  run_config.check_unchanged(old_config, str(tmp_path), ["quantize"])  # the old values resume
