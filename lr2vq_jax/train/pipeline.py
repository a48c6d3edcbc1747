"""The whole job: run the configured stages, export each compressed model, evaluate the artifact.

"What you evaluate is what you ship": the reported top-1 of every compressed method is measured
on the float model rebuilt from its exported artifact (`lq.load(dir).decode()`), on the test split.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from collections.abc import Iterator

import jax
import ml_collections
from absl import logging

import lr2vq_jax as lq
from lr2vq_jax import paths
from lr2vq_jax.train import hard_codes, input_pipeline, partitioning, run_config, stages
from lr2vq_jax.train.bn_reestimate import reestimate_batch_stats
from lr2vq_jax.train.config import layer_config
from lr2vq_jax.train.evaluation import evaluate
from lr2vq_jax.train.preemption import Preemption
from lr2vq_jax.train.stage_setup import build_stage
from lr2vq_jax.train.trainer import run_stage
from lr2vq_jax.train.validate import validate_config

COLUMNS = ("method", "k", "m", "d", "exported_bytes", "ratio", "top1", "val_top1")


def artifact_metadata(config: ml_collections.ConfigDict, stage) -> dict:
  return {
    "model": config.model,
    "num_classes": stage.info.num_classes,
    "image_shape": list(stage.info.image_shape),
    "stage": stage.name,
    "data": config.data.to_dict(),
  }


def _rule_summary(rules) -> dict:
  kept = [r for r in rules if not r.skip]
  join = lambda xs: "/".join(dict.fromkeys(str(x) for x in xs))  # noqa: E731
  return {
    "k": join(r.k for r in kept),
    "m": join(r.m for r in kept),
    "d": join(r.d or r.m for r in kept),
  }


def _float_bytes(stage) -> int:
  shapes = jax.eval_shape(
    lambda: stage.float_model.init(
      jax.random.key(0), jax.numpy.zeros((1, *stage.info.image_shape)), train=False
    )
  )
  return lq.size_report(shapes["params"], stage.rules).uncompressed_bytes


def export_and_evaluate(config, name: str, state, workdir: str) -> dict:
  """Exports stage `name`'s final variables and evaluates the decoded artifact on val and test."""
  stage = build_stage(config, name, workdir)
  # hard codes once, DKM split over the mesh; exported as the frozen stage (same numbers)
  model, variables = hard_codes.frozen_model(stage.model, state.variables(), stage.mesh)
  batches = int(stage.cfg.get("bn_reestimate_batches", 0))
  if batches:
    train = input_pipeline.build_input(config.data, split="train")
    variables = reestimate_batch_stats(model, variables, train, batches, stage.mesh)
  host = partitioning.to_host(variables)  # a collective: every process takes part
  with _artifact_dir(paths.join(stage.workdir, "artifact")) as directory:
    manifest = lq.export(
      host,
      stage.rules,
      directory,
      config=layer_config(config),
      metadata=artifact_metadata(config, stage),
    )
    variables = lq.load(directory).decode()
  record = _record(config, stage, variables, manifest["payload_bytes"]["total"])
  return {**record, "bn_reestimated": batches} if batches else record


@contextlib.contextmanager
def _artifact_dir(path: str) -> Iterator[str]:
  """`path` on process 0; a private temporary folder elsewhere (only process 0 writes artifacts,
  every process evaluates the same decoded artifact without needing a shared file system)."""
  if jax.process_index() == 0:
    yield path
    return
  with tempfile.TemporaryDirectory(prefix="lr2vq-artifact-") as tmp:
    yield tmp


def _record(config, stage, variables, payload: int) -> dict:
  def split(name):
    return evaluate(
      stage.float_model,
      variables,
      lambda: input_pipeline.eval_batches(config.data, name),
      stage.mesh,
    )

  test, val = split("test"), split("eval")
  return {
    "method": stage.spec.label,
    "stage": stage.name,
    **_rule_summary(stage.rules),
    "exported_bytes": int(payload),
    "ratio": round(_float_bytes(stage) / payload, 2),
    "top1": round(test["top1"], 2),
    "top5": round(test["top5"], 2),
    "val_top1": round(val["top1"], 2),
    "val_loss": round(val["loss"], 4),
    "test_loss": round(test["loss"], 4),
  }


def format_table(records: list[dict]) -> str:
  rows = [COLUMNS] + [tuple(str(r.get(c, "")) for c in COLUMNS) for r in records]
  widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
  lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
  lines.insert(1, "  ".join("-" * w for w in widths))
  return "\n".join(lines)


def run(
  config: ml_collections.ConfigDict, workdir: str, *, allow_config_change: bool = False
) -> list[dict] | None:
  """Runs `config.stages` in order; returns the results records (None if preempted).

  The config is validated first (`ConfigError`, nothing written), and so is a rerun of a work dir
  whose stages ran with another config (`ConfigChangedError` unless `allow_config_change`);
  SIGTERM at any point checkpoints the running stage or stops before the next one.
  """
  validate_config(config, workdir)
  run_config.check_unchanged(
    config, workdir, stages.parse_stages(config.stages), allow_config_change
  )
  paths.makedirs(workdir)
  with Preemption() as preempt:
    return _run(config, workdir, preempt)


def _run(config: ml_collections.ConfigDict, workdir: str, preempt: Preemption) -> list[dict] | None:
  records = []
  for name in stages.parse_stages(config.stages):
    if preempt.requested:
      logging.warning("preempted before stage %s; rerun the same command to resume", name)
      return None
    start = time.monotonic()
    logging.info("=== stage %s ===", name)
    state, results = run_stage(config, name, workdir)
    if results.get("preempted"):
      logging.warning("stopped during stage %s; rerun the same command to resume", name)
      return None
    spec = stages.get(name)
    if spec.exports:
      record = export_and_evaluate(config, name, state, workdir)
    elif spec.label is not None:  # the float model itself: its own bytes, nothing to export
      stage = build_stage(config, name, workdir)
      record = _record(config, stage, partitioning.to_host(state.variables()), _float_bytes(stage))
      record.update(k="-", m="-", d="-")
    else:
      continue
    record["wall_s"] = round(time.monotonic() - start, 1)
    records.append(record)
    if jax.process_index() == 0:
      print(f"[{name}] top-1 {record['top1']:.2f}%  bytes {record['exported_bytes']}", flush=True)
  if jax.process_index() == 0:
    paths.write_text(paths.join(workdir, "results.json"), json.dumps(records, indent=1))
    print(format_table(records), flush=True)
  return records
