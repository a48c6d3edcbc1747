"""Accuracy vs exported bytes on the embedded digits task: PQ, vanilla DKM and LR²VQ over (k, m, d̃).

Runs the recipe `configs/digits_ablations.py:reference` (the one before the ablations, fixed so that
`benchmarks/ablations.py` can reuse these runs); the current recipe is compared there.
Drives the project's own pipeline (`lr2vq_jax.train.pipeline.run`) stage by stage: the float model
is trained once per seed and every method starts from it (`init_from`), the low-rank pre-training
is shared by all LR²VQ runs with the same (m, d̃). top-1 is that of the exported artifact on the 450
test digits. A d̃ sweep at fixed (k, m) is compared with `estimate_dim`'s choice on the float weights
and on the low-rank pre-trained weights. Finished runs are reused from --out. The tables, figure
and RESULT line are written by `benchmarks/pareto_report.py`.

  python benchmarks/pareto.py --seeds 2 --out runs/bench/pareto            # ~10 min per seed
  python benchmarks/pareto.py --quick --out /tmp/pareto_quick              # smoke run, 6 steps/stage
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import logging  # noqa: E402
from pareto_report import METHODS, ints, report  # noqa: E402

import lr2vq_jax as lq  # noqa: E402
from lr2vq_jax import presets  # noqa: E402
from lr2vq_jax.nn.kernel import effective_projection  # noqa: E402
from lr2vq_jax.train import pipeline  # noqa: E402
from lr2vq_jax.train.config import load_config  # noqa: E402
from lr2vq_jax.train.recipes import shorten  # noqa: E402
from lr2vq_jax.train.trainer import build_stage, restore_final  # noqa: E402

STAGE_OF = {"PQ": "pq", "vanilla DKM": "dkm", "LR²VQ": "quantize"}
# τ multipliers chosen on an inner validation split by the prototype, per m.
TAU_ALPHA = {("quantize", 9): 0.03, ("quantize", 18): 0.003, ("dkm", 9): 0.01, ("dkm", 18): 0.03}
LAYERS = r"^conv[23]$"


def preset_name(k: int, m: int) -> str:
  """Registers (once) and returns a runtime preset compressing conv2/conv3 with (k, m)."""
  name = f"bench_digits_k{k}_m{m}"
  presets.PRESETS.setdefault(name, (lq.Rule(LAYERS, k=k, m=m),))
  return name


class Runner:
  """Runs single pipeline stages under `out/seed<s>/<tag>`, each once (results.json is the cache)."""

  def __init__(self, out: Path, quick: bool, log):
    self.out, self.quick, self.log = out, quick, log

  def config(self, seed: int, stage: str, k: int, m: int, d: int, init_from: str = ""):
    # The earlier reference recipe, fixed: benchmarks/ablations.py reuses these runs as its `reference`.
    config = load_config(str(ROOT / "configs" / "digits_ablations.py") + ":reference,m9")
    if self.quick:
      shorten(config, steps=6, kmeans_iters=3)
    config.seed = seed
    config.data.seed = seed
    config.preset = preset_name(k, m)
    config.d = d
    config.stages = stage
    for name in ("quantize", "dkm"):
      config[name].tau_alpha = TAU_ALPHA.get((name, m), config[name].tau_alpha or 0.03)
    if init_from:
      config[stage].init_from = init_from
    return config

  def workdir(self, seed: int, tag: str) -> Path:
    return self.out / f"seed{seed}" / tag

  def run(self, seed: int, tag: str, stage: str, k: int, m: int, d: int, init_from: str = ""):
    workdir = self.workdir(seed, tag)
    cached = workdir / "results.json"
    if cached.exists() and stage != "lowrank":
      return json.loads(cached.read_text())[-1]
    done = workdir / stage / "done.json"
    if stage == "lowrank" and done.exists():
      return json.loads(done.read_text())
    workdir.mkdir(parents=True, exist_ok=True)
    config = self.config(seed, stage, k, m, d, init_from)
    t0 = time.monotonic()
    with contextlib.redirect_stdout(self.log):
      records = pipeline.run(config, str(workdir))
    if records is None:
      raise RuntimeError(f"stage {stage} in {workdir} was preempted")
    wall = round(time.monotonic() - t0, 1)
    if stage == "lowrank":  # the pipeline records no lowrank row: keep its validation top-1
      lines = (workdir / "lowrank" / "metrics.jsonl").read_text().splitlines()
      evals = [json.loads(ln)["scalars"] for ln in lines if "eval_top1" in ln]
      rec = {"method": "low-rank (float)", "d": d, "m": m, "val_top1": evals[-1]["eval_top1"]}
      rec["wall_s"] = wall
      done.write_text(json.dumps(rec))
      return rec
    print(
      f"  seed {seed} {tag:<18} top-1 {records[-1]['top1']:6.2f}  "
      f"bytes {records[-1]['exported_bytes']:>7}  {wall:5.1f}s",
      flush=True,
    )
    return records[-1]

  def float_dir(self, seed: int) -> str:
    return str(self.workdir(seed, "base") / "float")

  def lowrank_dir(self, seed: int, m: int, d: int) -> str:
    return str(self.workdir(seed, f"lowrank_m{m}_d{d}") / "lowrank")

  def method(self, seed: int, method: str, k: int, m: int, d: int) -> dict:
    """One compressed run (stages before it reused); returns its record with seed/k/m/d."""
    self.run(seed, "base", "float", 16, 9, 9)
    stage = STAGE_OF[method]
    if stage == "quantize":
      self.run(seed, f"lowrank_m{m}_d{d}", "lowrank", k, m, d, self.float_dir(seed))
      rec = self.run(
        seed, f"lr2vq_k{k}_m{m}_d{d}", "quantize", k, m, d, self.lowrank_dir(seed, m, d)
      )
    else:
      rec = self.run(seed, f"{stage}_k{k}_m{m}", stage, k, m, m, self.float_dir(seed))
      d = m
    return {**rec, "seed": seed, "k": k, "m": m, "d": d, "method": method}


def restored_params(runner: Runner, seed: int, stage: str, tag: str, k: int, m: int, d: int):
  config = runner.config(seed, stage, k, m, d)
  st = build_stage(config, stage, str(runner.workdir(seed, tag)))
  return jax.device_get(restore_final(st, st.workdir).params)


def lowrank_cluster_error(params, k: int, m: int, d: int, key, mode: str = "learned") -> float:
  """k-means error at d̃ of the low-rank weights Z·P of conv2/conv3, relative to their energy
  (their low-rank error is zero by construction)."""
  err = en = 0.0
  for layer in ("conv2", "conv3"):
    x = jnp.asarray(params[layer]["z"], jnp.float32)
    x = x @ effective_projection(params[layer]["projection"], mode)
    # X (n, m) given as a dense kernel X.T: to_subvectors(X.T, m) gives back the rows of X.
    e = lq.estimate_dim(x.T, k=lq.clamp_k(k, x.shape[0]), m=m, candidates=[d], key=key)
    err, en = err + e.error_at(d), en + e.energy
  return err / en


def dim_estimates(runner: Runner, seed: int, k: int, m: int, ds: list[int]) -> dict:
  """estimate_dim's d̃ on the float weights (all d̃ ≤ m) and on each low-rank pre-trained model."""
  rules = (lq.Rule(LAYERS, k=k, m=m),)
  params = restored_params(runner, seed, "float", "base", k, m, m)
  est = lq.estimate_dim_model(params, rules, key=jax.random.key(seed))
  energy = sum(e.energy for e in est.layers.values())
  float_total = {
    int(c): sum(e.error_at(int(c)) for e in est.layers.values()) / energy
    for c in next(iter(est.layers.values())).candidates
  }
  lowrank_total = {
    d: lowrank_cluster_error(
      restored_params(runner, seed, "lowrank", f"lowrank_m{m}_d{d}", k, m, d),
      k,
      m,
      d,
      jax.random.key(seed),
    )
    for d in ds
  }
  return {
    "float_best": est.global_best()[m],
    "float_rel_error": float_total,
    "lowrank_best": min(lowrank_total, key=lowrank_total.get),
    "lowrank_rel_error": lowrank_total,
  }


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--out", default="runs/bench/pareto", help="output dir (runs are reused)")
  ap.add_argument("--seeds", type=int, default=2)
  ap.add_argument("--first-seed", type=int, default=0, help="seeds first..first+seeds-1")
  ap.add_argument("--quick", action="store_true", help="6 steps per stage, small grid (smoke)")
  ap.add_argument("--ks", default="8,16,32", help="k values of the accuracy-vs-bytes grid")
  ap.add_argument("--ms", default="9,18", help="m values (conv2/conv3 rows are 9·C_in long)")
  ap.add_argument("--d", type=int, default=3, help="LR²VQ d̃ of the grid")
  ap.add_argument("--gap-k", type=int, default=16, help="k at which the RESULT gaps are taken")
  ap.add_argument("--sweep-k", type=int, default=16)
  ap.add_argument("--sweep-ms", default="9", help="m values of the d̃ sweep")
  ap.add_argument("--sweep-ds", default="1,2,3,4,6,9", help="d̃ values of the sweep (≤ m kept)")
  args = ap.parse_args()
  if args.quick:
    args.ks, args.sweep_ds = str(args.gap_k), "2,3,9"
  logging.set_verbosity(logging.WARNING)
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  ks, ms, sweep_ms = ints(args.ks), ints(args.ms), ints(args.sweep_ms)
  seeds = range(args.first_seed, args.first_seed + args.seeds)

  # Jobs in priority order: the gap grid first, then the d̃ sweep, then the other k.
  jobs = [(meth, args.gap_k, m, args.d) for m in ms for meth in METHODS]
  for m in sweep_ms:
    jobs += [("LR²VQ", args.sweep_k, m, d) for d in ints(args.sweep_ds) if d <= m]
  jobs += [(meth, k, m, args.d) for k in ks if k != args.gap_k for m in ms for meth in METHODS]
  jobs = list(
    dict.fromkeys((meth, k, m, m if meth != "LR²VQ" else min(d, m)) for meth, k, m, d in jobs)
  )
  t0 = time.monotonic()
  with open(out / "pipeline_log.txt", "a") as log:
    runner = Runner(out, args.quick, log)
    records = []
    for job in jobs:
      for seed in seeds:
        records.append(runner.method(seed, *job))
    float_rows = [runner.run(s, "base", "float", 16, 9, 9) for s in seeds]
    dims, lowrank_val = {}, []
    for m in sweep_ms:
      ds = [d for d in ints(args.sweep_ds) if d <= m]
      per_seed = [dim_estimates(runner, s, args.sweep_k, m, ds) for s in seeds]
      dims[m] = {
        "float_best": int(np.bincount([p["float_best"] for p in per_seed]).argmax()),
        "lowrank_best": int(np.bincount([p["lowrank_best"] for p in per_seed]).argmax()),
        "per_seed": per_seed,
      }
      for d in ds:
        vals = [
          runner.run(s, f"lowrank_m{m}_d{d}", "lowrank", args.sweep_k, m, d)["val_top1"]
          for s in seeds
        ]
        lowrank_val.append({"m": m, "d": d, "val_top1_mean": float(np.mean(vals))})

  report(args, records, float_rows, dims, lowrank_val, out, t0)


if __name__ == "__main__":
  main()
