"""DKM alone over a model's quantized layers: per layer group and chunk size, and lever by lever.

Used by benchmarks/step_time.py (--profile, --levers): random Z of each layer's LR²VQ shape,
codebook = its first k rows, forward + backward of sum(z_soft²) jitted over a group's layers.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
from timing import timed_runs

from lr2vq_jax import presets
from lr2vq_jax.core import dkm as dkm_lib
from lr2vq_jax.core import dkm_top
from lr2vq_jax.models import create_model
from lr2vq_jax.nn import plan_model


def time_dkm(
  geos, *, chunk: int, iters: int, backward: bool, repeats: int, given: bool = False, **dkm_kw
) -> float:
  """Median time of DKM over the layers `geos` (random Z, codebook = first k rows), jitted;
  forward + backward when `backward`; `dkm_kw`: more `dkm.dkm` arguments (grad, top_t);
  `given`: each row's top_t candidate lists ranked beforehand, outside the timed call (as if
  carried between steps), and passed as `neighbors`."""
  zs = [jax.random.normal(jax.random.key(i), (g.n, g.d)) for i, g in enumerate(geos)]
  cs = [z[: g.k] for z, g in zip(zs, geos, strict=True)]
  nbs = [None] * len(zs)
  if given:
    t = dkm_kw.pop("top_t")
    nbs = [dkm_lib.neighbors(z, c, top_t=t, chunk_size=chunk) for z, c in zip(zs, cs, strict=True)]

  def loss(zs, cs, nbs):
    total = 0.0
    for z, c, nb in zip(zs, cs, nbs, strict=True):
      z_soft, _ = dkm_lib.dkm(z, c, tau=0.1, iters=iters, chunk_size=chunk, neighbors=nb, **dkm_kw)
      total = total + jnp.sum(z_soft**2)
    return total

  fn = jax.jit(jax.grad(loss, argnums=(0, 1)) if backward else loss)
  return float(np.median(timed_runs(fn, zs, cs, nbs, repeats=repeats)))


def layer_groups(name: str, preset: str, d: int, classes: int, size: int, channels: int):
  """The model's quantized layers (LR²VQ d̃) grouped by their path without the block index."""
  rules = presets.with_d(presets.get_preset(preset), d)
  sample = jnp.zeros((1, size, size, channels))
  plan = plan_model(create_model(name, num_classes=classes), rules, sample, train=False)
  groups: dict[str, list] = {}
  for path, geo in plan.items():
    groups.setdefault(re.sub(r"layer\d+_\d+/", "", path), []).append(geo)
  groups["all"] = list(plan.values())
  return groups


def _desc(group: str, geos) -> str:
  n = sum(g.n for g in geos)
  return f"{group} (n={n:,}, k={'/'.join(sorted({str(g.k) for g in geos}))})"


def levers(top_t: int) -> dict[str, dict]:
  """DKM levers, name -> settings (CPU attention budget, dkm kwargs, bf16 ranking, iters, lists
  ranked outside the timed call)."""
  base = dict(budget=dkm_lib.CPU_ATTENTION_BUDGET, kw={}, bf16=False, iters=None, given=False)
  top = dict(base, kw={"top_t": top_t})
  given = dict(top, given=True)
  return {
    "CPU chunks of 2^18 / k rows (main)": base,
    TOP.format(top_t): top,
    "top-t + bf16 ranking matmul": dict(top, bf16=True),
    "top-t + 1 iteration": dict(top, iters=1),
    "top-t + grad='last'": dict(top, kw={"top_t": top_t, "grad": "last"}),
    GIVEN: given,
    "top-t, lists given + 1 iteration": dict(given, iters=1),
    GIVEN0: dict(given, iters=0),
  }


TOP = "top-t attention (t={})"
GIVEN = "top-t, lists given (no ranking)"
GIVEN0 = "top-t, lists given, 0 iterations (z_soft only)"


def dkm_levers(groups: dict, iters: int, chunk: int, top_t: int) -> list[tuple]:
  """DKM forward + backward over the fc layer and all quantized layers, lever by lever."""
  budget0, rows = dkm_lib.CPU_ATTENTION_BUDGET, []
  select0 = dict(dkm_top.SELECT_DTYPE)
  for group in ("fc", "all"):
    times = {}
    for lever, s in levers(top_t).items():
      dkm_lib.CPU_ATTENTION_BUDGET = s["budget"]
      dkm_top.SELECT_DTYPE["cpu"] = jnp.bfloat16 if s["bf16"] else jnp.float32
      jax.clear_caches()  # both are read when DKM is traced
      n_iters = iters if s["iters"] is None else s["iters"]
      t = time_dkm(
        groups[group],
        chunk=chunk,
        iters=n_iters,
        backward=True,
        repeats=2,
        given=s["given"],
        **s["kw"],
      )
      times[lever] = t
      print(f"  dkm fwd+bwd {_desc(group, groups[group])} {lever}: {t:.3f} s", flush=True)
    main = times["CPU chunks of 2^18 / k rows (main)"]
    rows += [(_desc(group, groups[group]), lv, t, t / main) for lv, t in times.items()]
  dkm_lib.CPU_ATTENTION_BUDGET = budget0
  dkm_top.SELECT_DTYPE.clear()
  dkm_top.SELECT_DTYPE.update(select0)
  dkm_lib.CPU_ATTENTION_BUDGET = budget0
  jax.clear_caches()
  return rows


def dkm_profile(groups: dict, iters0: int, chunks: list[int], scope: str, steps: int):
  """DKM alone: per layer group at the first chunk size and `iters0` iterations, then all
  layers with the other chunk sizes, fewer iterations, forward only."""
  chunk0 = chunks[0]
  cases = [(g, chunk0, iters0, True) for g in (groups if scope == "groups" else ["all"])]
  cases += [("all", c, iters0, True) for c in chunks[1:]]
  cases += [("all", chunk0, i, True) for i in sorted({1, 0} - {iters0}, reverse=True)]
  cases += [("all", chunk0, iters0, False)]
  rows = []
  for group, chunk, iters, grad in cases:
    geos = groups[group]
    try:
      t = time_dkm(geos, chunk=chunk, iters=iters, backward=grad, repeats=max(2, steps))
    except Exception as e:  # noqa: BLE001  (e.g. out of memory: report it, keep the other rows)
      print(f"  dkm {group} chunk={chunk} iters={iters} failed: {type(e).__name__}: {str(e)[:200]}")
      continue
    rows.append((_desc(group, geos), chunk, iters, "fwd+bwd" if grad else "fwd", t))
    print(f"  dkm {rows[-1][3]} {rows[-1][0]} chunk={chunk} iters={iters}: {t:.3f} s", flush=True)
  return rows


def breakdown(rows: list[tuple], iters: int, top_t: int) -> dict[str, dict[str, float]]:
  """Top-t DKM's forward + backward split from the lever rows: the ranking (top-t minus lists
  given), one centroid update ((lists given minus 0 iterations) / iters) and z_soft (0 iterations)."""
  by = {}
  for desc, lever, t, _ in rows:
    by.setdefault(desc, {})[lever] = t
  out = {}
  for desc, t in by.items():
    top, given, soft = t[TOP.format(top_t)], t[GIVEN], t[GIVEN0]
    out[desc] = {
      "top_t_s": top,
      "ranking_s": top - given,
      "update_s": (given - soft) / max(iters, 1),
      "soft_s": soft,
      "ranking_share": (top - given) / top,
    }
  print(f"\nTop-t DKM forward + backward, split (from the rows above; {iters} updates):")
  print("| layers | top-t DKM s | ranking s (share) | one update s | z_soft s |")
  print("|---|---|---|---|---|")
  for desc, b in out.items():
    print(
      f"| {desc} | {b['top_t_s']:.3f} | {b['ranking_s']:.3f} ({b['ranking_share']:.0%}) "
      f"| {b['update_s']:.3f} | {b['soft_s']:.3f} |"
    )
  return out


def dkm_costs(geos, devices: int, top_t: int, cases) -> list[tuple]:
  """XLA cost analysis of top-t DKM forward + backward over `geos`, per device of `devices` (each
  layer's rows / devices, one chunk: XLA counts a loop body once), the ranking matmul in bf16 as
  on accelerators. `cases`: (label, iters, lists given) -> rows (label, flops, bytes, transc)."""
  shapes = [(-(-g.n // devices), g.d, g.k) for g in geos]
  zs = [jax.ShapeDtypeStruct((n, d), jnp.float32) for n, d, _ in shapes]
  cs = [jax.ShapeDtypeStruct((k, d), jnp.float32) for _, d, k in shapes]
  nbs = [jax.ShapeDtypeStruct((n, top_t), jnp.int32) for n, _, _ in shapes]
  select0, budget0 = dict(dkm_top.SELECT_DTYPE), dkm_lib.CPU_ATTENTION_BUDGET
  dkm_top.SELECT_DTYPE["cpu"] = jnp.bfloat16
  dkm_lib.CPU_ATTENTION_BUDGET = 1 << 62  # one chunk per device: the CPU cap would undercount
  rows = []
  for label, iters, given in cases:

    def loss(zs, cs, nbs, iters=iters, given=given):
      total = 0.0
      for z, c, nb in zip(zs, cs, nbs, strict=True):
        kw = {"neighbors": nb} if given else {"top_t": top_t}
        z_soft, _ = dkm_lib.dkm(z, c, tau=0.1, iters=iters, chunk_size=1 << 30, **kw)
        total = total + jnp.sum(z_soft**2)
      return total

    jax.clear_caches()
    cost = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(zs, cs, nbs).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    keys = ("flops", "bytes accessed", "transcendentals")
    rows.append((label, *(float(cost.get(k, 0.0)) for k in keys)))
  dkm_top.SELECT_DTYPE.clear()
  dkm_top.SELECT_DTYPE.update(select0)
  dkm_lib.CPU_ATTENTION_BUDGET = budget0
  jax.clear_caches()
  return rows


def print_levers(rows: list[tuple]) -> None:
  print("| layers | lever | DKM s | × main |")
  print("|---|---|---|---|")
  for desc, lever, t, r in rows:
    print(f"| {desc} | {lever} | {t:.3f} | {r:.2f} |")


def print_profile(rows: list[tuple]) -> None:
  print("| layers | chunk | iters | pass | DKM s |")
  print("|---|---|---|---|---|")
  for desc, chunk, iters, mode, t in rows:
    print(f"| {desc} | {chunk} | {iters} | {mode} | {t:.3f} |")
