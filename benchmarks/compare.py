"""Paired comparisons on the embedded digits task: planner vs uniform preset, LR²VQ vs DKM vs PQ.

Every seed trains one float model (configs/digits_ablations.py's recipe, the default of
configs/default.py) that all methods of that seed start from, so methods are compared *paired*:
for each pair (A, B) the table shows the mean over seeds of A − B with a 95% t-interval, on test
top-1 and test NLL of the exported artifact (450 test digits). Groups (run in this order):

  plan     the planned model (`lq.plan`, on this seed's float model and 8 training batches) vs the
           uniform preset at the preset's exported bytes; same stages and epochs (m9: k=16, m=9,
           d̃=4; m18: k=16, m=18, d̃=2).
  methods  LR²VQ vs vanilla DKM vs PQ at both block sizes (the baselines with the recipe's
           training budget: as many fine-tuning epochs as LR²VQ's low-rank + quantization).
  k8       k = 8 on the whole network (conv1, conv2, conv3 m=9, fc m=4: 60×): LR²VQ vs DKM vs PQ.

Resumable: every run is a pipeline work dir under --out whose results.json marks it done.

  python benchmarks/compare.py --seeds 10 --out runs/bench/compare          # run, then tables
  python benchmarks/compare.py --seeds 10 --collect --out runs/bench/compare  # tables only
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

CONFIG = ROOT / "configs" / "digits_ablations.py"
K8_RULES = "^conv[123]$:k=8,m=9;^fc$:k=8,m=4"
# name -> (config argument, stages, rules source: "" preset, "plan" planner, else rules text)
RUNS = {
  "uniform_m9": ("recipe,m9", "lowrank,quantize", ""),
  "uniform_m18": ("recipe,m18", "lowrank,quantize", ""),
  "planned_m9": ("recipe,m9", "lowrank,quantize", "plan"),
  "planned_m18": ("recipe,m9", "lowrank,quantize", "plan"),  # the m9 recipe: see PLAN_D
  "dkm_m9": ("dkm_recipe,m9", "dkm", ""),
  "dkm_m18": ("dkm_recipe,m18", "dkm", ""),
  "pq_m9": ("pq_recipe,m9", "pq", ""),
  "pq_m18": ("pq_recipe,m18", "pq", ""),
  "lr2vq_k8": ("recipe,m9", "lowrank,quantize", K8_RULES),
  "dkm_k8": ("dkm_recipe,m9", "dkm", K8_RULES),
  "pq_k8": ("pq_recipe,m9", "pq", K8_RULES),
}
GROUPS = {
  "uniform": ("uniform_m9", "uniform_m18"),  # the presets alone (the plan group's budgets)
  "plan": ("uniform_m9", "planned_m9", "uniform_m18", "planned_m18"),
  "methods": ("dkm_m9", "pq_m9", "dkm_m18", "pq_m18"),
  "k8": ("lr2vq_k8", "dkm_k8", "pq_k8"),
}
PAIRS = {  # (A, B): A − B
  "plan": [("planned_m9", "uniform_m9"), ("planned_m18", "uniform_m18")],
  "methods": [
    ("uniform_m9", "dkm_m9"),
    ("uniform_m9", "pq_m9"),
    ("uniform_m18", "dkm_m18"),
    ("uniform_m18", "pq_m18"),
  ],
  "k8": [("lr2vq_k8", "dkm_k8"), ("lr2vq_k8", "pq_k8"), ("dkm_k8", "pq_k8")],
}
LABELS = {
  "uniform": "LR²VQ uniform preset",
  "planned": "LR²VQ planned",
  "dkm": "vanilla DKM",
  "pq": "PQ",
  "lr2vq": "LR²VQ",
}
PLAN_BATCHES = 8
# d̃ cap of the planned runs at both sizes: the m9 recipe's d̃ = 4 (d̃ = m for m ≤ 4). The m18
# recipe's d̃ = 2 was chosen for m = 18 alone; planned layers take other m, so both planned runs
# train with the m9 recipe (τ multiplier 0.03) and differ from each other only in the budget.
PLAN_D = 4
PLAN_KS = (2, 4, 8, 16, 32, 64, 128, 256)


def base_config(arg: str, seed: int, quick: bool):
  from lr2vq_jax.train.config import load_config
  from lr2vq_jax.train.recipes import shorten

  config = load_config(f"{CONFIG}:{arg}")
  if quick:
    shorten(config, steps=6, kmeans_iters=3)
  config.seed = config.data.seed = seed
  return config


def run_stage(config, workdir: Path, log) -> dict:
  """Runs `config` in `workdir` once; results.json (written last by the pipeline) marks it done."""
  from lr2vq_jax.train import pipeline

  cached = workdir / "results.json"
  if cached.exists():
    return json.loads(cached.read_text())[-1]
  workdir.mkdir(parents=True, exist_ok=True)
  t0 = time.monotonic()
  with contextlib.redirect_stdout(log):
    records = pipeline.run(config, str(workdir))
  if records is None:
    raise RuntimeError(f"{workdir} was preempted; rerun to resume")
  print(f"  {workdir}: top-1 {records[-1]['top1']:.2f} ({time.monotonic() - t0:.0f} s)", flush=True)
  return records[-1]


def plan_rules(name: str, seed: int, out: Path, quick: bool) -> str:
  """The planner's rules for this seed's float model at the uniform preset's exported bytes."""
  import jax

  import lr2vq_jax as lq
  from lr2vq_jax.train import input_pipeline
  from lr2vq_jax.train.config import config_rules
  from lr2vq_jax.train.trainer import build_stage, restore_final

  path = out / f"seed{seed}" / f"{name}.plan.json"
  if path.exists():
    return json.loads(path.read_text())["rules"]
  uniform = name.replace("planned", "uniform")
  reference = config_rules(base_config(RUNS[uniform][0], seed, quick))
  config = base_config(RUNS[name][0], seed, quick)
  stage = build_stage(config, "float", str(out / f"seed{seed}" / "float"))
  variables = jax.device_get(restore_final(stage, stage.workdir).variables())
  budget = lq.size_report(variables, reference).compressed_bytes  # the preset's size
  train = input_pipeline.build_input(config.data, split="train")
  plan = lq.plan(
    stage.float_model,
    variables,
    target_bytes=budget,
    batches=[next(train) for _ in range(PLAN_BATCHES)],
    d=PLAN_D,
    ks=PLAN_KS,
    key=jax.random.key(seed),
    reference=reference,
  )
  rec = {"rules": plan.rules_text(), "table": plan.table(), "budget": budget}
  rec["predicted"], rec["reference_predicted"] = plan.predicted, plan.reference_predicted
  path.write_text(json.dumps(rec, indent=1))
  return rec["rules"]


def run_one(name: str, seed: int, out: Path, quick: bool, log) -> dict:
  arg, stages, rules = RUNS[name]
  seed_dir = out / f"seed{seed}"
  float_dir = str(seed_dir / "float" / "float")
  config = base_config(arg, seed, quick)
  if rules == "plan":
    config.rules, config.d = plan_rules(name, seed, out, quick), 0
  elif rules:
    config.rules = rules
  config.stages = stages
  first = stages.split(",")[0]
  config[first].init_from = float_dir
  for s in ("lowrank", "quantize", "pq", "dkm"):
    config[s].teacher = float_dir
  rec = run_stage(config, seed_dir / name, log)
  return {**rec, "run": name, "seed": seed}


def run_float(seed: int, out: Path, quick: bool, log) -> dict:
  config = base_config("recipe,m9", seed, quick)
  config.stages = "float"
  return {**run_stage(config, out / f"seed{seed}" / "float", log), "run": "float", "seed": seed}


def collect(out: Path, seeds: list[int]) -> dict[str, dict[int, dict]]:
  """Finished runs: {run name: {seed: record}}."""
  found: dict[str, dict[int, dict]] = {}
  for seed in seeds:
    for name in ("float", *RUNS):
      path = out / f"seed{seed}" / name / "results.json"
      if path.exists():
        found.setdefault(name, {})[seed] = json.loads(path.read_text())[-1]
  return found


def paired(a: dict[int, dict], b: dict[int, dict], field: str) -> dict | None:
  """Mean of A − B over the seeds both have, its 95% t-interval half-width, and the seed count."""
  from scipy import stats

  seeds = sorted(set(a) & set(b))
  if len(seeds) < 2:
    return None
  diff = np.array([a[s][field] - b[s][field] for s in seeds], np.float64)
  half = stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff))
  return {"mean": float(diff.mean()), "ci95": float(half), "seeds": len(seeds)}


def label(name: str) -> str:
  method, _, size = name.partition("_")
  return f"{LABELS[method]} {size}"


def summary_table(found: dict) -> str:
  lines = [
    "| run | bytes | ratio | seeds | test top-1 (mean ± std) | test NLL (mean ± std) |",
    "|---|---|---|---|---|---|",
  ]
  for name in ("float", *RUNS):
    recs = list(found.get(name, {}).values())
    if not recs:
      continue
    top1 = np.array([r["top1"] for r in recs])
    nll = np.array([r["test_loss"] for r in recs])
    size = sorted({r["exported_bytes"] for r in recs})
    size_text = f"{size[0]:,}" if len(size) == 1 else f"{size[0]:,}–{size[-1]:,}"
    ratios = sorted({r["ratio"] for r in recs})
    ratio = f"{ratios[0]}" if len(ratios) == 1 else f"{ratios[0]}–{ratios[-1]}"
    lines.append(
      f"| {'float' if name == 'float' else label(name)} | {size_text} | {ratio} "
      f"| {len(recs)} | {top1.mean():.2f} ± {top1.std():.2f} | {nll.mean():.4f} ± {nll.std():.4f} |"
    )
  return "\n".join(lines)


def paired_table(found: dict, results: list[dict]) -> str:
  lines = [
    "| group | A − B | seeds | Δ test top-1 (95% CI) | Δ test NLL (95% CI) | verdict |",
    "|---|---|---|---|---|---|",
  ]
  for group, pairs in PAIRS.items():
    for a, b in pairs:
      if a not in found or b not in found:
        continue
      top1 = paired(found[a], found[b], "top1")
      nll = paired(found[a], found[b], "test_loss")
      if top1 is None:
        continue
      verdict = _verdict(top1, nll)
      results.append({"group": group, "a": a, "b": b, "top1": top1, "nll": nll, "verdict": verdict})
      lines.append(
        f"| {group} | {label(a)} − {label(b)} | {top1['seeds']} "
        f"| {top1['mean']:+.2f} ± {top1['ci95']:.2f} | {nll['mean']:+.4f} ± {nll['ci95']:.4f} "
        f"| {verdict} |"
      )
  return "\n".join(lines)


def _verdict(top1: dict, nll: dict) -> str:
  """A wins / loses where an interval excludes 0 (top-1 up or NLL down); else not separated."""
  better = top1["mean"] - top1["ci95"] > 0 or nll["mean"] + nll["ci95"] < 0
  worse = top1["mean"] + top1["ci95"] < 0 or nll["mean"] - nll["ci95"] > 0
  if better and not worse:
    return "A better"
  if worse and not better:
    return "A worse"
  return "mixed" if better else "not separated"


def report(out: Path, seeds: list[int], json_out: Path | None) -> None:
  found = collect(out, seeds)
  print("\nDigits CNN, test split (450 digits), exported artifacts; per-run mean ± std over seeds")
  print(summary_table(found))
  results: list[dict] = []
  print("\nPaired over seeds sharing a float model: mean of A − B, 95% t-interval")
  print(paired_table(found, results))
  for r in results:
    t, n = r["top1"], r["nll"]
    print(
      f"RESULT group={r['group']} a={r['a']} b={r['b']} seeds={t['seeds']} "
      f"dtop1={t['mean']:+.3f} ci95={t['ci95']:.3f} dnll={n['mean']:+.4f} "
      f"nll_ci95={n['ci95']:.4f} verdict={r['verdict'].replace(' ', '_')}"
    )
  if json_out:
    plans = {}
    for seed in seeds:
      for name in ("planned_m9", "planned_m18"):
        path = out / f"seed{seed}" / f"{name}.plan.json"
        if path.exists():
          plans.setdefault(name, {})[seed] = json.loads(path.read_text())
    payload = {
      "records": {n: {str(s): r for s, r in v.items()} for n, v in found.items()},
      "paired": results,
      "plans": plans,
    }
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(payload, indent=1))


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--out", default="runs/bench/compare")
  ap.add_argument("--seeds", type=int, default=10)
  ap.add_argument("--groups", default="plan,methods,k8", help=f"some of {','.join(GROUPS)}")
  ap.add_argument("--collect", action="store_true", help="only print the tables of finished runs")
  ap.add_argument("--json", default="", help="also write the records and paired results here")
  ap.add_argument("--quick", action="store_true", help="6 steps per stage (smoke run)")
  args = ap.parse_args()
  out = Path(args.out)
  seeds = list(range(args.seeds))
  groups = [g for g in args.groups.split(",") if g]
  unknown = set(groups) - set(GROUPS)
  if unknown:
    ap.error(f"--groups: unknown {sorted(unknown)}; expected some of {sorted(GROUPS)}")
  if not args.collect:
    from absl import logging

    logging.set_verbosity(logging.WARNING)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "log.txt", "a") as log:
      for group in groups:  # group by group: the first groups finish for every seed first
        for seed in seeds:
          run_float(seed, out, args.quick, log)
          for name in GROUPS[group]:
            run_one(name, seed, out, args.quick, log)
  report(out, seeds, Path(args.json) if args.json else None)


if __name__ == "__main__":
  main()
