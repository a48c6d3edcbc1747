"""`quant.dkm_warm`: validated, and runs written before it existed read as cold."""

from __future__ import annotations

import json

import pytest

from lr2vq_jax.train import run_config
from lr2vq_jax.train.config import load_config
from lr2vq_jax.train.validate import ConfigError, validate_config
from tests.support.paths import QUICK


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


# The warm train steps (the offset carried from one step to the next) share their compiled step
# with the carried lists': tests/train/test_dkm_refresh.py::
# test_two_warm_steps_carry_the_refinement_offset; the 8-device sharded warm step = one device
# (losses, offsets, lists): test_sharded_step_with_carried_lists_and_offsets_equals_one_device.
