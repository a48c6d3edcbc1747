"""Ablations of the LR²VQ recipe and the final LR²VQ / PQ / vanilla DKM comparison.

Every row is a config, `configs/digits_ablations.py:<variant>,<m9|m18>`, run through the project's
own pipeline for each seed; top-1 is that of the exported artifact. Selection uses the validation
split (135 images carved from the training images); the 450 test images are only reported.

The float model, the reference low-rank pre-training and the reference runs come from
`benchmarks/pareto.py`'s output (--pareto), which trains them with the same recipe; variants that
only change the export (storage layout, BN re-estimation) re-export the reference checkpoint.

  python benchmarks/ablations.py --seeds 5                          # ablations, then comparison
  python benchmarks/ablations.py --seeds 5 --variants recipe,pq_recipe,dkm_recipe,pq,dkm
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import contextlib
import json
import multiprocessing
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "configs"))
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(ROOT / "runs" / "bench" / "xla_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import digits_ablations as ablations  # noqa: E402
import numpy as np  # noqa: E402

CONFIG = ROOT / "configs" / "digits_ablations.py"
# quant.store is not here: it is recorded in the quantize stage's variables (and changes the fp16
# rounding evaluation uses), so the store variant retrains that stage.
EXPORT_ONLY = {"quantize.bn_reestimate_batches"}
COMPARISON = ("recipe", "pq", "dkm", "pq_recipe", "dkm_recipe", *ablations.ON_RECIPE)


def _changes(variant: str) -> dict:
  variant, _, d = variant.partition("@")
  if d:
    return {**_changes(variant), "d": int(d[1:])}
  if variant == "recipe":
    return dict(ablations.RECIPE)
  if variant in ablations.ON_RECIPE:
    return {"recipe": "+", **ablations.ON_RECIPE[variant]}
  return dict(ablations.VARIANTS.get(variant, {}))


def _touches_lowrank(changes: dict) -> bool:
  return any(k.startswith("lowrank.") or k == "quant.projection" for k in changes)


def run_job(variant: str, blocks: str, seed: int, out: str, pareto: str, d: int = 0) -> dict:
  """One (variant, block size, seed[, d̃]): its remaining stages, reusing pareto.py's stages."""
  from absl import logging

  from lr2vq_jax.train import pipeline
  from lr2vq_jax.train.config import load_config

  logging.set_verbosity(logging.WARNING)
  workdir = Path(out) / f"seed{seed}" / (f"{variant}_{blocks}" + (f"_d{d}" if d else ""))
  cached = workdir / "results.json"
  if cached.exists():
    saved = json.loads(cached.read_text())
    rec = saved[-1]
    missing = [s for s in ("val", "test") if f"{s}_loss" not in rec]
    for split in missing:  # runs from before the pipeline recorded losses: evaluate the artifact
      artifact = workdir / rec["stage"] / "artifact"
      rec[f"{split}_loss"] = _artifact_loss(artifact, "eval" if split == "val" else "test")
    if missing:
      cached.write_text(json.dumps(saved, indent=1))
    return {**rec, "variant": _label(variant, d), "blocks": blocks, "seed": seed}
  config = load_config(f"{CONFIG}:{variant},{blocks}" + (f",d{d}" if d else ""))
  config.seed = config.data.seed = seed
  m = 9 if blocks == "m9" else 18
  shared = Path(pareto) / f"seed{seed}"
  float_dir = str(shared / "base" / "float")
  method = config.stages.split(",")[-1]
  changes = _changes(variant)
  for name in ("lowrank", "quantize", "pq", "dkm"):
    config[name].teacher = float_dir
  workdir.mkdir(parents=True, exist_ok=True)
  if method != "quantize":
    plain = not any(config[method].get(k) for k in ("distill", "bn_reestimate_batches"))
    if plain:  # pareto.py ran exactly this: re-export its checkpoint
      _copy_stage(shared / f"{method}_k16_m{m}" / method, workdir / method)
    config[method].init_from = float_dir
    config.stages = method
  elif not _touches_lowrank(changes):
    lowrank_dir = shared / f"lowrank_m{m}_d{config.d}" / "lowrank"
    if set(changes) <= EXPORT_ONLY:
      _copy_stage(shared / f"lr2vq_k16_m{m}_d{config.d}" / "quantize", workdir / "quantize")
    config.quantize.init_from = str(lowrank_dir)
    config.stages = "quantize"
  else:
    config.lowrank.init_from = float_dir
    config.stages = "lowrank,quantize"
  with open(workdir / "log.txt", "a") as log, contextlib.redirect_stdout(log):
    records = pipeline.run(config, str(workdir))
  if records is None:
    raise RuntimeError(f"{workdir} was preempted; rerun to resume")
  return {**records[-1], "variant": _label(variant, d), "blocks": blocks, "seed": seed}


def _label(variant: str, d: int) -> str:
  return f"{variant}@d{d}" if d else variant


def _artifact_loss(artifact: Path, split: str) -> float:
  """Loss of an exported artifact on `split`, as the pipeline's record computes it."""
  import ml_collections

  import lr2vq_jax as lq
  from lr2vq_jax.models import create_model
  from lr2vq_jax.train import input_pipeline, partitioning
  from lr2vq_jax.train.trainer import evaluate

  loaded = lq.load(str(artifact))
  meta = loaded.manifest["metadata"]
  model = create_model(meta["model"], num_classes=meta["num_classes"])
  data = ml_collections.ConfigDict(meta["data"])
  result = evaluate(
    model,
    loaded.decode(),
    lambda: input_pipeline.build_input(data, split=split),
    partitioning.make_mesh(),
  )
  return round(result["loss"], 4)


def _copy_stage(src: Path, dst: Path) -> None:
  if dst.exists():
    return
  if not (src / "checkpoints").exists():
    raise FileNotFoundError(f"{src} has no checkpoints: run benchmarks/pareto.py --seeds N first")
  # config.json stays behind: the job writes its own (equal in everything but export-only fields)
  shutil.copytree(src, dst, ignore=shutil.ignore_patterns("artifact", "config.json"))


def aggregate(records: list[dict]) -> dict[tuple[str, str], dict]:
  groups: dict[tuple[str, str], list[dict]] = {}
  for r in records:
    groups.setdefault((r["variant"], r["blocks"]), []).append(r)
  out = {}
  for key, rs in groups.items():
    test = np.array([r["top1"] for r in rs])
    val = np.array([r["val_top1"] for r in rs])
    loss = np.array([r["val_loss"] for r in rs])
    test_loss = np.array([r["test_loss"] for r in rs])
    out[key] = {
      "test_loss": float(test_loss.mean()),
      "test_loss_std": float(test_loss.std()),
      "val_loss": float(loss.mean()),
      "val_loss_std": float(loss.std()),
      "test": float(test.mean()),
      "test_std": float(test.std()),
      "val": float(val.mean()),
      "val_std": float(val.std()),
      "bytes": rs[0]["exported_bytes"],
      "d": rs[0]["d"],
      "seeds": len(rs),
    }
  return out


def table(rows: dict, variants: list[str], blocks: list[str]) -> str:
  """One row per variant; Δ = change of the mean validation loss against `reference`."""
  head = "| variant | changes | bytes | " + " | ".join(
    f"{b} val loss | {b} Δ val loss | {b} val top-1 | {b} test top-1" for b in blocks
  )
  lines = [head + " |", "|---|---|---|" + "---|---|---|---|" * len(blocks)]
  for v in variants:
    cells = []
    for b in blocks:
      r, ref = rows.get((v, b)), rows.get(("reference", b))
      if r is None:
        cells += ["-"] * 4
        continue
      cells += [
        f"{r['val_loss']:.4f}",
        f"{r['val_loss'] - ref['val_loss']:+.4f}" if ref else "-",
        f"{r['val']:.2f} ± {r['val_std']:.2f}",
        f"{r['test']:.2f} ± {r['test_std']:.2f}",
      ]
    changes = ", ".join(f"{k}={v_}" for k, v_ in _changes(v).items()) or "-"
    sizes = "/".join(f"{rows[(v, b)]['bytes']:,}" for b in blocks if (v, b) in rows)
    lines.append(f"| {v} | {changes} | {sizes} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def comparison(rows: dict, blocks: list[str]) -> str:
  """LR²VQ (recipe) vs the better-on-validation variant of each baseline, at equal bytes."""
  lines = [
    "| m | method | config | bytes | val loss | val top-1 | test top-1 | LR²VQ margin / larger std "
    "| test loss |",
    "|---|---|---|---|---|---|---|---|---|",
  ]
  for b in blocks:
    mine = [v for v, b_ in rows if b_ == b and v.split("@")[0] in ("recipe", *ablations.ON_RECIPE)]
    if not mine:
      continue
    pick = min(mine, key=lambda v: rows[(v, b)]["val_loss"])  # d̃ chosen on validation
    lr = rows[(pick, b)]
    arg = f"{pick.split('@')[0]},{b}" + (f",d{lr['d']}" if "@" in pick else "")
    lines.append(
      f"| {b[1:]} | LR²VQ (d̃ {lr['d']}) | {arg} | {lr['bytes']:,} | {lr['val_loss']:.4f} "
      f"| {lr['val']:.2f} ± {lr['val_std']:.2f} | {lr['test']:.2f} ± {lr['test_std']:.2f} | "
      f"| {lr['test_loss']:.4f} ± {lr['test_loss_std']:.4f} |"
    )
    for name, label in (("pq", "PQ"), ("dkm", "vanilla DKM")):
      options = [v for v in (name, f"{name}_recipe") if (v, b) in rows]
      if not options:
        continue
      best = min(options, key=lambda v: rows[(v, b)]["val_loss"])
      r = rows[(best, b)]
      margin = lr["test"] - r["test"]
      std = max(lr["test_std"], r["test_std"])
      verdict = "yes" if margin > std else "no"
      lines.append(
        f"| {b[1:]} | {label} | {best},{b} | {r['bytes']:,} | {r['val_loss']:.4f} "
        f"| {r['val']:.2f} ± {r['val_std']:.2f} "
        f"| {r['test']:.2f} ± {r['test_std']:.2f} | {margin:+.2f} / {std:.2f}: {verdict} "
        f"| {r['test_loss']:.4f} ± {r['test_loss_std']:.4f} |"
      )
  return "\n".join(lines)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--out", default="runs/bench/ablations")
  ap.add_argument("--pareto", default="runs/bench/pareto", help="benchmarks/pareto.py's --out")
  ap.add_argument("--seeds", type=int, default=5)
  ap.add_argument("--blocks", default="m9,m18")
  ap.add_argument("--variants", default=",".join(ablations.VARIANTS))
  ap.add_argument("--workers", type=int, default=2, help="parallel runs (processes)")
  ap.add_argument("--ds", default="", help="d̃ sweep of `recipe` (d̃ ≤ m kept)")
  args = ap.parse_args()
  variants = [v for v in args.variants.split(",") if v]
  blocks = [b for b in args.blocks.split(",") if b]
  ds = [int(d) for d in args.ds.split(",") if d] or [0]
  jobs = [
    (v, b, s, d)
    for v in variants
    for b in blocks
    for d in (ds if v == "recipe" else [0])  # the sweep is the recipe's
    for s in range(args.seeds)
    if d <= (9 if b == "m9" else 18)
  ]
  records = []
  ctx = multiprocessing.get_context("spawn")
  with futures.ProcessPoolExecutor(args.workers, mp_context=ctx) as pool:
    pending = {
      pool.submit(run_job, v, b, s, args.out, args.pareto, d): (v, b, s, d) for v, b, s, d in jobs
    }
    for done in futures.as_completed(pending):
      rec = done.result()
      records.append(rec)
      print(
        f"  {rec['variant']:<14} {rec['blocks']:<4} seed {rec['seed']}  val {rec['val_top1']:6.2f}"
        f"  test {rec['top1']:6.2f}  ({len(records)}/{len(jobs)})",
        flush=True,
      )
  rows = aggregate(records)
  out = Path(args.out)
  (out / "results.json").write_text(
    json.dumps(
      {"records": records, "rows": {f"{v},{b}": r for (v, b), r in rows.items()}}, indent=1
    )
  )
  print(f"\nk = 16, digits CNN, {args.seeds} seeds, mean ± std; Δ val loss against `reference`")
  shown = list(dict.fromkeys(v for v, _ in rows if v.split("@")[0] not in COMPARISON))
  print(table(rows, shown, blocks))
  for v in ablations.ON_RECIPE:
    for b in blocks:
      base = rows.get((f"recipe@d{ablations.RECIPE_D[b]}", b))
      if (v, b) in rows and base:
        r = rows[(v, b)]
        print(
          f"{v} {b}: val loss {r['val_loss']:.4f} vs recipe {base['val_loss']:.4f} "
          f"({r['val_loss'] - base['val_loss']:+.4f}); test {r['test']:.2f} ± {r['test_std']:.2f} "
          f"vs {base['test']:.2f} ± {base['test_std']:.2f}"
        )
  if any(v in COMPARISON for v in variants):
    print(
      "\nEqual exported bytes; baselines: the better (val loss) of plain and with the recipe's help"
    )
    print(comparison(rows, blocks))


if __name__ == "__main__":
  main()
