"""Train-step time of float vs low-rank vs LR²VQ quantize vs vanilla DKM, measured in one process.

Quantize variants: `lr2vq` (QuantConfig as the flags give it), `lr2vq_full` (DKM attention over all
k centroids), `lr2vq_top` (over the --top-t nearest, core/dkm_top.py), `lr2vq_top_iters1`,
`lr2vq_lists` (top-t with each row's lists carried between steps, re-ranked every --refresh steps:
its step time is (one ranking step + (N-1) carried steps) / N, the two medians timed apart; its
cost analysis is of a carried step), `lr2vq_lists_iters1` (the same, one centroid update per step),
`lr2vq_lists_warm1` (and warm-started: QuantConfig.dkm_warm), `lr2vq_top_warm1` (ranked every
step, warm, one update).

Uses the project's own step (`make_train_step` + `partitioning.jit_train_step`, the state from
`train.state.create_train_state` as in the trainer) on synthetic data; compile time is reported apart,
step time is the median of --steps steps after one warm-up step. Models: ResNet-18 (224 px,
batch 32, resnet18_small_blocks, LR²VQ d̃ = 4 as configs/imagenet_resnet18_small_lr2vq.py) and the
embedded digits CNN (8 px, batch 64, digits_small_blocks, d̃ = 3). With --profile / --levers, the
DKM forward + backward of the quantized layers is also timed alone (benchmarks/dkm_profile.py).
Then XLA's cost analysis of the compiled float and LR²VQ steps (flops, bytes accessed,
transcendentals) per device on a --cost-devices host mesh (a child process with
--xla_force_host_platform_device_count), DKM's rows split over the mesh as in training: a
hardware-independent ratio that speaks for accelerators this machine lacks (goal: <= 1.1). XLA
counts a loop body once, so that child compiles DKM as one chunk per device (it never runs it).
--levers also prints how top-t DKM's time splits (ranking / one update / z_soft); --dkm-costs the
cost analysis of DKM alone per device, as the layers run it and with candidate lists given.

  python benchmarks/step_time.py                                   # ResNet-18 224/32 + CNN
  python benchmarks/step_time.py --image-size 64 --batch 8 --steps 3 --profile
  python benchmarks/step_time.py --models cnn
  python benchmarks/step_time.py --models resnet18 --variants float,lr2vq_full,lr2vq_top --levers
  python benchmarks/step_time.py --models resnet18 --variants float,lr2vq,lr2vq_lists \
    --cost-variants lr2vq,lr2vq_lists --refresh 16
  python benchmarks/step_time.py --models resnet18 --refresh 16 \
    --variants float,lr2vq,lr2vq_lists,lr2vq_lists_iters1,lr2vq_lists_warm1 \
    --cost-variants lr2vq,lr2vq_lists,lr2vq_lists_iters1,lr2vq_lists_warm1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

try:
  import ml_collections  # noqa: F401
except ImportError:  # the GPU image lacks it; lr2vq_jax.train.step uses it in annotations only
  sys.modules["ml_collections"] = types.ModuleType("ml_collections")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from dkm_profile import (  # noqa: E402
  breakdown,
  dkm_costs,
  dkm_levers,
  dkm_profile,
  layer_groups,
  print_levers,
  print_profile,
)
from step_variants import MODELS, VARIANTS, build, input_of, variant_quant  # noqa: E402

from lr2vq_jax.core import dkm as dkm_lib  # noqa: E402
from lr2vq_jax.core import dkm_top  # noqa: E402
from lr2vq_jax.core import kernel as kernel_math  # noqa: E402
from lr2vq_jax.nn import DKM_LISTS, QuantConfig  # noqa: E402
from lr2vq_jax.train import partitioning  # noqa: E402


class Runner:
  """One variant compiled and warmed up, stepped one timed step at a time (for interleaving)."""

  def __init__(self, model_name: str, variant: str, args, quant: QuantConfig):
    self.name = f"{model_name}/{variant}"
    step, self.state, self.batch, self.mesh = build(model_name, variant, args, quant)
    jitted = getattr(step, "jitted", step)  # jit_train_step may wrap the jit in `jax.set_mesh`
    with jax.set_mesh(self.mesh):
      t0 = time.perf_counter()
      self.compiled = jitted.lower(self.state, self.batch).compile()
      self.compile_s = time.perf_counter() - t0
    self.refresh = variant_quant(variant, args, quant).dkm_refresh
    self.times: list[float] = []
    self.ranking_times: list[float] = []  # lr2vq_lists: steps that re-rank (count % N == 0)
    self.step(timed=False)  # warm-up (ranks: every count starts at 0)

  def counts(self) -> list[int]:
    """The layers' DKM call counters (none unless the lists are carried)."""
    lists = self.state.model_state.get(DKM_LISTS, {})
    return [int(v) for p, v in jax.tree_util.tree_leaves_with_path(lists) if "count" in str(p)]

  def step(self, timed: bool = True) -> None:
    counts = self.counts()
    ranking = bool(counts) and counts[0] % self.refresh == 0
    with jax.set_mesh(self.mesh):
      t0 = time.perf_counter()
      self.state, metrics = self.compiled(self.state, self.batch)
      jax.block_until_ready((self.state, metrics))
    if timed:
      (self.ranking_times if ranking else self.times).append(time.perf_counter() - t0)
    assert bool(metrics["finite"]), f"{self.name}: non-finite step"

  def ranking_step(self) -> None:
    """One timed step that re-ranks: the counters set back to 0 first (lr2vq_lists only)."""
    lists = self.state.model_state[DKM_LISTS]
    zeroed = jax.tree_util.tree_map_with_path(
      lambda p, v: jnp.zeros_like(v) if "count" in str(p) else v, lists
    )
    self.state = self.state.replace(model_state={**self.state.model_state, DKM_LISTS: zeroed})
    self.step()

  def result(self) -> dict:
    """Median step; with carried lists (1 ranking + (N-1) carried medians) / N, the amortized."""
    out = {"compile_s": self.compile_s, "times": self.times}
    carried = float(np.median(self.times))
    if self.ranking_times:
      ranking = float(np.median(self.ranking_times))
      out.update(ranking_s=ranking, carried_s=carried, ranking_times=self.ranking_times)
      carried = (ranking + (self.refresh - 1) * carried) / self.refresh
    out["step_s"] = carried
    return out


def time_model(model_name: str, variants: list[str], steps: int, args, quant) -> dict[str, dict]:
  """Compiles every variant, then times them round-robin (a load change on a shared machine hits
  all variants alike); the median step of each."""
  runners = []
  for v in variants:
    runners.append(Runner(model_name, v, args, quant))
    print(f"  {runners[-1].name:<18} compiled in {runners[-1].compile_s:.1f} s", flush=True)
  for _ in range(steps):
    for r in runners:
      r.step()
      if r.refresh > 1 and not r.ranking_times:  # lr2vq_lists: time its ranking steps too
        r.ranking_step()
  for r in runners:
    while r.refresh > 1 and len(r.ranking_times) < steps:
      r.ranking_step()
  return {r.name: r.result() for r in runners}


COST_KEYS = ("flops", "bytes accessed", "transcendentals")


def compiled_cost(model_name: str, variant: str, args, quant: QuantConfig) -> dict[str, float]:
  """XLA's cost analysis of the compiled (per-device, when sharded) train step: no step is run."""
  step, state, batch, mesh = build(model_name, variant, args, quant)
  jitted = getattr(step, "jitted", step)
  with jax.set_mesh(mesh):
    cost = jitted.lower(state, batch).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  return {key: float(cost.get(key, 0.0)) for key in COST_KEYS}


def mesh_costs(args, devices: int, variants: list[str]) -> dict[str, dict[str, float]]:
  """Per-device costs of float and `variants` on a `devices`-device host mesh, in a child process (the
  device count is fixed when JAX starts), with DKM's rows split over the mesh as in training."""
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  cmd = [sys.executable, __file__, "--cost-only", "--models", args.cost_model]
  cmd += ["--image-size", str(args.image_size), "--batch", str(args.batch)]
  cmd += ["--chunk-size", str(args.chunk_size), "--dkm-iters", str(args.dkm_iters)]
  cmd += ["--dkm-grad", args.dkm_grad, "--dkm-top-t", str(args.dkm_top_t)]
  cmd += ["--top-t", str(args.top_t), "--variants", ",".join(variants)]
  cmd += ["--cost-rank-dtype", args.cost_rank_dtype, "--refresh", str(args.refresh)]
  out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def print_costs(title: str, costs: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
  """Table of the costs and each variant's ratio to float per cost."""
  print(f"\n{title}")
  print("| variant | " + " | ".join(COST_KEYS) + " |")
  print("|---|" + "---|" * len(COST_KEYS))
  for name, c in costs.items():
    print(f"| {name} | " + " | ".join(f"{c[key]:.3e}" for key in COST_KEYS) + " |")
  ratios = {}
  for name in [v for v in costs if v != "float"]:
    ratios[name] = {k: costs[name][k] / max(costs["float"][k], 1.0) for k in COST_KEYS}
    print(f"| {name} / float | " + " | ".join(f"{r:.2f}" for r in ratios[name].values()) + " |")
  return ratios


def model_groups(model_name: str, args) -> dict[str, list]:
  """The model's quantized layers grouped by path (`dkm_profile.layer_groups`)."""
  name, preset, d, classes = MODELS[model_name]
  size, _, channels = input_of(model_name, args)
  return layer_groups(name, preset, d, classes, size, channels)


def print_dkm_costs(geos, args, quant: QuantConfig, parts: list[str]) -> None:
  """DKM alone (all quantized layers, forward + backward), XLA's costs per device: top-t as the
  layers run it, and with each row's candidate lists given (carried), 3 / 1 / 0 updates."""
  t, iters = args.top_t, quant.dkm_iters
  cases = [(f"top-{t}, {iters} updates", iters, False)]
  cases += [(f"lists given, {i} updates", i, True) for i in sorted({iters, 1, 0}, reverse=True)]
  rows = dkm_costs(geos, args.cost_devices, t, cases)
  print(f"\nDKM alone, XLA cost analysis per device of {args.cost_devices} (all quantized layers)")
  print("| DKM | flops | bytes accessed | transcendentals |")
  print("|---|---|---|---|")
  for label, *vals in rows:
    print(f"| {label} | " + " | ".join(f"{v:.3e}" for v in vals) + " |")
  ranking_bytes = rows[0][2] - rows[1][2]
  parts.append(f"dkm_ranking_bytes_share_{args.cost_devices}dev={ranking_bytes / rows[0][2]:.2f}")


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--models", default="resnet18,cnn")
  ap.add_argument("--variants", default="float,lowrank,lr2vq,dkm")
  ap.add_argument("--image-size", type=int, default=224, help="ResNet-18 input size")
  ap.add_argument("--batch", type=int, default=32, help="ResNet-18 batch")
  ap.add_argument("--cnn-batch", type=int, default=64)
  ap.add_argument("--steps", type=int, default=3, help="timed steps (median); ResNet-18 is slow")
  ap.add_argument("--cnn-steps", type=int, default=20)
  ap.add_argument("--dtype", default="float32")
  ap.add_argument("--chunk-size", type=int, default=QuantConfig.chunk_size)
  ap.add_argument("--dkm-iters", type=int, default=QuantConfig().value("dkm_iters"))
  ap.add_argument("--dkm-grad", default=QuantConfig.dkm_grad, help="unrolled | last")
  ap.add_argument("--dkm-top-t", type=int, default=QuantConfig.dkm_top_t, help="of 'lr2vq'")
  ap.add_argument("--top-t", type=int, default=8, help="t of the lr2vq_top* variants")
  ap.add_argument("--refresh", type=int, default=16, help="N of lr2vq_lists: re-rank every N steps")
  ap.add_argument("--profile", action="store_true", help="also time DKM alone (ResNet-18 layers)")
  ap.add_argument(
    "--profile-scope",
    default="groups",
    choices=("groups", "all"),
    help="time each layer group and all layers (groups) or all layers only (all)",
  )
  ap.add_argument(
    "--profile-chunks", default="4096,16384", type=lambda s: [int(x) for x in s.split(",")]
  )
  ap.add_argument("--levers", action="store_true", help="DKM alone, lever by lever (ResNet-18)")
  ap.add_argument(
    "--dkm-costs",
    action="store_true",
    help="cost analysis of DKM alone per device: top-t vs candidate lists given (ResNet-18)",
  )
  ap.add_argument("--cost-devices", type=int, default=8, help="mesh size of the cost analysis")
  ap.add_argument("--cost-model", default="resnet18", help="model of the cost analysis ('' skips)")
  ap.add_argument(
    "--cost-variants", default="lr2vq_full,lr2vq_top", help="quantize variants costed vs float"
  )
  ap.add_argument(
    "--cost-rank-dtype",
    default="bfloat16",
    choices=("bfloat16", "float32"),
    help="top-t ranking matmul dtype in the cost analysis (bfloat16: the accelerator default)",
  )
  ap.add_argument("--cost-only", action="store_true", help=argparse.SUPPRESS)  # the child process
  args = ap.parse_args()
  quant = QuantConfig(
    chunk_size=args.chunk_size,
    dkm_iters=args.dkm_iters,
    dkm_grad=args.dkm_grad,
    dkm_top_t=args.dkm_top_t,
    shard_axis=partitioning.ROW_AXIS,
  )
  if args.cost_only:
    # XLA's cost analysis counts a while loop's body once, whatever its trip count: DKM's scan
    # over chunks would be undercounted by the number of chunks. Count it as one chunk per device
    # (compiled only, never run, so the size of that chunk costs nothing here).
    dkm_lib.CPU_ATTENTION_BUDGET = 1 << 62
    dkm_top.SELECT_DTYPE["cpu"] = getattr(jnp, args.cost_rank_dtype)  # costed as on accelerators
    quant = dataclasses.replace(quant, chunk_size=1 << 30)
    variants = ["float", *args.variants.split(",")]
    carried = [v for v in variants if "dkm_refresh" in VARIANTS[v][3]]
    costs = {v: compiled_cost(args.models, v, args, quant) for v in variants if v not in carried}
    if carried:  # a carried step: the lists as given, no ranking branch
      kernel_math.carried_neighbors = lambda arrays, lists, count, config: (lists, count + 1)
      costs.update({v: compiled_cost(args.models, v, args, quant) for v in carried})
    print(json.dumps(costs))
    return
  print(
    f"jax {jax.__version__}, {jax.device_count()} {jax.devices()[0].platform} device(s), "
    f"{os.cpu_count()} CPUs; dtype {args.dtype}; DKM iters {quant.dkm_iters}, chunk {quant.chunk_size}, "
    f"grad {quant.dkm_grad}, top-t {quant.dkm_top_t} (lr2vq_top*: {args.top_t}); "
    f"load average {os.getloadavg()[0]:.1f}"
  )
  results: dict[str, dict] = {}
  for model_name in args.models.split(","):
    steps = args.cnn_steps if model_name == "cnn" else args.steps
    timed = time_model(model_name, args.variants.split(","), steps, args, quant)
    for key, r in timed.items():
      print(
        f"  {key:<18} step {r['step_s'] * 1e3:9.1f} ms  "
        f"(runs: {', '.join(f'{t:.3f}' for t in r['times'])})",
        flush=True,
      )
      if "ranking_s" in r:
        print(
          f"  {'':<18} amortized over {args.refresh} steps: ranking step "
          f"{r['ranking_s'] * 1e3:.1f} ms (runs: {', '.join(f'{t:.3f}' for t in r['ranking_times'])})"
          f", carried step {r['carried_s'] * 1e3:.1f} ms",
          flush=True,
        )
    results.update(timed)

  print()
  print(
    "| model | input | batch | variant | step ms (median) | images/s | × float | min ms "
    "| × float (min) | compile s |"
  )
  print("|---|---|---|---|---|---|---|---|---|---|")
  for key, r in results.items():
    model_name, variant = key.split("/")
    base = results.get(f"{model_name}/float")
    ratio = f"{r['step_s'] / base['step_s']:.2f}" if base else "-"
    ratio_min = f"{min(r['times']) / min(base['times']):.2f}" if base else "-"
    size, batch, _ = input_of(model_name, args)
    print(
      f"| {MODELS[model_name][0]} | {size} | {batch} | {variant} | {r['step_s'] * 1e3:.1f} "
      f"| {batch / r['step_s']:.1f} | {ratio} | {min(r['times']) * 1e3:.1f} | {ratio_min} "
      f"| {r['compile_s']:.1f} |"
    )

  big = [m for m in args.models.split(",") if m != "cnn"]
  if args.profile and big:
    print(f"\nDKM alone ({big[0]}: forward + backward, LR²VQ d̃, a group's layers in one jit):")
    groups = model_groups(big[0], args)
    print_profile(
      dkm_profile(groups, quant.dkm_iters, args.profile_chunks, args.profile_scope, args.steps)
    )

  cost_parts = []
  if args.cost_model:
    costs = mesh_costs(args, args.cost_devices, args.cost_variants.split(","))
    title = (
      f"XLA cost analysis, {args.cost_model} {args.image_size} px batch {args.batch}, per device "
      f"on a {args.cost_devices}-device mesh (DKM rows split over it; top-t ranking in "
      f"{args.cost_rank_dtype})"
    )
    tag = f"{args.cost_devices}dev"
    for variant, ratios in print_costs(title, costs).items():
      cost_parts += [f"{k.split()[0]}_{tag}_{variant}={v:.2f}" for k, v in ratios.items()]

  if args.levers and big:
    print(f"\nDKM levers ({big[0]}: forward + backward, {quant.dkm_iters} iterations):")
    groups = model_groups(big[0], args)
    lever_rows = dkm_levers(groups, quant.dkm_iters, quant.chunk_size, args.top_t)
    print_levers(lever_rows)
    for desc, b in breakdown(lever_rows, quant.dkm_iters, args.top_t).items():
      group = desc.split()[0]
      cost_parts += [f"dkm_ranking_share_{group}={b['ranking_share']:.2f}"]

  if args.dkm_costs and big:
    print_dkm_costs(model_groups(big[0], args)["all"], args, quant, cost_parts)

  def ratio(model_name: str, variant: str) -> str:
    a, b = results.get(f"{model_name}/{variant}"), results.get(f"{model_name}/float")
    return f"{a['step_s'] / b['step_s']:.2f}" if a and b else "nan"

  parts = []
  for model_name in args.models.split(","):
    for variant in [v for v in VARIANTS if v not in ("float", "lowrank")]:
      if f"{model_name}/{variant}" in results:
        parts.append(f"{variant}_over_float_{model_name}={ratio(model_name, variant)}")
  if any(m != "cnn" for m in args.models.split(",")):
    parts += [f"image_size={args.image_size}", f"batch={args.batch}"]
  parts += cost_parts
  print(f"RESULT {' '.join(parts)}")


if __name__ == "__main__":
  main()
