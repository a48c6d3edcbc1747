"""The report of `benchmarks/pareto.py`: runs aggregated over seeds, the accuracy-vs-bytes table, the
d̃ sweep tables, the figure, `results.json` and the `RESULT` line.

Pure reporting: it reads the run records pareto.py collected and trains nothing.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

METHODS = ("PQ", "vanilla DKM", "LR²VQ")


def ints(text: str) -> list[int]:
  """ "8,16,32" -> [8, 16, 32] (the comma-separated grid arguments)."""
  return [int(t) for t in text.split(",") if t.strip()]


def aggregate(records: list[dict]) -> list[dict]:
  """One row per (method, k, m, d̃): top-1 mean and std over seeds, bytes, ratio."""
  groups: dict[tuple, list[dict]] = {}
  for r in records:
    groups.setdefault((r["method"], r["k"], r["m"], r["d"]), []).append(r)
  rows = []
  for (method, k, m, d), rs in sorted(groups.items(), key=lambda g: (g[0][2], g[0][1], g[0][3])):
    top1 = np.array([r["top1"] for r in rs])
    rows.append(
      {
        "method": method,
        "k": k,
        "m": m,
        "d": d,
        "bytes": rs[0]["exported_bytes"],
        "ratio": rs[0]["ratio"],
        "top1_mean": float(top1.mean()),
        "top1_std": float(top1.std()),
        "val_top1_mean": float(np.mean([r["val_top1"] for r in rs])),
        "seeds": len(rs),
      }
    )
  return rows


def table(rows: list[dict], float_rows: list[dict]) -> str:
  """The markdown table of every row, under the float model's."""
  f = np.array([r["top1"] for r in float_rows])
  head = "| method | k | m | d̃ | exported bytes | ratio | test top-1 % | val top-1 % | seeds |"
  lines = [head, "|---|---|---|---|---|---|---|---|---|"]
  lines.append(
    f"| float | - | - | - | {float_rows[0]['exported_bytes']:,} | 1.0 "
    f"| {f.mean():.2f} ± {f.std():.2f} | - | {len(f)} |"
  )
  for r in rows:
    lines.append(
      f"| {r['method']} | {r['k']} | {r['m']} | {r['d']} | {r['bytes']:,} | {r['ratio']} "
      f"| {r['top1_mean']:.2f} ± {r['top1_std']:.2f} | {r['val_top1_mean']:.2f} | {r['seeds']} |"
    )
  return "\n".join(lines)


def sweep_table(sweep_rows: list[dict], dims: dict, lowrank_val: list[dict], k: int, m: int) -> str:
  """The d̃ sweep at (k, m): measured best d̃ against estimate_dim's, then one line per d̃."""
  best = max(sweep_rows, key=lambda r: r["top1_mean"])
  fe, le = dims["per_seed"][0]["float_rel_error"], dims["per_seed"][0]["lowrank_rel_error"]
  lines = [
    f"\nd̃ sweep k={k} m={m}: measured best d̃ = {best['d']} "
    f"({best['top1_mean']:.2f}%); estimate_dim on float weights -> {dims['float_best']}, "
    f"on low-rank pre-trained weights -> {dims['lowrank_best']}",
    "| d̃ | LR²VQ top-1 | low-rank val top-1 | rel. error (float W, seed 0) "
    "| rel. error (low-rank W_d̃, seed 0) |",
    "|---|---|---|---|---|",
  ]
  for r in sorted(sweep_rows, key=lambda r: r["d"]):
    lv = next(x["val_top1_mean"] for x in lowrank_val if x["m"] == m and x["d"] == r["d"])
    lines.append(
      f"| {r['d']} | {r['top1_mean']:.2f} ± {r['top1_std']:.2f} | {lv:.2f} "
      f"| {fe[r['d']]:.4f} | {le[r['d']]:.4f} |"
    )
  return "\n".join(lines)


def plot(rows, float_rows, sweep, dims, path: Path) -> None:
  """Left: top-1 vs exported bytes per method and m. Right: the d̃ sweeps with estimate_dim's picks."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.5))
  ftop = np.mean([r["top1"] for r in float_rows])
  for method, marker, color in zip(METHODS, "sov", ("C0", "C1", "C2"), strict=True):
    for m, style in ((9, "-"), (18, "--")):
      pts = sorted(
        (r for r in rows if r["method"] == method and r["m"] == m and r["main"]),
        key=lambda r: r["bytes"],
      )
      if pts:
        ax.errorbar(
          [p["bytes"] for p in pts],
          [p["top1_mean"] for p in pts],
          yerr=[p["top1_std"] for p in pts],
          marker=marker,
          linestyle=style,
          color=color,
          capsize=3,
          label=f"{method} m={m} (k = {', '.join(str(p['k']) for p in pts)})",
        )
  ax.axhline(ftop, color="gray", linestyle=":", label=f"float {ftop:.2f}%")
  ax.set_xlabel("exported artifact bytes (whole model)")
  ax.set_ylabel("test top-1 % (exported artifact)")
  ax.set_title("digits CNN: accuracy vs size (mean ± std over seeds)")
  ax.legend(fontsize=7)
  for m, pts in sweep.items():
    pts = sorted(pts, key=lambda r: r["d"])
    bx.errorbar(
      [p["d"] for p in pts],
      [p["top1_mean"] for p in pts],
      yerr=[p["top1_std"] for p in pts],
      marker="o",
      capsize=3,
      label=f"LR²VQ m={m}",
    )
    if m in dims:
      for key, color, label in (
        ("float_best", "C3", "estimate_dim (float)"),
        ("lowrank_best", "C2", "estimate_dim (low-rank)"),
      ):
        bx.axvline(dims[m][key], color=color, linestyle="--", label=f"{label} m={m}")
  bx.set_xlabel("d̃")
  bx.set_ylabel("test top-1 %")
  bx.set_title("d̃ sweep (k fixed)")
  bx.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def report(args, records, float_rows, dims, lowrank_val, out: Path, started: float) -> None:
  """Prints the tables, writes the figure and results.json, ends with the RESULT line."""
  ks, ms, sweep_ms = (ints(a) for a in (args.ks, args.ms, args.sweep_ms))
  rows = aggregate(records)
  main_keys = {
    (meth, k, m, m if meth != "LR²VQ" else min(args.d, m))
    for meth in METHODS
    for k in ks + [args.gap_k]
    for m in ms
  }
  for r in rows:
    r["main"] = (r["method"], r["k"], r["m"], r["d"]) in main_keys
  sweep = {
    m: [r for r in rows if r["method"] == "LR²VQ" and r["k"] == args.sweep_k and r["m"] == m]
    for m in sweep_ms
  }
  print()
  print(
    f"digits CNN, conv2+conv3 compressed, {len(float_rows)} seed(s)"
    f"{', QUICK (6 steps per stage)' if args.quick else ''}; test top-1 of the exported artifact"
  )
  print(table(rows, float_rows))
  for m in sweep_ms:
    print(sweep_table(sweep[m], dims[m], lowrank_val, args.sweep_k, m))

  def gap(m, other):
    pick = {
      r["method"]: r["top1_mean"]
      for r in rows
      if r["k"] == args.gap_k and r["m"] == m and r["main"]
    }
    return pick["LR²VQ"] - pick[other] if "LR²VQ" in pick and other in pick else float("nan")

  png = out / "pareto.png"
  plot(rows, float_rows, sweep, dims, png)
  summary = {
    "args": vars(args),
    "records": records,
    "float": float_rows,
    "rows": rows,
    "dim_estimates": dims,
    "lowrank_val": lowrank_val,
    "wall_s": round(time.monotonic() - started, 1),
  }
  (out / "results.json").write_text(json.dumps(summary, indent=1, default=float))
  print(f"\nwrote {out / 'results.json'} and {png} ({summary['wall_s']} s)")
  parts = [
    f"lr2vq_minus_{o}_m{m}={gap(m, name):+.2f}"
    for m in ms
    for o, name in (("dkm", "vanilla DKM"), ("pq", "PQ"))
  ]
  print(
    f"RESULT k={args.gap_k} d={args.d} seeds={len(float_rows)} quick={int(args.quick)} "
    + " ".join(parts)
  )
