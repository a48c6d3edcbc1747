"""Which d̃ predictor works? Candidates against the measured best d̃ on the digits task.

Reads the d̃ sweep of the chosen recipe (`benchmarks/ablations.py --variants recipe --ds ...`: low-rank
pre-training and LR²VQ fine-tuning for every d̃ and seed, float models from `benchmarks/pareto.py`)
and scores every d̃ with each predictor, all computed before quantization fine-tuning:

  weights (float)     `lq.estimate_dim` on the float weights: low-rank + k-means error
  weights (low-rank)  the same k-means error on the low-rank pre-trained weights
  rank-d̃ val loss     validation loss of the low-rank pre-trained model (no clustering)
  clustered SVD       validation loss after truncated SVD + k-means (no training at all)
  clustered LR        validation loss after low-rank pre-training + k-means (quantize stage init)
  ... + BN            the same after label-free BN re-estimation on 20 training batches

The measured best d̃ has the lowest mean validation loss of the exported artifact after
fine-tuning (top-1 on validation and test shown).

  python benchmarks/dim_predictors.py --seeds 5
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pareto  # noqa: E402
from absl import logging  # noqa: E402

import lr2vq_jax as lq  # noqa: E402
from lr2vq_jax.train import partitioning  # noqa: E402
from lr2vq_jax.train.config import load_config  # noqa: E402
from lr2vq_jax.train.dim_select import clustered_score, truncated  # noqa: E402
from lr2vq_jax.train.trainer import build_stage, restore_final  # noqa: E402

PREDICTORS = ("weights (float)", "weights (low-rank)", "rank-d̃ val loss", "clustered SVD",
              "clustered SVD + BN", "clustered LR", "clustered LR + BN")  # fmt: skip
BN_BATCHES = 20


def weight_errors(float_params, lowrank_params: dict, rules, m: int, d: int, key, mode: str):
  """Relative low-rank + k-means error at d̃ of the float weights, and k-means error of the
  low-rank pre-trained weights Z·P (whose low-rank error is zero by construction)."""
  est = lq.estimate_dim_model(float_params, rules, candidates=[d], key=key)
  energy = sum(e.energy for e in est.layers.values())
  float_err = sum(e.error_at(d) for e in est.layers.values()) / energy
  return float_err, pareto.lowrank_cluster_error(lowrank_params, 16, m, d, key, mode)


def scores_for_seed(args, seed: int, blocks: str, ds: list[int]) -> dict:
  config = load_config(f"{ROOT}/configs/digits_ablations.py:{args.variant},{blocks}")
  config.seed = config.data.seed = seed
  m = 9 if blocks == "m9" else 18
  float_dir = str(Path(args.pareto) / f"seed{seed}" / "base" / "float")
  float_stage = build_stage(config, "float", str(Path(float_dir).parent))
  float_vars = partitioning.to_host(restore_final(float_stage, float_dir).variables())
  out = {p: {} for p in PREDICTORS} | {"final val loss": {}, "final val": {}, "final test": {}}
  out["rank-d̃ val top-1"] = {}
  for d in ds:
    config.d = d
    run = Path(args.runs) / f"seed{seed}" / f"{args.variant}_{blocks}_d{d}"
    lr_stage = build_stage(config, "lowrank", str(run))
    lr_vars = partitioning.to_host(restore_final(lr_stage, lr_stage.workdir).variables())
    rules = lr_stage.rules
    key = jax.random.key(seed)
    errors = weight_errors(float_vars["params"], lr_vars["params"], rules, m, d, key,
                           config.quant.projection)  # fmt: skip
    out["weights (float)"][d], out["weights (low-rank)"][d] = errors
    rows = (Path(lr_stage.workdir) / "metrics.jsonl").read_text().splitlines()
    last = [json.loads(r)["scalars"] for r in rows if "eval_loss" in r][-1]
    out["rank-d̃ val loss"][d] = last["eval_loss"]
    out["rank-d̃ val top-1"][d] = last["eval_top1"]
    tmp = str(run / "dim_predictors")
    svd_vars = truncated(config, float_vars)
    out["clustered SVD"][d] = clustered_score(config, svd_vars, tmp)[0]
    out["clustered SVD + BN"][d] = clustered_score(config, svd_vars, tmp, BN_BATCHES)[0]
    out["clustered LR"][d] = clustered_score(config, lr_vars, tmp)[0]
    out["clustered LR + BN"][d] = clustered_score(config, lr_vars, tmp, BN_BATCHES)[0]
    final = json.loads((run / "results.json").read_text())[-1]
    out["final val loss"][d] = final["val_loss"]
    out["final val"][d], out["final test"][d] = final["val_top1"], final["top1"]
  return out


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--pareto", default="runs/bench/pareto", help="float models (pareto.py --out)")
  ap.add_argument("--runs", default="runs/bench/ablations", help="ablations.py --ds sweep --out")
  ap.add_argument("--variant", default="recipe")
  ap.add_argument("--seeds", type=int, default=5)
  ap.add_argument("--blocks", default="m9,m18")
  ap.add_argument("--ds", default="2,3,4,6,9")
  args = ap.parse_args()
  logging.set_verbosity(logging.WARNING)
  summary = {}
  for blocks in args.blocks.split(","):
    m = 9 if blocks == "m9" else 18
    ds = [d for d in (int(x) for x in args.ds.split(",")) if d <= m]
    per_seed = [scores_for_seed(args, s, blocks, ds) for s in range(args.seeds)]
    keys = per_seed[0]
    mean = {k: {d: float(np.mean([p[k][d] for p in per_seed])) for d in ds} for k in keys}
    std = {k: {d: float(np.std([p[k][d] for p in per_seed])) for d in ds} for k in keys}
    best = min(ds, key=lambda d: mean["final val loss"][d])
    picks = {p: min(ds, key=lambda d: mean[p][d]) for p in PREDICTORS}
    summary[blocks] = {"mean": mean, "std": std, "picks": picks, "best": best}
    print(f"\nm = {m}, k = 16, {args.seeds} seeds, `{args.variant}` (means; lower is better)")
    cols = [*PREDICTORS, "final val loss"]
    print("| d̃ | " + " | ".join(cols) + " | final val top-1 | final test top-1 |")
    print("|---|" + "---|" * (len(cols) + 2))
    for d in ds:
      cells = [f"{mean[c][d]:.4f}" for c in cols]
      cells += [f"{mean[c][d]:.2f} ± {std[c][d]:.2f}" for c in ("final val", "final test")]
      print(f"| {d} | " + " | ".join(cells) + " |")
    print(f"measured best d̃ (final validation loss): {best}")
    print("picks: " + ", ".join(f"{p} → {d}" for p, d in picks.items()))
    print("RESULT " + f"m={m} best={best} " + " ".join(
      f"{p.replace(' ', '_')}={d}" for p, d in picks.items()))  # fmt: skip
  name = f"dim_predictors_{args.variant}_{args.blocks.replace(',', '_')}.json"
  Path(args.runs, name).write_text(json.dumps(summary, indent=1, default=str))


if __name__ == "__main__":
  jax.config.update("jax_compilation_cache_dir", str(ROOT / "runs" / "bench" / "xla_cache"))
  main()
