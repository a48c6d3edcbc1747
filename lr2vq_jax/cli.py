"""The `lr2vq` command line (also `python -m lr2vq_jax`).

Each subcommand is one function decorated with `@command(name, help, *arguments)`; `main` builds
the parser from the registry. Errors print one line and a hint on stderr and exit with status 2
(`--verbose` shows the traceback). Heavy imports (flax, models) happen inside the subcommands.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from lr2vq_jax import paths
from lr2vq_jax.core.accounting import STORES
from lr2vq_jax.core.recorded import DEFAULTS

# Registered models (lr2vq_jax.models.MODELS) → the input shape `--model` traces them with.
MODELS = {
  "digits_cnn": (8, 8, 1),
  "resnet18": (224, 224, 3),
  "resnet34": (224, 224, 3),
  "resnet50": (224, 224, 3),
}
PRESET_PREFIX = {"digits_cnn": "digits"}  # presets are named <prefix>_<blocks>_blocks


class CLIError(Exception):
  """A user-facing error: one line of message, one line of hint."""

  def __init__(self, message: str, hint: str | None = None):
    super().__init__(message)
    self.hint = hint


@dataclasses.dataclass(frozen=True)
class _Command:
  name: str
  help: str
  arguments: tuple[tuple[tuple[str, ...], dict[str, Any]], ...]
  run: Callable[[argparse.Namespace], int | None]


_COMMANDS: dict[str, _Command] = {}


def arg(*flags: str, **kwargs) -> tuple[tuple[str, ...], dict[str, Any]]:
  """One `add_argument` call, declared next to its subcommand."""
  return flags, kwargs


def command(name: str, help_text: str, *arguments):
  """Register `fn(args) -> exit status | None` as subcommand `name`."""

  def register(fn):
    _COMMANDS[name] = _Command(name, help_text, tuple(arguments), fn)
    return fn

  return register


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


def _model_args():
  return (
    arg("--model", choices=sorted(MODELS), default="resnet18", help="architecture"),
    arg("--num-classes", type=int, default=1000, help="classifier outputs (default 1000)"),
    arg("--preset", default=None, help="rule preset (default: <model>_large_blocks)"),
    arg("--d", type=int, default=None, help="set d̃ on every compressed layer (capped at m)"),
  )


@dataclasses.dataclass(frozen=True)
class _Target:
  """What report / estimate-dim look at: a model, its input shape, its rules, a label."""

  model: Any
  input_shape: tuple[int, ...]
  rules: tuple
  label: str


def _load_config(spec: str):
  from lr2vq_jax.train.config import load_config

  try:
    return load_config(spec)
  except (FileNotFoundError, ValueError) as e:
    raise CLIError(str(e), "give --config FILE.py[:arg]") from None


def _target(args: argparse.Namespace) -> _Target:
  """From `--config` (its model, input size, rules with k/m/d̃/rules overrides) or from
  `--model/--preset/--d`."""
  if not getattr(args, "config", None):
    preset, rules = _rules(args.model, args.preset, args.d)
    model = _model(args.model, args.num_classes)
    return _Target(model, MODELS[args.model], rules, f"model {args.model}, preset {preset}")
  from lr2vq_jax import presets
  from lr2vq_jax.train.config import config_rules
  from lr2vq_jax.train.validate import ConfigError, validate_config

  config = _load_config(args.config)
  try:
    validate_config(config)
  except ConfigError as e:
    raise CLIError(str(e), e.hint) from None
  rules = config_rules(config)
  rules = rules if args.d is None else presets.with_d(rules, args.d)
  from lr2vq_jax.train.config import config_model

  model, shape = config_model(config)
  return _Target(model, shape, rules, f"config {args.config}: model {config.model}")


@command(
  "report",
  "print the per-layer size table (PQF/BGD convention) from shapes alone",
  *_model_args(),
  arg("--config", default=None, help="experiment config FILE[:arg]: its model, input and rules"),
  arg("--store", choices=STORES, default=DEFAULTS["store"], help="table layout"),
)
def report(args: argparse.Namespace) -> int:
  import jax
  import jax.numpy as jnp

  from lr2vq_jax.core.accounting import size_report

  target = _target(args)
  x = jax.ShapeDtypeStruct((1, *target.input_shape), jnp.float32)
  model = target.model
  shapes = jax.eval_shape(lambda key, x: model.init(key, x, train=False), jax.random.key(0), x)
  rep = size_report(shapes, target.rules, store=args.store)
  print(f"{target.label}, store {args.store}")
  print(rep.table())
  return 0


@command(
  "estimate-dim",
  "choose d̃: with --config, the clustered rank-d̃ model's validation loss (the predictor "
  "benchmarks/dim_predictors.py found to work); else low-rank + k-means weight errors",
  *_model_args(),
  arg("--config", default=None, help="experiment config FILE[:arg]: choose d̃ on its task"),
  arg(
    "--weights",
    default=None,
    help="trained weights FILE (.npz/.safetensors: torchvision names or flax paths like "
    "conv2/kernel): weight errors of these instead of a random init",
  ),
  arg("--float-dir", default=None, help="with --config: its finished float stage directory"),
  arg("--workdir", default=None, help="with --config: scratch runs (default <float-dir>/../dim)"),
  arg("--pretrain-steps", type=int, default=0, help="with --config: low-rank steps per d̃"),
  arg("--bn-batches", type=int, default=0, help="with --config: BN re-estimation batches"),
  arg("--layer", default=None, help="only layers whose path re.search-es this regex"),
  arg("--seed", type=int, default=0, help="init and k-means seed"),
  arg("--iters", type=int, default=25, help="Lloyd iterations per k-means"),
  arg("--candidates", default=None, help="comma-separated d̃ values (default 1..m)"),
  arg("--max-rows", type=int, default=None, help="k-means on at most this many subvectors"),
)
def estimate_dim(args: argparse.Namespace) -> int:
  import jax
  import jax.numpy as jnp

  from lr2vq_jax.core.dimension import estimate_dim_model

  try:
    cands = None if args.candidates is None else [int(c) for c in args.candidates.split(",")]
  except ValueError:
    raise CLIError(
      f"bad --candidates {args.candidates!r}", "write e.g. --candidates 1,2,4,8"
    ) from None
  if args.config and not args.weights:
    return _select_dim_on_task(args, cands)
  target = _target(args)
  key = jax.random.key(args.seed)
  if args.weights:
    params, source = read_weights(args.weights), f"weights {args.weights}"
  else:
    model, (h, w, c) = target.model, target.input_shape
    shape = (1, min(h, 32), min(w, 32), c)  # kernel shapes do not depend on the image size
    init = jax.jit(lambda key: model.init(key, jnp.zeros(shape), train=False))
    # An "rbg" key for init: XLA:CPU compiles a threefry ResNet init ~4× slower (20+ s).
    params, source = init(jax.random.key(args.seed, impl="rbg")), f"random init, seed {args.seed}"
  est = estimate_dim_model(
    params,
    target.rules,
    layers=args.layer,
    candidates=cands,
    key=key,
    iters=args.iters,
    max_rows=args.max_rows,
  )
  print(f"{target.label} ({source})")
  for path, e in est.layers.items():
    print(f"\n{path}\n{e.table()}")
  if len(est.layers) > 1:
    print()
    print(est.table())
  return 0


def read_weights(path: str) -> dict:
  """Params of a `.npz`/`.safetensors` file (`torch_import.read_params`), errors as one line."""
  from lr2vq_jax.models.torch_import import read_params

  try:
    return read_params(path)
  except (OSError, ValueError) as e:
    raise CLIError(
      f"cannot read --weights {path}: {e}", "give a .npz or .safetensors file"
    ) from None


def _select_dim_on_task(args: argparse.Namespace, cands: list[int] | None) -> int:
  """`estimate-dim --config`: lr2vq_jax.train.dim_select on the config's float stage."""
  from lr2vq_jax.core.dimension import default_candidates
  from lr2vq_jax.train.config import config_rules, load_config
  from lr2vq_jax.train.dim_select import select_dim

  if not args.float_dir:
    raise CLIError("--config needs --float-dir", "point it at the config's finished float stage")
  try:
    config = load_config(args.config)
  except (FileNotFoundError, ValueError) as e:
    raise CLIError(str(e), "give --config FILE.py[:arg]") from None
  m = max(r.m for r in config_rules(config) if not r.skip)
  cands = cands or list(default_candidates(m))
  if min(cands) < 1 or max(cands) > m:
    raise CLIError(f"--candidates {cands} outside 1..{m}", f"choose d̃ values in 1..{m}")
  workdir = args.workdir or paths.join(paths.parent(paths.as_str(args.float_dir)), "dim")
  sel = select_dim(
    config,
    args.float_dir,
    workdir,
    tuple(cands),
    pretrain_steps=args.pretrain_steps,
    bn_batches=args.bn_batches,
  )
  print(f"config {args.config}, float stage {args.float_dir}")
  print(sel.table())
  return 0


@command(
  "plan",
  "choose per-layer k, m, d̃ for a byte budget (predicted loss: Fisher × clustered-SVD error); "
  "prints the allocation, writes rules a config takes as --config.rules=@FILE",
  arg("--config", required=True, help="experiment config FILE[:arg]: its model, data and d̃ cap"),
  arg("--target-bytes", default=None, help="budget, e.g. 1.0MiB, 3185KiB, 14000 (bytes)"),
  arg("--ratio", type=float, default=None, help="budget as uncompressed size / ratio, e.g. 43"),
  arg("--float-dir", default=None, help="the config's finished float stage (else random init)"),
  arg("--batches", type=int, default=8, help="training batches for the sensitivity (0: none)"),
  arg("--d", type=int, default=None, help="d̃ cap (default: the config's d; 0: d̃ = m)"),
  arg("--layers", default=None, help="plan only kernels whose path re.search-es this regex"),
  arg("--keep-float", default=None, help="kernels matching this regex stay fp32"),
  arg("--store", choices=STORES, default=DEFAULTS["store"], help="table layout"),
  arg("--ms", default=None, help="candidate m values, comma-separated (default 1..36 divisors)"),
  arg("--ks", default=None, help="candidate k values, powers of two (default 2..2048)"),
  arg("--out", default=None, help="write the rules file here"),
  arg("--png", default=None, help="write the figure (bytes vs predicted loss per layer) here"),
  arg("--seed", type=int, default=0, help="init and k-means seed"),
)
def plan(args: argparse.Namespace) -> int:
  from lr2vq_jax.planning import command as plan_command

  if (args.target_bytes is None) == (args.ratio is None):
    raise CLIError("give exactly one of --target-bytes and --ratio", "e.g. --target-bytes 1.0MiB")
  target = None if args.target_bytes is None else plan_command.parse_bytes(args.target_bytes)
  if args.ratio is not None and not args.ratio > 1:
    raise CLIError(f"--ratio {args.ratio:g}: must be > 1", "e.g. --ratio 43")
  if args.batches < 0:
    raise CLIError(f"--batches {args.batches}: must be >= 0", "e.g. --batches 8")
  from lr2vq_jax.train.config import config_rules

  config = _load_config(args.config)
  try:
    config_rules(config)  # the reference rules; the data is only read with --float-dir
  except (ValueError, KeyError, OSError) as e:
    raise CLIError(f"config rules: {e}", "fix --config.rules / --config.preset") from None
  return plan_command.run(args, config, target)


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
  arg("--stage", default="quantize", choices=("quantize", "pq", "dkm"), help="which stage"),
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
  from lr2vq_jax.train.trainer import build_stage, quant_config, restore_final

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
        config=quant_config(config, args.stage),
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
  from lr2vq_jax.models import create_model
  from lr2vq_jax.train import distributed, input_pipeline, partitioning
  from lr2vq_jax.train.config import load_config
  from lr2vq_jax.train.trainer import evaluate as run_eval

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
  info = input_pipeline.dataset_info(data)
  model = create_model(model_name, num_classes=info.num_classes)
  result = run_eval(
    model,
    artifact.decode(),
    lambda: input_pipeline.build_input(data, split=args.split),
    partitioning.make_mesh(),
  )
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


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="lr2vq", description="LR²VQ model compression: sizes, d̃ estimation, (train, export)."
  )
  common = argparse.ArgumentParser(add_help=False)
  common.add_argument("--verbose", action="store_true", help="show tracebacks on errors")
  sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
  for cmd in _COMMANDS.values():
    p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help, parents=[common])
    for flags, kwargs in cmd.arguments:
      p.add_argument(*flags, **kwargs)
    p.set_defaults(run=cmd.run)
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  """Entry point of the `lr2vq` console script; returns the exit status."""
  argv = list(sys.argv[1:] if argv is None else argv)
  if argv[:1] == ["train"] and not {"-h", "--help"} & set(argv[1:2]):
    from lr2vq_jax import main as train_main

    train_main.run(["lr2vq train", *argv[1:]])
    return 0
  args = build_parser().parse_args(argv)
  try:
    return int(args.run(args) or 0)
  except (CLIError, ValueError, KeyError, TypeError, OSError) as e:
    if args.verbose:
      traceback.print_exc()
    message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    hint = (
      getattr(e, "hint", None) or f"see `lr2vq {args.command} --help` (add --verbose for details)"
    )
    print(f"lr2vq {args.command}: error: {message}", file=sys.stderr)
    print(f"hint: {hint}", file=sys.stderr)
    return 2
