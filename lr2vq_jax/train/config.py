"""Reading the experiment config: rules, per-stage sections and the layer config, one error each."""

from __future__ import annotations

import dataclasses

import ml_collections

from lr2vq_jax import convert, presets
from lr2vq_jax.core.rules import Rule, parse_rules
from lr2vq_jax.nn import QuantConfig
from lr2vq_jax.nn.recorded import DEFAULTS
from lr2vq_jax.planning.rules_file import read_rules_text
from lr2vq_jax.train import config_file, stages
from lr2vq_jax.train.partitioning import ROW_AXIS


def config_model(config: ml_collections.ConfigDict, *, dtype: str | None = None):
  """(the config's float model, its per-example input shape (H, W, C)), from the config alone:
  no data is read. `dtype` overrides the model's (default: the model's own default)."""
  from lr2vq_jax.models import create_model
  from lr2vq_jax.train.datasets import CHANNELS, NUM_CLASSES

  name, size = config.data.name, int(config.data.image_size)
  kwargs = {} if dtype is None else {"dtype": dtype}
  model = create_model(config.model, num_classes=NUM_CLASSES[name], **kwargs)
  return model, (size, size, CHANNELS[name])


def rules_spec(config: ml_collections.ConfigDict) -> str:
  """`config.rules` as text; "@FILE" reads a rules file (e.g. a plan from `lr2vq plan --out`)."""
  spec = config.get("rules") or ""
  return read_rules_text(spec[1:]) if spec.startswith("@") else spec


def config_rules(config: ml_collections.ConfigDict) -> tuple[Rule, ...]:
  """The experiment's rules: `config.rules` (text, see `parse_rules`, or "@FILE") when set, else
  `config.preset`; then `config.k`, `config.m` (when > 0) on every compressed layer, and
  `config.d` (when set) as d̃ (capped at m)."""
  spec = rules_spec(config)
  rules = parse_rules(spec) if spec else presets.get_preset(config.preset)
  for field in ("k", "m"):
    value = config.get(field) or 0
    if value:
      rules = tuple(r if r.skip else dataclasses.replace(r, **{field: int(value)}) for r in rules)
  d = config.get("d")
  if d:
    rules = tuple(r if r.skip else dataclasses.replace(r, d=min(int(d), r.m)) for r in rules)
  elif config.get("m"):  # a preset's d̃ may exceed the new m: back to d̃ = m
    rules = tuple(
      r if r.skip or (r.d or 0) <= r.m else dataclasses.replace(r, d=None) for r in rules
    )
  return rules


def stage_rules(config: ml_collections.ConfigDict, stage: str) -> tuple[Rule, ...]:
  """LR²VQ stages use the configured d̃; the pq and dkm baselines (`vanilla`) use d̃ = m."""
  rules = config_rules(config)
  return convert.vanilla(rules) if stages.get(stage).vanilla else rules


def stage_config(config: ml_collections.ConfigDict, stage: str) -> ml_collections.ConfigDict:
  """The stage's section (`config.float`, `config.lowrank`, ...)."""
  stages.get(stage)
  if stage not in config:
    raise ValueError(
      f"config has no section {stage!r}; add config.{stage} (see configs/default.py)"
    )
  return config[stage]


def layer_config(config: ml_collections.ConfigDict, stage: str | None = None) -> QuantConfig:
  """The `QuantConfig` the compressed layers run with: the quant section (`config.quant`), with
  the stage's own `tau_alpha` when it is > 0."""
  section = config.quant
  tau_alpha = section.tau_alpha
  if stage is not None and config[stage].get("tau_alpha", 0) > 0:
    tau_alpha = config[stage].tau_alpha
  return QuantConfig(
    tau_alpha=tau_alpha,
    dkm_iters=section.dkm_iters,
    dkm_grad=section.get("dkm_grad", QuantConfig.dkm_grad),
    dkm_top_t=section.get("dkm_top_t", QuantConfig.dkm_top_t),
    dkm_refresh=section.get("dkm_refresh", QuantConfig.dkm_refresh),
    dkm_warm=bool(section.get("dkm_warm", QuantConfig.dkm_warm)),
    commitment=section.commitment,
    store=section.store,
    projection=section.get("projection", DEFAULTS["projection"]),
    chunk_size=section.chunk_size,
    shard_axis=ROW_AXIS,
  )


def load_config(spec: str) -> ml_collections.ConfigDict:
  """`get_config(arg)` of a config file given as "path.py" or "path.py:arg" (as absl's flag).

  A file that does not load raises `config_file.ConfigLoadError` (a ValueError): one line naming
  the file and the cause.
  """
  return config_file.load_config(spec)
