"""`lr2vq train`, `export`, `eval` and `prepare`: a config's pipeline runs and their artifacts."""

from __future__ import annotations

import argparse
import os

from lr2vq_jax import paths
from lr2vq_jax.cli.registry import CLIError, arg, command
from lr2vq_jax.train.stages import EXPORTED


@command(
  "train",
  "run a config's pipeline stages (absl flags: --config FILE[:arg] --workdir DIR --config.x=y)",
)
def train(args: argparse.Namespace) -> int:  # dispatched in `main` before argparse sees the flags
  raise CLIError(
    "train takes absl flags", "lr2vq train --config configs/default.py --workdir runs/x"
  )


@command(
  "export",
  "write the shipped artifact of a finished stage (quantize, pq or dkm) from its checkpoint",
  arg("--config", required=True, help="experiment config file, optionally FILE:arg"),
  arg("--workdir", required=True, help="the run's workdir (holds <stage>/checkpoints)"),
  arg("--stage", default="quantize", choices=EXPORTED, help="which stage"),
  arg("--out", default=None, help="artifact directory (default <workdir>/<stage>/artifact)"),
)
def export(args: argparse.Namespace) -> int:
  import jax
  import numpy as np
  from jax.experimental import multihost_utils

  import lr2vq_jax as lq
  from lr2vq_jax.train import distributed, hard_codes, partitioning
  from lr2vq_jax.train.config import load_config
  from lr2vq_jax.train.pipeline import artifact_metadata
  from lr2vq_jax.train.trainer import build_stage, layer_config, restore_final

  distributed.initialize()
  config = load_config(args.config)
  stage = build_stage(config, args.stage, args.workdir)
  state = restore_final(stage, stage.workdir)
  out = args.out or paths.join(stage.workdir, "artifact")
  # hard codes once, DKM split over the mesh; then whole arrays on every process (a collective)
  _, variables = hard_codes.frozen_model(stage.model, state.variables(), stage.mesh)
  variables = partitioning.to_host(variables)
  manifest, error = None, None
  if jax.process_index() == 0:  # one writer; the others wait until the artifact is complete
    try:
      manifest = lq.export(
        variables,
        stage.rules,
        out,
        config=layer_config(config, args.stage),
        metadata=artifact_metadata(config, stage),
      )
    except Exception as e:  # noqa: BLE001  (re-raised below, after the others were told)
      error = e
  # a collective, so also the barrier: nobody returns before process 0 has written (or failed)
  written = multihost_utils.broadcast_one_to_all(np.int32(error is None))
  if error is not None:
    raise error
  if not written:
    raise CLIError("process 0 could not write the artifact", "see process 0's output")
  if manifest is None:
    return 0
  payload = manifest["payload_bytes"]
  print(
    f"wrote {out}: {len(manifest['layers'])} quantized layers, payload {payload['total']} bytes "
    f"(codes {payload['codes']}, codebooks {payload['codebooks']}, other {payload['other']}), "
    f"file {manifest['arrays_bytes']} bytes"
  )
  return 0


@command(
  "eval",
  "evaluate an exported artifact (decoded into the float model) on a split of its dataset",
  arg("--artifact", required=True, help="artifact directory (manifest.json + arrays.npz)"),
  arg("--config", default=None, help="config whose model/data to use (default: the artifact's)"),
  arg("--split", default="test", choices=("eval", "test"), help="which split (default test)"),
)
def evaluate(args: argparse.Namespace) -> int:
  import ml_collections

  import lr2vq_jax as lq
  from lr2vq_jax.train import distributed
  from lr2vq_jax.train.config import load_config
  from lr2vq_jax.train.evaluation import evaluate_artifact

  distributed.initialize()
  artifact = lq.load(args.artifact)
  meta = artifact.manifest.get("metadata", {})
  if args.config:
    config = load_config(args.config)
    model_name, data = config.model, config.data
  else:
    if "model" not in meta or "data" not in meta:
      raise CLIError(f"{args.artifact} does not name its model and data", "pass --config FILE")
    model_name, data = meta["model"], ml_collections.ConfigDict(meta["data"])
  result = evaluate_artifact(artifact, model_name, data, args.split)
  print(
    f"{args.artifact}: {model_name} on {data.name}/{args.split}: top-1 {result['top1']:.2f}%, "
    f"top-5 {result['top5']:.2f}%, payload {artifact.num_bytes} bytes"
  )
  return 0


@command(
  "prepare",
  "build a dataset once before training: imagenet2012 from its two official tars (checked "
  "first), or cifar10 (downloaded by tfds)",
  arg("dataset", choices=("imagenet2012", "cifar10"), help="which dataset"),
  arg("--manual_dir", "--manual-dir", default=None, help="imagenet2012: folder of the two tars"),
  arg("--data_dir", "--data-dir", default=None, help="tfds data dir (default: tfds's own)"),
)
def prepare(args: argparse.Namespace) -> int:
  from lr2vq_jax.train import prepare as prep

  data_dir = args.data_dir or os.environ.get("TFDS_DATA_DIR") or _default_tfds_dir()
  try:
    if args.dataset == "imagenet2012":
      if not args.manual_dir:
        raise CLIError("imagenet2012 needs --manual_dir", "the folder holding the two tars")
      prep.prepare_imagenet(args.manual_dir, data_dir)
    else:
      prep.prepare_download(args.dataset, data_dir)
  except prep.PrepareError as e:
    raise CLIError(str(e), e.hint) from e
  print(f"use it with --config.data.data_dir={data_dir}")
  return 0


def _default_tfds_dir() -> str:
  return os.path.join(os.path.expanduser("~"), "tensorflow_datasets")
