"""The resolved config each stage ran with, kept as `<workdir>/<stage>/config.json`.

A stage writes its file when it starts. Rerunning a work dir compares the config of every stage
that already has checkpoints with its file, before anything trains, and stops with one line naming
the fields that changed what the stage computes (a finished stage would otherwise reprint its old
result as if it were the new experiment). Fields that change only logging, checkpoint cadence,
memory or the export are ignored.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import ml_collections
from etils import epath

from lr2vq_jax import paths
from lr2vq_jax.train import checkpointing, stages
from lr2vq_jax.train.config import stage_rules

CONFIG_FILE = "config.json"
# Fields (dotted, regex on the full name) that do not change what a stage computes.
NEUTRAL = (
  r"^stages$",
  r"^(preset|k|m|d|rules)$",  # compared through resolved_rules, the rules they resolve to
  r"\.init_from$",  # a stage with checkpoints resumes from them, not from init_from
  r"^(sharding|profile_steps)$",
  r"\.(log_every|checkpoint_every|max_steps_this_run|bn_reestimate_batches)$",
  r"^data\.(eval_batch_size|data_dir|manual_dir|prepare_if_missing|shuffle_buffer)$",
  r"^quant\.chunk_size$",
)
# Fields added after runs were written, with the value their absence stands for (same result).
ABSENT_MEANS = {"quant.dkm_refresh": 1, "quant.dkm_warm": False}
# Top-level fields only the compressed stages read.
COMPRESSION = ("preset", "k", "m", "d", "rules", "resolved_rules", "quant")
ALLOW_FLAG = "--allow_config_change"


class ConfigChangedError(ValueError):
  """A stage's checkpoints were made with another config; `hint` says what to do."""

  hint = (
    f"use a new --workdir for the new experiment, or pass {ALLOW_FLAG} to continue this one "
    "with the new values"
  )


def resolved(config: ml_collections.ConfigDict, stage: str) -> dict:
  """The config as plain JSON data, with the rules it resolves to for `stage` (`stage_rules`:
  d̃ = m for the pq and dkm baselines)."""
  data = json.loads(config.to_json())
  data["resolved_rules"] = [repr(r) for r in stage_rules(config, stage)]
  return data


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  """{"a.b": leaf} of nested dicts (the dotted names `--config.a.b=` overrides use)."""
  if isinstance(tree, dict):
    out = {}
    for key, value in tree.items():
      out.update(flatten(value, f"{prefix}{key}."))
    return out
  return {prefix[:-1]: tree}


def _relevant(name: str, stage: str) -> bool:
  if any(re.search(p, name) for p in NEUTRAL):
    return False
  section = name.split(".", 1)[0]
  if section in stages.STAGES:  # upstream stages' settings shape this one's starting point
    return section == stage or section in stages.upstream(stage)
  return stages.get(stage).mode != "float" or section not in COMPRESSION


def differences(old: dict, new: dict, stage: str) -> list[str]:
  """ "field: old → new" for every result-changing field of `stage` that differs."""
  a, b = {**ABSENT_MEANS, **flatten(old)}, {**ABSENT_MEANS, **flatten(new)}
  out = []
  for name in sorted(set(a) | set(b)):
    if _relevant(name, stage) and a.get(name) != b.get(name):
      out.append(f"{name}: {a.get(name, '(absent)')!r} → {b.get(name, '(absent)')!r}")
  return out


def config_path(stage_dir: str) -> epath.Path:
  return paths.resolve(stage_dir) / CONFIG_FILE


def check_unchanged(
  config: ml_collections.ConfigDict, workdir: str, names: Sequence[str], allow: bool = False
) -> None:
  """`ConfigChangedError` when a stage with checkpoints in `workdir` ran with a config whose
  result-changing fields differ from `config` (unless `allow`). Reads only."""
  for stage in names:
    new = resolved(config, stage)
    stage_dir = paths.join(workdir, stage)
    path = config_path(stage_dir)
    if not path.is_file() or not checkpointing.committed_steps(
      checkpointing.checkpoint_dir(stage_dir)
    ):
      continue
    old = json.loads(path.read_text())
    diff = differences(old, new, stage)
    if diff and not allow:
      shown = "; ".join(diff[:4]) + (f"; and {len(diff) - 4} more" if len(diff) > 4 else "")
      raise ConfigChangedError(
        f"stage {stage!r} in {stage_dir} was run with another config ({shown})"
      )


def save(config: ml_collections.ConfigDict, stage: str, stage_dir: str) -> None:
  """Writes the resolved config of the stage about to run (atomically)."""
  path = config_path(stage_dir)
  path.parent.mkdir(parents=True, exist_ok=True)
  paths.write_text(path, json.dumps(resolved(config, stage), indent=1, sort_keys=True))
