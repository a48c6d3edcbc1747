"""Paired digits accuracy of the fast quantize-step levers against the current recipe.

Per seed: one float model and, per block size, one low-rank pre-training (the recipe of
configs/digits_ablations.py: `recipe,m9` / `recipe,m18`); every arm then runs the quantize stage
from that same low-rank checkpoint, so arms differ only in the lever (paired by seed). Reports the
mean paired difference (arm − the first arm, `ref` by default) ± 95% t-interval of the exported
artifact's validation loss (the selection metric) and test top-1; the 450 test digits are only
reported.

  python benchmarks/dkm_fast_accuracy.py --seeds 5 --out runs/bench/dkm_fast
  python benchmarks/dkm_fast_accuracy.py --seeds 5 --out runs/bench/dkm_fast --arms ref,top8
  python benchmarks/dkm_fast_accuracy.py --seeds 5 --arms top8,lists16   # carried lists vs top-8
  python benchmarks/dkm_fast_accuracy.py --seeds 5 --arms top8,lists16_iters1,lists16_warm1
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(ROOT / "runs" / "bench" / "xla_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

CONFIG = ROOT / "configs" / "digits_ablations.py"
# arm -> config.quant overrides of the quantize stage ("ref": attention over all k, the recipe before)
ARMS = {
  "ref": {"dkm_top_t": 0},
  "top8": {"dkm_top_t": 8},
  "top2": {"dkm_top_t": 2},
  "iters1": {"dkm_iters": 1},
  "lists16": {"dkm_top_t": 8, "dkm_refresh": 16},  # top-8 lists carried, re-ranked every 16 steps
  # ... with one centroid update per step: from the codebook, or warm-started (QuantConfig.dkm_warm)
  "lists16_iters1": {"dkm_top_t": 8, "dkm_refresh": 16, "dkm_iters": 1},
  "lists16_warm1": {"dkm_top_t": 8, "dkm_refresh": 16, "dkm_iters": 1, "dkm_warm": True},
  "top8_warm1": {"dkm_top_t": 8, "dkm_iters": 1, "dkm_warm": True},
}
METRICS = ("val_loss", "val_top1", "top1", "test_loss")
MASS_T = (8, 4, 2)  # t of the dropped-mass table


def run_stage(out: Path, tag: str, blocks: str, seed: int, stage: str, init_from: str, quant=None):
  """One pipeline stage under out/seed<s>/<tag> (results.json or done.json is the cache)."""
  from lr2vq_jax.train import pipeline
  from lr2vq_jax.train.config import load_config

  workdir = out / f"seed{seed}" / tag
  done = workdir / stage / "done.json"
  if done.exists():
    return json.loads(done.read_text())
  config = load_config(f"{CONFIG}:recipe,{blocks}")
  config.seed = config.data.seed = seed
  config.stages = stage
  if init_from:
    config[stage].init_from = init_from
  for name, value in (quant or {}).items():
    config.quant[name] = value
  workdir.mkdir(parents=True, exist_ok=True)
  t0 = time.monotonic()
  with open(workdir / "log.txt", "a") as log, contextlib.redirect_stdout(log):
    records = pipeline.run(config, str(workdir))
  if records is None:
    raise RuntimeError(f"{workdir} was preempted; rerun to resume")
  rec = {**(records[-1] if records else {}), "wall_s": round(time.monotonic() - t0, 1)}
  done.write_text(json.dumps(rec))
  return rec


def dropped_mass_rows(out: Path, seeds: int, blocks: list[str], ts=MASS_T) -> list[tuple]:
  """Mean attention mass that top-t drops on the reference runs' trained layers (at their final
  Z, input codebook and τ): over the refined centroids, outside the t nearest input centroids."""
  import jax
  from flax import traverse_util

  from lr2vq_jax.core import dkm_top
  from lr2vq_jax.core.dkm import dkm_naive
  from lr2vq_jax.train.config import load_config
  from lr2vq_jax.train.trainer import build_stage, restore_final

  rows = []
  for b in blocks:
    for seed in range(seeds):
      config = load_config(f"{CONFIG}:recipe,{b}")
      config.seed = config.data.seed = seed
      stage = build_stage(config, "quantize", str(out / f"seed{seed}" / f"ref_{b}"))
      variables = jax.device_get(restore_final(stage, stage.workdir).variables())
      params = traverse_util.flatten_dict(variables["params"], sep="/")
      quant = traverse_util.flatten_dict(variables["quant"], sep="/")
      for key in sorted(k for k in params if k.endswith("/codebook")):
        layer = key[: -len("/codebook")]
        z, c0, tau = params[f"{layer}/z"], params[key], quant[f"{layer}/tau"]
        _, c = dkm_naive(z, c0, tau=tau, iters=config.quant.dkm_iters)
        masses = [float(dkm_top.dropped_mass(z, c, tau, t, ranked_by=c0).mean()) for t in ts]
        rows.append((b, seed, layer, c0.shape[0], *masses))
  return rows


def paired(a: list[float], b: list[float]) -> str:
  diff = np.asarray(a) - np.asarray(b)
  half = stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff))
  return f"{diff.mean():+.4f} ± {half:.4f}"


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--seeds", type=int, default=5)
  ap.add_argument("--out", default=str(ROOT / "runs" / "bench" / "dkm_fast"))
  ap.add_argument("--arms", default="ref,top8,top2")
  ap.add_argument("--blocks", default="m9,m18")
  ap.add_argument("--mass-only", action="store_true", help="only the dropped-mass table")
  args = ap.parse_args()
  out, arms, blocks = Path(args.out), args.arms.split(","), args.blocks.split(",")
  from absl import logging

  logging.set_verbosity(logging.WARNING)
  recs: dict = {}
  for seed in range(0 if args.mass_only else args.seeds):
    float_dir = out / f"seed{seed}" / "base" / "float"
    run_stage(out, "base", "m9", seed, "float", "")
    for b in blocks:
      lowrank = out / f"seed{seed}" / f"lowrank_{b}" / "lowrank"
      run_stage(out, f"lowrank_{b}", b, seed, "lowrank", str(float_dir))
      for arm in arms:
        rec = run_stage(out, f"{arm}_{b}", b, seed, "quantize", str(lowrank), ARMS[arm])
        recs[(arm, b, seed)] = rec
        print(f"seed {seed} {b} {arm:<7} " + " ".join(f"{m} {rec[m]}" for m in METRICS), flush=True)
  parts = [] if args.mass_only else print_paired(recs, arms, blocks, args.seeds)
  if "ref" in arms or args.mass_only:  # the mass is measured on the ref runs' layers
    print_mass(dropped_mass_rows(out, args.seeds, blocks, MASS_T), blocks)
  print(f"RESULT seeds={args.seeds} " + " ".join(parts))


def print_paired(recs: dict, arms: list[str], blocks: list[str], seeds: int) -> list[str]:
  """Per arm and block size: means, and the paired difference to the first arm (`ref` by
  default) with its 95% interval; returns the RESULT parts (Δ validation loss per arm and block)."""
  parts, base = [], arms[0]
  print(
    f"\n| arm | blocks | val loss | test top-1 | Δval loss vs {base} (95%) | Δtest top-1 vs {base} |"
  )
  print("|---|---|---|---|---|---|")
  for b in blocks:
    ref = {m: [recs[(base, b, s)][m] for s in range(seeds)] for m in METRICS}
    for arm in arms:
      got = {m: [recs[(arm, b, s)][m] for s in range(seeds)] for m in METRICS}
      print(
        f"| {arm} | {b} | {np.mean(got['val_loss']):.4f} | {np.mean(got['top1']):.2f} "
        f"| {paired(got['val_loss'], ref['val_loss'])} | {paired(got['top1'], ref['top1'])} |"
      )
      if arm != base:
        parts.append(f"dval_{arm}_{b}={paired(got['val_loss'], ref['val_loss']).replace(' ', '')}")
  return parts


def print_mass(rows: list[tuple], blocks: list[str], ts=MASS_T) -> None:
  print("\n| blocks | layer | k | " + " | ".join(f"mass dropped, t={t}" for t in ts) + " |")
  print("|---|---|---|" + "---|" * len(ts))
  for b in blocks:
    for layer in sorted({r[2] for r in rows if r[0] == b}):
      got = np.array([r[4:] for r in rows if r[0] == b and r[2] == layer])
      k = next(r[3] for r in rows if r[2] == layer)
      print(f"| {b} | {layer} | {k} | " + " | ".join(f"{m:.2e}" for m in got.mean(0)) + " |")


if __name__ == "__main__":
  main()
