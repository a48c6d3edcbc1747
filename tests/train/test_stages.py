"""The stage registry: every list of stages derives from it, and its RNG numbers never move."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from lr2vq_jax.train import recipes, run_config, stages
from lr2vq_jax.train.config import config_rules, load_config, stage_rules
from lr2vq_jax.train.stage_setup import build_stage
from lr2vq_jax.train.validate import ConfigError, validate_config
from tests.support.paths import QUICK


def test_the_table():
  assert stages.NAMES == ("float", "lowrank", "quantize", "pq", "dkm")
  assert {n: s.mode for n, s in stages.STAGES.items()} == {
    "float": "float",
    "lowrank": "lowrank",
    "quantize": "quantize",
    "pq": "frozen",
    "dkm": "quantize",
  }
  assert {n: s.label for n, s in stages.STAGES.items() if s.label} == {
    "float": "float",
    "quantize": "LR²VQ",
    "pq": "PQ",
    "dkm": "vanilla DKM",
  }
  assert [n for n, s in stages.STAGES.items() if s.exports] == ["quantize", "pq", "dkm"]
  assert [n for n, s in stages.STAGES.items() if s.vanilla] == ["pq", "dkm"]
  for spec in stages.STAGES.values():  # a chain back to the root, a conversion for each link
    assert (spec.previous is None) == (spec.convert is None) == (spec.name == stages.ROOT)
    assert stages.upstream(spec.name)[:1] in ((), (stages.ROOT,))
  assert stages.upstream("quantize") == ("float", "lowrank")
  assert recipes.METHOD_STAGES == {
    "lr2vq": "float,lowrank,quantize",
    "pq": "float,pq",
    "dkm": "float,dkm",
  }


def test_seed_folds_are_the_former_numbers():
  """Each stage's RNG stream was fold_in(seed, its index among the sorted names): results stay
  reproducible bit for bit only if these numbers never change."""
  former = sorted(["float", "lowrank", "quantize", "pq", "dkm"])
  assert {n: s.seed_fold for n, s in stages.STAGES.items()} == {n: former.index(n) for n in former}
  config = load_config(QUICK)
  config.seed = 7
  for name in stages.NAMES:
    key = build_stage(config, name, "/nonexistent").rng
    want = jax.random.fold_in(jax.random.key(7), former.index(name))
    np.testing.assert_array_equal(jax.random.key_data(key), jax.random.key_data(want))


@pytest.mark.parametrize(
  "value, names",
  [
    ("float,lowrank,quantize", ["float", "lowrank", "quantize"]),
    (" float , pq ,", ["float", "pq"]),
    (("float", " dkm"), ["float", "dkm"]),
    (["quantize"], ["quantize"]),
  ],
)
def test_parse_stages(value, names):
  assert stages.parse_stages(value) == names


@pytest.mark.parametrize(
  "value, match",
  [
    ("", "names no stage"),
    (" , ", "names no stage"),
    ([], "names no stage"),
    ("float,distill", "unknown stage 'distill'"),
    ("float,lowrank,float", "listed twice"),
    (3, "not a comma-separated list"),
    (["float", 3], "not a comma-separated list"),
  ],
)
def test_parse_stages_rejects(value, match):
  with pytest.raises(ValueError, match=match):
    stages.parse_stages(value)


def test_validation_reports_bad_stages_on_the_stages_field(tmp_path):
  config = load_config(QUICK)
  config.stages = "float,float"
  with pytest.raises(ConfigError, match="listed twice") as info:
    validate_config(config, str(tmp_path / "wd"))
  assert info.value.field == "stages" and "float,lowrank,quantize,pq,dkm" in info.value.hint


def test_baselines_use_vanilla_rules():
  config = load_config(QUICK)
  for name, spec in stages.STAGES.items():
    kept = [r for r in stage_rules(config, name) if not r.skip]
    if spec.vanilla:
      assert all(r.d in (None, r.m) for r in kept), name
    else:
      assert stage_rules(config, name) == config_rules(config), name


def test_upstream_settings_count_for_a_rerun():
  """run_config compares a stage's own section and those of the stages it starts from."""
  old = {"float": {"lr": 1.0}, "lowrank": {"lr": 1.0}, "pq": {"lr": 1.0}, "profile_steps": 0}
  for section, stage, counts in [
    ("float", "quantize", True),
    ("lowrank", "quantize", True),
    ("pq", "quantize", False),
    ("lowrank", "dkm", False),
    ("profile_steps", "quantize", False),
  ]:
    new = {**old, section: 3 if section == "profile_steps" else {"lr": 2.0}}
    assert bool(run_config.differences(old, new, stage)) == counts, (section, stage)
