"""`lr2vq report`, `estimate-dim` and `plan`: sizes, d̃ and per-layer budgets, without training."""

from __future__ import annotations

import argparse
import re

from lr2vq_jax import paths
from lr2vq_jax.cli.registry import CLIError, arg, command
from lr2vq_jax.cli.targets import Target, load_config, model_args, resolve_target
from lr2vq_jax.core.accounting import STORES
from lr2vq_jax.core.recorded import DEFAULTS
from lr2vq_jax.core.rules import kernels_by_path, params_collection, plan_layers


@command(
  "report",
  "print the per-layer size table (PQF/BGD convention) from shapes alone",
  *model_args(),
  arg("--config", default=None, help="experiment config FILE[:arg]: its model, input and rules"),
  arg("--store", choices=STORES, default=DEFAULTS["store"], help="table layout"),
)
def report(args: argparse.Namespace) -> int:
  import jax
  import jax.numpy as jnp

  from lr2vq_jax.core.accounting import size_report

  target = resolve_target(args)
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
  *model_args(),
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

  from lr2vq_jax.core.dimension import estimate_dim_model

  try:
    cands = None if args.candidates is None else [int(c) for c in args.candidates.split(",")]
  except ValueError:
    raise CLIError(
      f"bad --candidates {args.candidates!r}", "write e.g. --candidates 1,2,4,8"
    ) from None
  if args.config and not args.weights:
    return _select_dim_on_task(args, cands)
  target = resolve_target(args)
  key = jax.random.key(args.seed)
  if args.weights:
    params, source = read_weights(args.weights), f"weights {args.weights}"
  else:
    params, source = random_kernels(target, args.layer, args.seed), f"random init, seed {args.seed}"
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


def random_kernels(target: Target, layers: str | None, seed: int) -> dict:
  """A random init's params (seed, "rbg" key) as shapes, except the kernels the rules compress
  that `layers` selects, as values: one jitted init that returns only those, so XLA computes (and
  compiles) only their initializers; the values are the whole init's, a ResNet-18's seconds less."""
  import jax
  import jax.numpy as jnp
  from flax import traverse_util

  model, (h, w, c) = target.model, target.input_shape
  shape = (1, min(h, 32), min(w, 32), c)  # kernel shapes do not depend on the image size
  shapes = {}

  def kernels(key):  # traced once: records every leaf's shape, returns the selected kernels only
    params = params_collection(model.init(key, jnp.zeros(shape), train=False))
    # as the jitted init returned them: sorted keys, the layer order of the tables and errors
    shapes.update(jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params))
    chosen = {p for p in plan_layers(shapes, target.rules) if not layers or re.search(layers, p)}
    return {p: v for p, v in kernels_by_path(params).items() if p in chosen}

  # An "rbg" key for init: XLA:CPU compiles a threefry ResNet init ~4× slower (20+ s).
  values = jax.jit(kernels)(jax.random.key(seed, impl="rbg"))
  flat = traverse_util.flatten_dict(shapes, sep="/")
  flat.update({f"{path}/kernel": value for path, value in values.items()})
  return traverse_util.unflatten_dict(flat, sep="/")


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
  from lr2vq_jax.train.config import config_rules
  from lr2vq_jax.train.dim_select import select_dim

  if not args.float_dir:
    raise CLIError("--config needs --float-dir", "point it at the config's finished float stage")
  config = load_config(args.config)
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

  config = load_config(args.config)
  try:
    config_rules(config)  # the reference rules; the data is only read with --float-dir
  except (ValueError, KeyError, OSError) as e:
    raise CLIError(f"config rules: {e}", "fix --config.rules / --config.preset") from None
  return plan_command.run(args, config, target)
