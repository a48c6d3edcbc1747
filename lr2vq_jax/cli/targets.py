"""What `report`, `estimate-dim` and `plan` look at: a registered model with a rule preset
(`--model/--preset/--d`) or an experiment config (`--config`)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from lr2vq_jax.cli.registry import CLIError, arg

# Registered models (lr2vq_jax.models.MODELS) → the input shape `--model` traces them with.
MODELS = {
  "digits_cnn": (8, 8, 1),
  "resnet18": (224, 224, 3),
  "resnet34": (224, 224, 3),
  "resnet50": (224, 224, 3),
}
PRESET_PREFIX = {"digits_cnn": "digits"}  # presets are named <prefix>_<blocks>_blocks


def _model(name: str, num_classes: int):
  from lr2vq_jax.models import create_model

  return create_model(name, num_classes=num_classes)


def _rules(model_name: str, preset: str | None, d: int | None):
  from lr2vq_jax import presets

  prefix = PRESET_PREFIX.get(model_name, model_name)
  preset = preset or f"{prefix}_large_blocks"
  if preset not in presets.PRESETS:
    raise CLIError(f"unknown preset {preset!r}", f"choose one of: {', '.join(presets.PRESETS)}")
  if not preset.startswith(prefix + "_"):
    print(f"note: preset {preset} was written for another model than {model_name}", file=sys.stderr)
  rules = presets.get_preset(preset)
  return preset, (rules if d is None else presets.with_d(rules, d))


def model_args():
  return (
    arg("--model", choices=sorted(MODELS), default="resnet18", help="architecture"),
    arg("--num-classes", type=int, default=1000, help="classifier outputs (default 1000)"),
    arg("--preset", default=None, help="rule preset (default: <model>_large_blocks)"),
    arg("--d", type=int, default=None, help="set d̃ on every compressed layer (capped at m)"),
  )


@dataclasses.dataclass(frozen=True)
class Target:
  """What report / estimate-dim look at: a model, its input shape, its rules, a label."""

  model: Any
  input_shape: tuple[int, ...]
  rules: tuple
  label: str


def load_config(spec: str):
  """The experiment config `spec` (FILE.py[:arg]); a missing or bad file is a CLIError."""
  from lr2vq_jax.train import config as config_lib

  try:
    return config_lib.load_config(spec)
  except (FileNotFoundError, ValueError) as e:
    raise CLIError(str(e), "give --config FILE.py[:arg]") from None


def resolve_target(args: argparse.Namespace) -> Target:
  """From `--config` (its model, input size, rules with k/m/d̃/rules overrides) or from
  `--model/--preset/--d`."""
  if not getattr(args, "config", None):
    preset, rules = _rules(args.model, args.preset, args.d)
    model = _model(args.model, args.num_classes)
    return Target(model, MODELS[args.model], rules, f"model {args.model}, preset {preset}")
  from lr2vq_jax import presets
  from lr2vq_jax.train.config import config_rules
  from lr2vq_jax.train.validate import ConfigError, validate_config

  config = load_config(args.config)
  try:
    validate_config(config)
  except ConfigError as e:
    raise CLIError(str(e), e.hint) from None
  rules = config_rules(config)
  rules = rules if args.d is None else presets.with_d(rules, args.d)
  from lr2vq_jax.train.config import config_model

  model, shape = config_model(config)
  return Target(model, shape, rules, f"config {args.config}: model {config.model}")
