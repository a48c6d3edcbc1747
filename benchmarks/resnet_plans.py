"""ResNet-18/50 plans at the paper's sizes, from shapes, next to the uniform presets' predictions.

For each model: `lq.plan` at the size of its large-block preset (ResNet-18 1.029 MiB, ResNet-50
3.185 MiB, PQF convention) on He-init weights (no trained weights and no data here: sensitivity 1,
weight error only, and d̃ = m, since random weights have no low-rank structure to exploit), and the
preset's own predicted error on the same weights. Prints per-layer allocations, a markdown summary
and `RESULT` lines.

  python benchmarks/resnet_plans.py                 # both models (minutes on 2 cores)
  python benchmarks/resnet_plans.py --models resnet18
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import lr2vq_jax as lq  # noqa: E402
from lr2vq_jax.core.accounting import MIB  # noqa: E402
from lr2vq_jax.models import create_model  # noqa: E402

PRESET = {"resnet18": "resnet18_large_blocks", "resnet50": "resnet50_large_blocks"}


def weights(name: str, seed: int):
  model = create_model(name, num_classes=1000)
  init = jax.jit(lambda key: model.init(key, jnp.zeros((1, 32, 32, 3)), train=False))
  return model, init(jax.random.key(seed, impl="rbg"))


def summary(plan: lq.Plan) -> str:
  """Layers per chosen (k, m), most bytes first."""
  groups: dict[str, list[float]] = collections.defaultdict(list)
  for lc in plan.layers:
    c = lc.chosen
    groups["fp32" if c.is_float else f"k={c.k} m={c.m}"].append(c.bytes)
  order = sorted(groups.items(), key=lambda kv: -sum(kv[1]))
  return ", ".join(f"{key} ×{len(b)}" for key, b in order)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--models", default="resnet18,resnet50")
  ap.add_argument("--seed", type=int, default=0)
  args = ap.parse_args()
  rows = []
  for name in [m for m in args.models.split(",") if m]:
    model, variables = weights(name, args.seed)
    preset = lq.presets.get_preset(PRESET[name])
    target = lq.size_report(variables, preset).compressed_bytes
    t0 = time.monotonic()
    plan = lq.plan(model, variables, target_bytes=target, reference=preset,
                   key=jax.random.key(args.seed))  # fmt: skip
    wall = time.monotonic() - t0
    print(f"\n{name}: plan at the {PRESET[name]} size ({target / MIB:.3f} MiB), {wall:.0f} s")
    print(plan.table())
    rows.append((name, plan, wall))
  print("\n| model | size | uniform preset: predicted ½‖W − Ŵ‖² | plan: predicted | plan / preset "
        "| planned layers (k, m) |")  # fmt: skip
  print("|---|---|---|---|---|---|")
  for name, plan, _ in rows:
    ref = plan.reference_predicted
    print(
      f"| {name} | {plan.total_bytes / MIB:.3f} of {plan.target_bytes / MIB:.3f} MiB | {ref:.4g} "
      f"| {plan.predicted:.4g} | {plan.predicted / ref:.3f} | {summary(plan)} |"
    )
  for name, plan, wall in rows:
    print(
      f"RESULT model={name} target_mib={plan.target_bytes / MIB:.3f} "
      f"plan_mib={plan.total_bytes / MIB:.3f} preset_pred={plan.reference_predicted:.4g} "
      f"plan_pred={plan.predicted:.4g} ratio={plan.predicted / plan.reference_predicted:.3f} "
      f"wall_s={wall:.0f}"
    )


if __name__ == "__main__":
  main()
