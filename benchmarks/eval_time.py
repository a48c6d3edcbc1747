"""Evaluation time of a quantize-stage model: hard codes per batch (before) vs once (after).

Before: the quantize-stage model's own hard evaluation inside the jitted eval step, so every batch
re-runs each layer's DKM refinement over all of Z and the nearest-centroid assignment. After
(`trainer.evaluate`): `hard_codes.frozen_model` computes the codes and refined codebooks once
(jitted; DKM split over the mesh's data axis when it has several devices), then every batch runs
the frozen model. The float model's eval step is timed too, as the floor. Steps are timed
round-robin (a load change on a shared machine hits all three alike); medians. The evaluated
numbers of both paths are compared on the timed batches (they must agree).

Model: ResNet-18 (random init, `resnet18_small_blocks`, d̃ = 4, as
configs/imagenet_resnet18_small_lr2vq.py), synthetic images and labels.

  python benchmarks/eval_time.py                        # 224 px, batch 16, 3 timed batches
  python benchmarks/eval_time.py --batch 32 --batches 5
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from lr2vq_jax import presets  # noqa: E402
from lr2vq_jax.models import create_model  # noqa: E402
from lr2vq_jax.nn import QuantConfig, quantize_model  # noqa: E402
from lr2vq_jax.train import hard_codes, partitioning  # noqa: E402
from lr2vq_jax.train.step import make_eval_step  # noqa: E402

PRESET, D, CLASSES = "resnet18_small_blocks", 4, 1000
IMAGENET_VAL = 50_000  # images in the ImageNet validation split: the extrapolated full pass


def build(args):
  """(float model, quantize model, their variables, mesh, eval batches) from a random init."""
  rules = presets.with_d(presets.get_preset(PRESET), D)
  quant = QuantConfig(chunk_size=args.chunk_size, shard_axis=partitioning.ROW_AXIS)
  float_model = create_model("resnet18", num_classes=CLASSES)
  model = quantize_model(float_model, rules, "quantize", quant)
  mesh = partitioning.make_mesh()
  sample = jnp.zeros((1, args.image_size, args.image_size, 3), jnp.float32)
  key = jax.random.key(0, impl="rbg")  # XLA:CPU compiles a threefry ResNet init far slower
  variables = dict(jax.jit(lambda k: model.init(k, sample, train=False))(key))
  float_vars = dict(jax.jit(lambda k: float_model.init(k, sample, train=False))(key))
  shardings = partitioning.with_state_shardings(jax.eval_shape(lambda: variables), mesh)
  variables = jax.device_put(variables, partitioning.shardings_of(shardings))  # Z split on data
  rng = np.random.default_rng(0)
  batches = []
  for _ in range(args.batches):
    batch = {
      "image": rng.normal(size=(args.batch, args.image_size, args.image_size, 3)),
      "label": rng.integers(0, CLASSES, size=(args.batch,)).astype(np.int32),
      "mask": np.ones((args.batch,), bool),
    }
    batch["image"] = batch["image"].astype(np.float32)
    batches.append(partitioning.global_batch(batch, mesh))
  return float_model, model, float_vars, variables, mesh, batches


class EvalPath:
  """One evaluation path: a compiled eval step on fixed variables, timed one batch at a time."""

  def __init__(self, name: str, model, variables, mesh, batch):
    self.name, self.variables, self.mesh = name, variables, mesh
    with jax.set_mesh(mesh):
      t0 = time.perf_counter()
      self.step = jax.jit(make_eval_step(model)).lower(variables, batch).compile()
      self.compile_s = time.perf_counter() - t0
    self.times: list[float] = []
    self.outs: list[dict] = []

  def run(self, batch, timed: bool = True) -> None:
    with jax.set_mesh(self.mesh):
      t0 = time.perf_counter()
      out = jax.block_until_ready(self.step(self.variables, batch))
    if timed:
      self.times.append(time.perf_counter() - t0)
      self.outs.append(jax.device_get(out))

  @property
  def median(self) -> float:
    return float(np.median(self.times))


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--image-size", type=int, default=224)
  ap.add_argument("--batch", type=int, default=16, help="eval batch size")
  ap.add_argument("--batches", type=int, default=3, help="timed eval batches (median)")
  ap.add_argument("--chunk-size", type=int, default=QuantConfig.chunk_size)
  args = ap.parse_args()
  print(
    f"jax {jax.__version__}, {jax.device_count()} {jax.devices()[0].platform} device(s), "
    f"{os.cpu_count()} CPUs; ResNet-18 {args.image_size} px, {PRESET} d̃ {D}, eval batch "
    f"{args.batch}, {args.batches} timed batches",
    flush=True,
  )
  float_model, model, float_vars, variables, mesh, batches = build(args)

  t0 = time.perf_counter()
  frozen, frozen_vars = hard_codes.frozen_model(model, variables, mesh)
  jax.block_until_ready(frozen_vars)
  freeze_first_s = time.perf_counter() - t0  # compile + run
  t0 = time.perf_counter()
  jax.block_until_ready(hard_codes.frozen_model(model, variables, mesh)[1])
  freeze_s = time.perf_counter() - t0  # run only (what every later evaluation pays)
  print(f"  hard codes once: {freeze_s:.2f} s (first call with compile {freeze_first_s:.1f} s)")

  paths = [
    EvalPath("before: codes per batch", model, variables, mesh, batches[0]),
    EvalPath("after: codes once", frozen, frozen_vars, mesh, batches[0]),
    EvalPath("float model", float_model, float_vars, mesh, batches[0]),
  ]
  for p in paths:
    print(f"  {p.name:<24} compiled in {p.compile_s:.1f} s", flush=True)
    p.run(batches[0], timed=False)  # warm-up
  for batch in batches:
    for p in paths:
      p.run(batch)
  before, after, floor = paths
  for p in paths:
    print(f"  {p.name:<24} runs: {', '.join(f'{t:.3f}' for t in p.times)} s", flush=True)

  # the same evaluated numbers: hit counts equal, summed losses to float rounding
  for a, b in zip(before.outs, after.outs, strict=True):
    assert a["top1"] == b["top1"] and a["top5"] == b["top5"], (a, b)
    assert abs(a["loss"] - b["loss"]) <= 1e-5 * abs(a["loss"]), (a, b)

  steps_val = -(-IMAGENET_VAL // args.batch)
  full_before = steps_val * before.median
  full_after = freeze_s + steps_val * after.median
  print()
  print("| path | per batch s (median) | once s | × float | ImageNet val pass (50k) s |")
  print("|---|---|---|---|---|")
  print(
    f"| {before.name} | {before.median:.3f} | – | {before.median / floor.median:.2f} "
    f"| {full_before:.0f} |"
  )
  print(
    f"| {after.name} | {after.median:.3f} | {freeze_s:.2f} | {after.median / floor.median:.2f} "
    f"| {full_after:.0f} |"
  )
  print(f"| {floor.name} | {floor.median:.3f} | – | 1.00 | {steps_val * floor.median:.0f} |")
  print(
    f"RESULT per_batch_speedup={before.median / after.median:.2f} "
    f"full_val_speedup={full_before / full_after:.2f} after_over_float="
    f"{after.median / floor.median:.2f} once_s={freeze_s:.2f} image_size={args.image_size} "
    f"batch={args.batch} devices={jax.device_count()}"
  )


if __name__ == "__main__":
  main()
