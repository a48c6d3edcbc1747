"""Which d̃ predictor works? Candidates against the measured best d̃ on the digits task (issue 8).

Reads the runs of `benchmarks/pareto.py --sweep-ms 9,18` (float models, low-rank pre-training and
LR²VQ fine-tuning for every d̃ and seed) and scores every d̃ with each predictor, all computed
before quantization fine-tuning:

  weights (float)     `lq.estimate_dim` on the float weights: low-rank + k-means error
  weights (low-rank)  the same k-means error on the low-rank pre-trained weights
  rank-d̃ val loss     validation loss of the low-rank pre-trained model (no clustering)
  clustered SVD       validation loss after truncated SVD + k-means (no training at all)
  clustered LR        validation loss after low-rank pre-training + k-means (quantize stage init)
  ... + BN            the same after label-free BN re-estimation on 20 training batches

The measured best d̃ is the one with the best mean validation top-1 after fine-tuning (test shown).

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

from lr2vq_jax.train import partitioning  # noqa: E402
from lr2vq_jax.train.config import load_config  # noqa: E402
from lr2vq_jax.train.dim_select import clustered_score, truncated  # noqa: E402
from lr2vq_jax.train.trainer import build_stage, restore_final  # noqa: E402

PREDICTORS = ("weights (float)", "weights (low-rank)", "rank-d̃ val loss", "clustered SVD",
              "clustered SVD + BN", "clustered LR", "clustered LR + BN")  # fmt: skip
BN_BATCHES = 20


def scores_for_seed(runner: pareto.Runner, seed: int, m: int, ds: list[int]) -> dict:
  blocks = "m9" if m == 9 else "m18"
  config = load_config(f"{ROOT}/configs/digits_ablations.py:reference,{blocks}")
  config.seed = config.data.seed = seed
  dims = pareto.dim_estimates(runner, seed, 16, m, ds)
  float_dir = runner.float_dir(seed)
  float_stage = build_stage(config, "float", str(Path(float_dir).parent))
  float_vars = partitioning.to_host(restore_final(float_stage, float_dir).variables())
  out = {p: {} for p in PREDICTORS} | {"final val": {}, "final test": {}, "rank-d̃ val top-1": {}}
  for d in ds:
    config.d = d
    tmp = str(runner.workdir(seed, f"dimpred_m{m}_d{d}"))
    out["weights (float)"][d] = dims["float_rel_error"][d]
    out["weights (low-rank)"][d] = dims["lowrank_rel_error"][d]
    lowrank_dir = runner.lowrank_dir(seed, m, d)
    lr_stage = build_stage(config, "lowrank", str(Path(lowrank_dir).parent))
    lr_vars = partitioning.to_host(restore_final(lr_stage, lowrank_dir).variables())
    rows = (Path(lowrank_dir) / "metrics.jsonl").read_text().splitlines()
    last = [json.loads(r)["scalars"] for r in rows if "eval_loss" in r][-1]
    out["rank-d̃ val loss"][d] = last["eval_loss"]
    out["rank-d̃ val top-1"][d] = last["eval_top1"]
    svd_vars = truncated(config, float_vars, lr_stage.rules)
    out["clustered SVD"][d] = clustered_score(config, svd_vars, tmp)[0]
    out["clustered SVD + BN"][d] = clustered_score(config, svd_vars, tmp, BN_BATCHES)[0]
    out["clustered LR"][d] = clustered_score(config, lr_vars, tmp)[0]
    out["clustered LR + BN"][d] = clustered_score(config, lr_vars, tmp, BN_BATCHES)[0]
    final = json.loads((runner.workdir(seed, f"lr2vq_k16_m{m}_d{d}") / "results.json").read_text())
    out["final val"][d], out["final test"][d] = final[-1]["val_top1"], final[-1]["top1"]
  return out


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--pareto", default="runs/bench/pareto")
  ap.add_argument("--seeds", type=int, default=5)
  ap.add_argument("--ms", default="9,18")
  ap.add_argument("--ds", default="1,2,3,4,6,9,18")
  args = ap.parse_args()
  logging.set_verbosity(logging.WARNING)
  runner = pareto.Runner(Path(args.pareto), False, sys.stderr)
  summary = {}
  for m in pareto.ints(args.ms):
    ds = [d for d in pareto.ints(args.ds) if d <= m]
    per_seed = [scores_for_seed(runner, s, m, ds) for s in range(args.seeds)]
    mean = {
      key: {d: float(np.mean([p[key][d] for p in per_seed])) for d in ds} for key in per_seed[0]
    }
    std = {
      key: {d: float(np.std([p[key][d] for p in per_seed])) for d in ds} for key in per_seed[0]
    }
    best_val = max(ds, key=lambda d: mean["final val"][d])
    best_test = max(ds, key=lambda d: mean["final test"][d])
    picks = {p: min(ds, key=lambda d: mean[p][d]) for p in PREDICTORS}
    summary[m] = {
      "mean": mean,
      "std": std,
      "picks": picks,
      "best_val": best_val,
      "best_test": best_test,
    }
    print(f"\nm = {m}, k = 16, {args.seeds} seeds (means; predictors: lower is better)")
    cols = [*PREDICTORS, "rank-d̃ val top-1", "final val", "final test"]
    print("| d̃ | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for d in ds:
      cells = [f"{mean[c][d]:.4f}" for c in PREDICTORS]
      cells += [f"{mean[c][d]:.2f} ± {std[c][d]:.2f}" for c in cols[len(PREDICTORS) :]]
      print(f"| {d} | " + " | ".join(cells) + " |")
    print(f"measured best d̃: {best_val} on validation ({best_test} on test)")
    print("picks: " + ", ".join(f"{p} → {d}" for p, d in picks.items()))
  Path(args.pareto, "dim_predictors.json").write_text(json.dumps(summary, indent=1, default=str))


if __name__ == "__main__":
  jax.config.update("jax_compilation_cache_dir", str(ROOT / "runs" / "bench" / "xla_cache"))
  main()
