"""Bad configs fail before any work with one ConfigError naming the field; nothing is written."""

from __future__ import annotations

import math
import types

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from lr2vq_jax import presets
from lr2vq_jax.core.rules import Rule
from lr2vq_jax.train import checkpointing
from lr2vq_jax.train.config import load_config
from lr2vq_jax.train.input_pipeline import default_data_config
from lr2vq_jax.train.validate import ConfigError, validate_config
from tests.support import train_cli


def quick():
  config = load_config(train_cli.QUICK)
  config.stages = "float,lowrank,quantize,pq,dkm"
  return config


def set_field(config, field: str, value) -> None:
  *parents, leaf = field.split(".")
  node = config
  for p in parents:
    node = node[p]
  with node.ignore_type():
    node[leaf] = value


def expect_error(config, workdir, field: str, match: str | None = None) -> ConfigError:
  with pytest.raises(ConfigError) as info:
    validate_config(config, str(workdir))
  err = info.value
  assert err.field == field, str(err)
  assert str(err).startswith(f"config.{field}") and err.hint and "\n" not in str(err)
  if match:
    assert match in str(err), str(err)
  assert not workdir.exists()  # nothing written
  return err


def test_valid_config_passes_and_writes_nothing(tmp_path):
  validate_config(quick(), str(tmp_path / "wd"))
  assert not (tmp_path / "wd").exists()


BAD = [
  ("model", "resnet9", "unknown value"),
  ("data.name", "mnist", "unknown value"),
  ("preset", "nope_blocks", "unknown value"),
  ("stages", "float,distill", "unknown stage 'distill'"),
  ("stages", "", "names no stage"),
  ("float.optimizer", "adamw", "unknown value"),
  ("quantize.schedule", "linear", "unknown value"),
  ("float.lr", 0.0, "> 0.0"),
  ("lowrank.lr", math.nan, "finite"),
  ("float.num_steps", -1, ">= 0"),
  ("pq.log_every", 0, ">= 1"),
  ("dkm.checkpoint_every", 0, ">= 1"),
  ("float.freeze", ("(",), "not a regex"),
  ("d", -1, "d̃=-1"),
  ("d", 10, "exceeds m of every layer"),
  ("data.image_size", 9, "8x8"),
  ("data.batch_size", 0, ">= 1"),
  ("quant.store", "zip", "unknown value"),
  ("quant.dkm_grad", "implicit", "unknown value"),
  ("quant.tau_alpha", 0.0, "> 0.0"),
  ("quant.kmeans_iters", 0, ">= 1"),
  ("dtype", "float8", "unknown value"),
  ("sharding", "zero3", "unknown value"),
  ("seed", -3, ">= 0"),
]


@pytest.mark.parametrize("field, value, match", BAD, ids=[f"{f}={v!r}" for f, v, _ in BAD])
def test_bad_field(tmp_path, field, value, match):
  config = quick()
  set_field(config, field, value)
  expect_error(config, tmp_path / "wd", field, match)


def test_rule_matching_no_layer(tmp_path):
  config = quick()
  config.preset = "resnet18_small_blocks"  # written for another model
  expect_error(config, tmp_path / "wd", "preset", "matches no layer")


@pytest.mark.parametrize(
  "rule, match",
  [
    (Rule(r"^conv[23]$", k=16, m=7), "m=7"),  # conv2 rows are 32·3·3 = 288, not a multiple of 7
    (types.SimpleNamespace(pattern="^conv2$", k=1, m=9, d=None, skip=False), "k=1"),
    (types.SimpleNamespace(pattern="^conv2$", k=65537, m=9, d=None, skip=False), "k=65537"),
    (types.SimpleNamespace(pattern="^conv2$", k=16, m=9, d=12, skip=False), "d̃=12"),
    (types.SimpleNamespace(pattern="^conv2$", k=16, m=9, d=0, skip=False), "d̃=0"),
  ],
)
def test_bad_rule_in_preset(tmp_path, monkeypatch, rule, match):
  monkeypatch.setitem(presets.PRESETS, "digits_bad", (rule,))
  config = quick()
  config.preset, config.d = "digits_bad", 0
  expect_error(config, tmp_path / "wd", "preset", match)


def test_missing_imagenet(tmp_path):
  config = quick()
  config.data = default_data_config("imagenet2012")
  config.data.data_dir = str(tmp_path / "tfds")
  config.data.manual_dir = str(tmp_path / "manual")
  config.data.image_size = 16
  expect_error(config, tmp_path / "wd", "data.manual_dir", "ILSVRC2012_img_train.tar")
  assert not (tmp_path / "tfds").exists()


def test_unwritable_workdir(tmp_path):
  (tmp_path / "file").write_text("x")
  expect_error(quick(), tmp_path / "file" / "wd", "workdir", "not a directory")


def _fake_stage_checkpoint(directory, stage: str, model: str) -> None:
  import jax.numpy as jnp

  with checkpointing.Checkpointer(checkpointing.checkpoint_dir(directory)) as ckpt:
    ckpt.save(3, {"x": jnp.zeros(2)}, {"stage": stage, "model": model, "step": 3})


@pytest.mark.parametrize(
  "stage, model, match",
  [
    ("lowrank", "digits_cnn", "holds stage 'lowrank'"),
    ("float", "resnet18", "of model 'resnet18'"),
  ],
)
def test_init_from_wrong_stage_or_model(tmp_path, stage, model, match):
  _fake_stage_checkpoint(tmp_path / "other", stage, model)
  config = quick()
  config.stages, config.lowrank.init_from = "lowrank", str(tmp_path / "other")
  expect_error(config, tmp_path / "wd", "lowrank.init_from", match)


def test_init_from_without_checkpoint(tmp_path):
  config = quick()
  config.stages, config.quantize.init_from = "quantize", str(tmp_path / "empty")
  expect_error(config, tmp_path / "wd", "quantize.init_from", "holds no checkpoint")


def test_stage_without_its_previous_stage(tmp_path):
  config = quick()
  config.stages = "lowrank"
  expect_error(config, tmp_path / "wd", "stages", "starts from 'float'")


# ----------------------------------------------------------------------------- fuzzing

WRONG_TYPE = st.one_of(st.none(), st.booleans(), st.text(max_size=4), st.just([1]))
POS_INT = st.integers(1, 10**6)
NOT_POS_INT = st.one_of(st.integers(max_value=0), st.floats(allow_nan=True), WRONG_TYPE)
NONNEG_INT = st.integers(0, 10**6)
NEG_INT = st.one_of(st.integers(max_value=-1), st.floats(), WRONG_TYPE)
POS_FLOAT = st.floats(1e-8, 1e3)
NOT_POS_FLOAT = st.one_of(
  st.floats(max_value=0.0), st.sampled_from([math.nan, math.inf, -math.inf]), WRONG_TYPE
)
NONNEG_FLOAT = st.floats(0.0, 1e3)
NEG_FLOAT = st.one_of(
  st.floats(max_value=-1e-12), st.sampled_from([math.nan, math.inf]), WRONG_TYPE
)


def _names(valid):
  return st.one_of(st.text(max_size=10), st.integers()).filter(lambda v: v not in valid)


FIELDS = {  # field: (valid values, invalid values)
  "model": (st.just("digits_cnn"), _names(("digits_cnn", "resnet18", "resnet34", "resnet50"))),
  "dtype": (st.sampled_from(["float32", "bfloat16"]), _names(("float32", "bfloat16", "float16"))),
  "seed": (NONNEG_INT, NEG_INT),
  "sharding": (st.sampled_from(["replicated", "fsdp"]), _names(("replicated", "fsdp"))),
  "preset": (
    st.sampled_from(["digits_small_blocks", "digits_large_blocks"]),
    _names(tuple(presets.PRESETS)),
  ),
  "d": (st.integers(0, 9), st.one_of(st.integers(max_value=-1), st.integers(19, 10**4))),
  "data.batch_size": (POS_INT, NOT_POS_INT),
  "data.eval_batch_size": (POS_INT, NOT_POS_INT),
  "data.name": (st.just("digits"), _names(("digits", "cifar10", "imagenet2012"))),
  "quant.store": (st.sampled_from(["codebook", "factored"]), _names(("codebook", "factored"))),
  "quant.tau_alpha": (POS_FLOAT, NOT_POS_FLOAT),
  "quant.commitment": (NONNEG_FLOAT, NEG_FLOAT),
  "quant.dkm_iters": (POS_INT, NOT_POS_INT),
  "quant.chunk_size": (POS_INT, NOT_POS_INT),
}
for _s in ("float", "lowrank", "quantize", "pq", "dkm"):
  FIELDS.update({
    f"{_s}.lr": (POS_FLOAT, NOT_POS_FLOAT),
    f"{_s}.num_steps": (NONNEG_INT, NEG_INT),
    f"{_s}.num_epochs": (NONNEG_FLOAT, NEG_FLOAT),
    f"{_s}.warmup_steps": (NONNEG_INT, NEG_INT),
    f"{_s}.weight_decay": (NONNEG_FLOAT, NEG_FLOAT),
    f"{_s}.grad_clip": (NONNEG_FLOAT, NEG_FLOAT),
    f"{_s}.log_every": (POS_INT, NOT_POS_INT),
    f"{_s}.checkpoint_every": (POS_INT, NOT_POS_INT),
    f"{_s}.optimizer": (st.sampled_from(["adam", "sgd"]), _names(("adam", "sgd"))),
    f"{_s}.schedule": (st.sampled_from(["cosine", "constant"]), _names(("cosine", "constant"))),
  })  # fmt: skip


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), field=st.sampled_from(sorted(FIELDS)), valid=st.booleans())
def test_fuzz_fields(tmp_path_factory, data, field, valid):
  workdir = tmp_path_factory.mktemp("fuzz") / "wd"
  config = quick()
  good, bad = FIELDS[field]
  value = data.draw(good if valid else bad)
  set_field(config, field, value)
  node = config
  for part in field.split("."):
    node = node[part]
  assume(type(node) is type(value))  # ConfigDict converts some values (False -> 0.0)
  if valid:
    validate_config(config, str(workdir))
    assert not workdir.exists()
  else:
    expect_error(config, workdir, field)
