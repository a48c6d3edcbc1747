"""Checks an experiment config before any work: one `ConfigError` naming the field and the fix.

`validate_config(config, workdir)` reads files (config, checkpoints' JSON meta, dataset markers)
but never writes: no workdir, no logs, no checkpoints. Rules are checked against the float model's
shapes traced abstractly (`plan_model`), so a wrong m or a rule that matches nothing fails in
seconds instead of after the previous stage trained.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import ml_collections

from lr2vq_jax import paths, presets
from lr2vq_jax.core import dkm as dkm_lib
from lr2vq_jax.core.codec import MAX_K
from lr2vq_jax.core.kernel import QuantConfig
from lr2vq_jax.core.rules import parse_rules
from lr2vq_jax.core.subvectors import SubvectorError
from lr2vq_jax.models import MODELS
from lr2vq_jax.nn import plan_model
from lr2vq_jax.nn.recorded import DEFAULTS, PROJECTIONS, STORES
from lr2vq_jax.train import checkpointing, input_pipeline, partitioning, stages
from lr2vq_jax.train.config import config_model, config_rules, rules_spec
from lr2vq_jax.train.step import OPTIMIZERS, SCHEDULES

DTYPES = ("float32", "bfloat16", "float16")
DATASETS = tuple(input_pipeline.NUM_CLASSES)
NATIVE_SIZE = input_pipeline.NATIVE_IMAGE_SIZE


class ConfigError(ValueError):
  """A config value that cannot work: `field` is its dotted path, `hint` says how to fix it."""

  def __init__(self, field: str, message: str, hint: str):
    super().__init__(f"config.{field}: {message}")
    self.field = field
    self.hint = hint


def _get(config: ml_collections.ConfigDict, field: str, default: Any = None) -> Any:
  node: Any = config
  for part in field.split("."):
    if not hasattr(node, "get") or part not in node:
      return default
    node = node[part]
  return node


def _is_int(v: Any) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
  return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def _int(config, field: str, *, low: int, high: int | None = None, default: Any = 0) -> int:
  v = _get(config, field, default)
  if not _is_int(v) or v < low or (high is not None and v > high):
    span = f">= {low}" if high is None else f"in [{low}, {high}]"
    raise ConfigError(field, f"{v!r} is not an integer {span}", f"set --config.{field} to one")
  return v


def _number(config, field: str, *, low: float, strict: bool = False, default: Any = 0.0) -> float:
  v = _get(config, field, default)
  if not _is_number(v) or v < low or (strict and v == low):
    rel = ">" if strict else ">="
    raise ConfigError(
      field, f"{v!r} is not a finite number {rel} {low}", f"set --config.{field} to one"
    )
  return float(v)


def _choice(config, field: str, choices: Sequence[str], default: Any = None) -> str:
  v = _get(config, field, default)
  if v not in choices:
    raise ConfigError(
      field, f"unknown value {v!r}", f"choose one of: {', '.join(map(str, choices))}"
    )
  return v


def _patterns(config, field: str) -> None:
  for p in _get(config, field, ()) or ():
    try:
      re.compile(p)
    except (re.error, TypeError) as e:
      raise ConfigError(field, f"{p!r} is not a regex ({e})", "fix the pattern") from None


def _check_stages(config: ml_collections.ConfigDict) -> list[str]:
  """`config.stages` as a list (`stages.parse_stages`), every stage with a config section."""
  try:
    names = stages.parse_stages(_get(config, "stages"))
  except ValueError as e:
    raise ConfigError(
      "stages",
      str(e),
      f"list some of {', '.join(stages.NAMES)}, comma-separated, each once "
      f"(e.g. --config.stages={','.join(stages.NAMES)})",
    ) from None
  for name in names:
    if name not in config:
      raise ConfigError(
        name,
        "section missing",
        f"add config.{name} (see configs/default.py) or drop it from stages",
      )
  return names


def _check_stage(config, name: str) -> None:
  s = name
  _choice(config, f"{s}.optimizer", OPTIMIZERS)
  _choice(config, f"{s}.schedule", SCHEDULES)
  _number(config, f"{s}.lr", low=0.0, strict=True)
  _int(config, f"{s}.num_steps", low=0)
  _number(config, f"{s}.num_epochs", low=0.0)
  for field in ("warmup_steps", "max_steps_this_run"):
    _int(config, f"{s}.{field}", low=0)
  for field in ("final_lr_factor", "weight_decay", "grad_clip", "tau_alpha"):
    _number(config, f"{s}.{field}", low=0.0)
  _number(config, f"{s}.tau_final_factor", low=0.0, strict=True, default=1.0)
  _number(config, f"{s}.distill_temperature", low=0.0, strict=True, default=1.0)
  _int(config, f"{s}.bn_reestimate_batches", low=0, default=0)
  distill = _number(config, f"{s}.distill", low=0.0, default=0.0)
  if distill > 1.0:
    raise ConfigError(f"{s}.distill", f"weight {distill}", "use a weight in [0, 1]")
  if distill > 0 and s == stages.ROOT:
    raise ConfigError(f"{s}.distill", f"the {s} stage is the teacher", f"set {s}.distill=0")
  _int(config, f"{s}.log_every", low=1, default=1)
  _int(config, f"{s}.checkpoint_every", low=1, default=1)
  if _get(config, f"{s}.optimizer") == "sgd":
    _number(config, f"{s}.momentum", low=0.0, default=0.9)
  _patterns(config, f"{s}.freeze")
  _patterns(config, f"{s}.weight_decay_exclude")


def _check_data(config) -> None:
  name = _choice(config, "data.name", DATASETS)
  size = _int(config, "data.image_size", low=1)
  if name in NATIVE_SIZE and size != NATIVE_SIZE[name]:
    raise ConfigError(
      "data.image_size", f"{name} images are {NATIVE_SIZE[name]}x{NATIVE_SIZE[name]}, got {size}",
      f"set --config.data.image_size={NATIVE_SIZE[name]}",
    )  # fmt: skip
  _int(config, "data.batch_size", low=1)
  _int(config, "data.eval_batch_size", low=1)
  if name == "imagenet2012":
    _check_imagenet(config.data)


def _check_imagenet(data: ml_collections.ConfigDict) -> None:
  """Prepared, mocked (tests), or preparable from manual_dir; otherwise the fix, cheaply."""
  status = input_pipeline.imagenet_status(data.get("data_dir"), data.get("manual_dir"))
  if status.ready or (status.have_tars and data.get("prepare_if_missing", False)):
    return
  root, manual = status.root, status.manual
  raise ConfigError(
    "data.manual_dir",
    f"imagenet2012 is not prepared under data_dir={root!r} and {manual!r} lacks "
    "ILSVRC2012_img_train.tar / ILSVRC2012_img_val.tar",
    "download both archives there (or set --config.data.manual_dir to their folder, "
    "prepare_if_missing=True), or point --config.data.data_dir at a prepared tfds dir",
  )


def _check_quant_section(config) -> None:
  _choice(config, "quant.store", STORES)
  _choice(config, "quant.projection", PROJECTIONS, default=DEFAULTS["projection"])
  _choice(config, "quant.dkm_grad", dkm_lib.GRADS, default=dkm_lib.GRADS[0])
  _number(config, "quant.tau_alpha", low=0.0, strict=True)
  _number(config, "quant.commitment", low=0.0)
  for field in ("dkm_iters", "kmeans_iters", "chunk_size"):
    _int(config, f"quant.{field}", low=1, default=1)
  _int(config, "quant.dkm_top_t", low=0, default=dkm_lib.TOP_T)  # 0: all k centroids
  _int(config, "quant.dkm_refresh", low=1, default=QuantConfig.dkm_refresh)  # 1: rank every step
  _choice(
    config, "quant.dkm_warm", (False, True), default=QuantConfig.dkm_warm
  )  # True: warm-started DKM


def check_rules(rules: Sequence[Any], model, sample, *, field: str = "preset") -> dict:
  """Every rule sane (k, m, d̃) and matching a layer whose rows m divides; returns the plan."""
  for rule in rules:
    if rule.skip:
      continue
    if not _is_int(rule.k) or not 2 <= rule.k <= MAX_K:
      raise ConfigError(field, f"rule {rule.pattern!r}: k={rule.k!r}", f"k must be in [2, {MAX_K}]")
    if not _is_int(rule.m) or rule.m < 1:
      raise ConfigError(field, f"rule {rule.pattern!r}: m={rule.m!r}", "m must be an integer >= 1")
    if rule.d is not None and (not _is_int(rule.d) or not 1 <= rule.d <= rule.m):
      raise ConfigError(
        field, f"rule {rule.pattern!r}: d̃={rule.d!r}", f"d̃ must be in [1, m={rule.m}]"
      )
  try:
    return plan_model(model, rules, sample, train=False)
  except SubvectorError as e:
    raise ConfigError(field, str(e), "pick an m that divides the layer's row length") from None
  except ValueError as e:
    raise ConfigError(
      field, str(e), "use the preset written for config.model, or fix the rule's pattern"
    ) from None


def _base_rules(config) -> tuple:
  """`config.rules` (text) when set, else the preset's rules; one ConfigError each."""
  spec = _get(config, "rules") or ""
  if not spec:
    preset = _choice(config, "preset", tuple(presets.PRESETS))
    return presets.PRESETS[preset]
  try:
    return parse_rules(rules_spec(config))
  except (ValueError, TypeError, OSError) as e:
    raise ConfigError(
      "rules", str(e), "write e.g. --config.rules='^conv1$:skip;conv:k=256,m=9,d=4;fc:k=1024,m=4'"
    ) from None


def _check_rules(config) -> None:
  base = _base_rules(config)
  d = _get(config, "d")
  if d is not None and (not _is_int(d) or d < 0):
    raise ConfigError(
      "d",
      f"d̃={d!r} is not an integer >= 1",
      "set --config.d in [1, m], or 0 for d̃ = m (no low rank)",
    )
  k = _int(config, "k", low=0, high=MAX_K, default=0)
  if k == 1:
    raise ConfigError("k", "k=1 centroid", f"set --config.k in [2, {MAX_K}], or 0 for the rules' k")
  m = _int(config, "m", low=0, default=0)
  kept = [r for r in base if not r.skip]
  ms = sorted({m} if m else {r.m for r in kept})
  if d and kept and all(d > r for r in ms):
    raise ConfigError("d", f"d̃={d} exceeds m of every layer ({ms})", "use d̃ <= m")
  field = "m" if m else ("rules" if _get(config, "rules") else "preset")
  try:
    rules = config_rules(config)
  except (ValueError, TypeError) as e:
    raise ConfigError(field, str(e), "fix the rules") from None
  model, shape = config_model(config, dtype=config.get("dtype", "float32"))
  check_rules(rules, model, jnp.zeros((1, *shape), jnp.float32), field=field)


def _latest_meta(stage_dir: str) -> dict | None:
  """JSON meta of the newest checkpoint orbax calls committed under `<stage_dir>/checkpoints`
  (on gs:// only a step with `commit_success.txt`), read-only."""
  return checkpointing.latest_meta(checkpointing.checkpoint_dir(stage_dir))


def _check_sources(config, names: list[str], workdir: str | None) -> None:
  """Each stage's starting point exists and is the right stage of the same model."""
  root_init = _get(config, f"{stages.ROOT}.init_from") or ""
  if stages.ROOT in names and root_init and not paths.resolve(root_init).is_file():
    raise ConfigError(
      f"{stages.ROOT}.init_from",
      f"{root_init!r} is not a file",
      "point it at a state dict .npz/.safetensors",
    )
  for i, name in enumerate(names):
    prev, init = stages.STAGES[name].previous, _get(config, f"{name}.init_from") or ""
    if prev is None:
      continue
    if init:
      meta = _latest_meta(init)
      if meta is None:
        raise ConfigError(
          f"{name}.init_from",
          f"{init!r} holds no checkpoint",
          f"point it at a finished {prev} stage",
        )
      if meta.get("stage") != prev or meta.get("model") != config.model:
        raise ConfigError(
          f"{name}.init_from",
          f"{init!r} holds stage {meta.get('stage')!r} of model {meta.get('model')!r}; "
          f"{name} starts from stage {prev!r} of {config.model!r}",
          f"point it at <workdir>/{prev} of a {config.model} run",
        )
      continue
    if workdir is None or prev in names[:i]:
      continue
    if _latest_meta(paths.join(workdir, name)) is None and (
      _latest_meta(paths.join(workdir, prev)) is None
    ):
      raise ConfigError(
        "stages",
        f"stage {name!r} starts from {prev!r}, which neither runs before it nor has a "
        f"checkpoint in {paths.join(workdir, prev)}",
        f"add {prev} before {name} in --config.stages, or set --config.{name}.init_from",
      )


def check_workdir(workdir: str) -> None:
  """The workdir is a writable directory, or can be created as one (nothing is created here).
  A bucket URL (gs://) must name an existing bucket; write access there is the account's."""
  if paths.is_remote(workdir):
    try:
      paths.check_bucket(workdir)
    except FileNotFoundError as e:
      raise ConfigError("workdir", str(e), "create the bucket or pick another --workdir") from None
    return
  path = paths.as_str(workdir)
  probe = paths.existing_ancestor(path)
  if not os.path.isdir(probe):
    raise ConfigError(
      "workdir", f"{path!r}: {probe!r} is not a directory", "pick another --workdir"
    )
  if not os.access(probe, os.W_OK | os.X_OK):
    raise ConfigError(
      "workdir", f"{path!r}: {probe!r} is not writable", "pick a --workdir you can write to"
    )


def validate_config(config: ml_collections.ConfigDict, workdir: str | None = None) -> None:
  """Raises `ConfigError` on the first bad field; reads only, writes nothing."""
  if workdir is not None:
    check_workdir(workdir)
  _choice(config, "model", tuple(MODELS))
  _choice(config, "dtype", DTYPES, default="float32")
  _choice(config, "sharding", partitioning.MODES, default="replicated")
  _int(config, "seed", low=0)
  _int(config, "profile_steps", low=0, default=0)
  names = _check_stages(config)
  for name in names:
    _check_stage(config, name)
  if "data" not in config:
    raise ConfigError("data", "section missing", "add config.data (see configs/default.py)")
  _check_data(config)
  if "quant" not in config:
    raise ConfigError("quant", "section missing", "add config.quant (see configs/default.py)")
  _check_quant_section(config)
  _check_rules(config)
  _check_sources(config, names, workdir)
