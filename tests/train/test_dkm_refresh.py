"""The train step carries top-t DKM's lists (`quant.dkm_refresh`) and warm-started DKM's offsets
(`quant.dkm_warm`) in its state, rows-sharded."""

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
from lr2vq_jax.train import checkpointing, run_config, trainer
from lr2vq_jax.train.config import load_config
from lr2vq_jax.train.state import with_model_lists
from lr2vq_jax.train.validate import ConfigError, validate_config
from tests.support.devices import run_script
from tests.support.paths import QUICK
from tests.support.warm_steps import run_steps, warm_config


def _stage(tmp_path, refresh: int, warm: bool = False):
  """The quick quantize stage with `dkm_refresh=refresh` (cold start unless `warm`)."""
  config = load_config(QUICK)
  config.quant.update(dkm_refresh=refresh, dkm_warm=warm)
  return config, trainer.build_stage(config, "quantize", str(tmp_path))


@pytest.fixture(scope="module")
def warm_steps(tmp_path_factory):
  """Three train steps of the quick quantize stage with `dkm_refresh=2` and warm-started DKM
  (`dkm_warm`, one iteration) on one device: (config, the states before each step and after the
  last, the losses). One compiled step for the lists', the offsets' and the sharded tests."""
  config = warm_config(load_config(QUICK))
  structure, history, losses = None, [], []
  for _, state, metrics in run_steps(config, str(tmp_path_factory.mktemp("warm")), 3):
    structure = structure or jax.tree.structure(state)
    assert jax.tree.structure(state) == structure
    history.append(jax.device_get(state))
    if metrics is not None:
      assert bool(metrics["finite"])
      losses.append(float(metrics["loss"]))
  return config, history, losses


def test_three_steps_with_refresh_two_carry_the_lists(warm_steps):
  config, history, _ = warm_steps
  counts = [
    v
    for k, v in traverse_util.flatten_dict(history[0].model_state[DKM_LISTS]).items()
    if k[-1] == "count"
  ]
  assert counts and all(int(c) == 0 for c in counts)
  # Ranked at step 0 (cold: no offset yet) and step 2 (count 2 % 2 == 0) against DKM's starting
  # centroids, codebook + the carried warm offset; carried at step 1.
  flat = [traverse_util.flatten_dict(h.model_state[DKM_LISTS]) for h in history]
  lists = flat[3]
  layers = {key[:-1] for key in lists}
  assert layers
  top_t = config.quant.dkm_top_t
  for layer in layers:
    assert int(lists[(*layer, "count")]) == 3
    ranked = {}
    for at in (0, 2):
      params = traverse_util.flatten_dict(history[at].params)
      start = params[(*layer, "codebook")] + flat[at][(*layer, "offset")]
      ranked[at] = dkm_lib.neighbors(params[(*layer, "z")], start, top_t=top_t)
    assert not np.any(flat[0][(*layer, "offset")])
    np.testing.assert_array_equal(flat[1][(*layer, "neighbors")], ranked[0])
    np.testing.assert_array_equal(lists[(*layer, "neighbors")], ranked[2])
    np.testing.assert_array_equal(flat[1][(*layer, "neighbors")], flat[2][(*layer, "neighbors")])
    assert not np.array_equal(flat[2][(*layer, "neighbors")], ranked[2])  # step 2 re-ranked


def test_two_warm_steps_carry_the_refinement_offset(warm_steps):
  """`dkm_warm`: each step's DKM starts at codebook + the offset the previous step carried."""
  config, history, _ = warm_steps
  flat = [traverse_util.flatten_dict(h.model_state[DKM_LISTS]) for h in history]
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
  import sys
  import jax, numpy as np
  from flax import traverse_util
  from jax.sharding import PartitionSpec as P
  from configs.default import get_config
  from lr2vq_jax.nn import DKM_LISTS
  from tests.support.warm_steps import run_steps, warm_config

  losses = []  # a ranking step and a carried one
  for stage, state, metrics in run_steps(warm_config(get_config("quick")), sys.argv[1], 2):
    assert stage.mesh.shape["data"] == 8
    if metrics is not None:
      losses.append(float(metrics["loss"]))
  flat = traverse_util.flatten_dict(state.model_state[DKM_LISTS])
  specs = [v.sharding.spec for k, v in flat.items() if k[-1] == "neighbors"]
  assert specs and all(s == P("data", None) for s in specs), specs
  carried = {"/".join(k): np.asarray(v) for k, v in jax.device_get(flat).items()}
  np.savez(sys.argv[2], losses=np.asarray(losses), **carried)
  print("OK")
  """
)


def test_sharded_step_with_carried_lists_and_offsets_equals_one_device(warm_steps, tmp_path):
  """Two steps on 8 devices (rows of Z split over the mesh, in a child process) = the same two
  steps on one device (`warm_steps`, this process)."""
  _, history, losses = warm_steps
  out = tmp_path / "sharded.npz"
  assert "OK" in run_script(SHARDED, str(tmp_path / "work"), str(out), devices=8, tmp=tmp_path)
  with np.load(out) as f:
    sharded = {k: f[k] for k in f.files}
  one = {
    "/".join(k): v for k, v in traverse_util.flatten_dict(history[2].model_state[DKM_LISTS]).items()
  }
  # The same math in other summation orders: losses and warm offsets to rounding, rankings up to
  # near-ties.
  np.testing.assert_allclose(sharded["losses"], losses[:2], rtol=1e-5)
  lists = [k for k in one if k.endswith("/neighbors")]
  offsets = [k for k in one if k.endswith("/offset")]
  assert lists and offsets
  for key in lists:
    assert np.mean(sharded[key] == one[key]) > 0.999, key
  for key in offsets:
    np.testing.assert_allclose(sharded[key], one[key], atol=1e-4)


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
