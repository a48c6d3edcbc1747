"""Train-step time of float vs low-rank vs LR²VQ quantize vs vanilla DKM, measured in one process.

Uses the project's own step (`make_train_step` + `partitioning.jit_train_step`, the state built
like `trainer.abstract_state`/`init_state` do) on synthetic data; compile time is reported apart,
step time is the median of --steps steps after one warm-up step. Models: ResNet-18 (224 px,
batch 32, resnet18_small_blocks, LR²VQ d̃ = 4 as configs/imagenet_resnet18_small_lr2vq.py) and the
embedded digits CNN (8 px, batch 64, digits_small_blocks, d̃ = 3). With --profile, the DKM forward
+ backward of all quantized layers is also timed alone (per layer group and chunk size).

  python benchmarks/step_time.py                                   # ResNet-18 224/32 + CNN
  python benchmarks/step_time.py --image-size 64 --batch 8 --steps 3 --profile
  python benchmarks/step_time.py --models cnn
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from lr2vq_jax import convert, presets  # noqa: E402
from lr2vq_jax.core import dkm as dkm_lib  # noqa: E402
from lr2vq_jax.models import create_model  # noqa: E402
from lr2vq_jax.nn import QuantConfig, plan_model, quantize_model  # noqa: E402
from lr2vq_jax.train import partitioning  # noqa: E402
from lr2vq_jax.train.step import TrainState, create_optimizer, make_train_step  # noqa: E402

# name: (model, preset, LR²VQ d̃, classes)
MODELS = {
  "resnet18": ("resnet18", "resnet18_small_blocks", 4, 1000),
  "cnn": ("digits_cnn", "digits_small_blocks", 3, 10),
}
# variant: (stage kind, d̃ = m?, frozen params)
VARIANTS = {
  "float": ("float", False, ()),
  "lowrank": ("lowrank", False, ()),
  "lr2vq": ("quantize", False, ()),
  "dkm": ("quantize", True, ("projection",)),
}


class Section(dict):
  """A stage config section with attribute access (no ml_collections/TF import: runs on the GPU
  image too); the fields and defaults of `lr2vq_jax.train.recipes.stage`."""

  __getattr__ = dict.__getitem__


def stage_section(lr: float, **kw) -> Section:
  base = dict(optimizer="adam", lr=lr, schedule="cosine", warmup_steps=0, final_lr_factor=0.0,
              weight_decay=0.0, weight_decay_exclude=("codebook",), freeze=(), grad_clip=0.0)
  return Section({**base, **kw})


def build(model_name: str, variant: str, args, quant: QuantConfig):
  """(jitted step, initial state, batch) of one variant; weights are a random init (synthetic)."""
  name, preset, d, classes = MODELS[model_name]
  kind, vanilla, freeze = VARIANTS[variant]
  rules = presets.with_d(presets.get_preset(preset), d)
  rules = convert.vanilla(rules) if vanilla else rules
  float_model = create_model(name, num_classes=classes, dtype=args.dtype)
  model = quantize_model(float_model, rules, kind, quant)
  size = args.image_size if model_name == "resnet18" else 8
  batch_size = args.batch if model_name == "resnet18" else args.cnn_batch
  channels = 3 if model_name == "resnet18" else 1
  cfg = stage_section(1e-3, weight_decay=1e-4, freeze=freeze)
  mesh = partitioning.make_mesh()
  sample = jnp.zeros((1, size, size, channels), jnp.float32)

  def init(rng):
    variables = dict(model.init(rng, sample, train=False))
    variables.pop("losses", None)
    params = variables.pop("params")
    tx = create_optimizer(cfg, 1000, params)
    return TrainState(jnp.zeros((), jnp.int32), params, variables, tx.init(params), rng)

  target = partitioning.with_state_shardings(jax.eval_shape(init, jax.random.key(0)), mesh)
  state = jax.jit(init, out_shardings=partitioning.shardings_of(target))(jax.random.key(0))
  tx = create_optimizer(cfg, 1000, state.params)
  step = partitioning.jit_train_step(make_train_step(model, cfg, tx), target, mesh)
  rng = np.random.default_rng(0)
  batch = {
    "image": rng.normal(size=(batch_size, size, size, channels)).astype(np.float32),
    "label": rng.integers(0, classes, size=(batch_size,)).astype(np.int32),
  }
  return step, state, partitioning.global_batch(batch, mesh), mesh


def time_variant(model_name: str, variant: str, args, quant: QuantConfig) -> dict:
  step, state, batch, mesh = build(model_name, variant, args, quant)
  jitted = getattr(step, "jitted", step)  # jit_train_step may wrap the jit in `jax.set_mesh`
  with jax.set_mesh(mesh):
    t0 = time.perf_counter()
    compiled = jitted.lower(state, batch).compile()
    compile_s = time.perf_counter() - t0
    state, metrics = compiled(state, batch)  # warm-up
    jax.block_until_ready(metrics)
    times = []
    for _ in range(args.steps):
      t0 = time.perf_counter()
      state, metrics = compiled(state, batch)
      jax.block_until_ready((state, metrics))
      times.append(time.perf_counter() - t0)
  assert bool(metrics["finite"]), f"{model_name}/{variant}: non-finite step"
  return {"compile_s": compile_s, "step_s": float(np.median(times)), "times": times}


def dkm_profile(model_name: str, args, quant: QuantConfig) -> list[tuple[str, int, float]]:
  """DKM forward+backward alone (all quantized layers, LR²VQ d̃), by layer group and chunk size."""
  name, preset, d, classes = MODELS[model_name]
  rules = presets.with_d(presets.get_preset(preset), d)
  float_model = create_model(name, num_classes=classes)
  size = args.image_size if model_name == "resnet18" else 8
  sample = jnp.zeros((1, size, size, 3 if model_name == "resnet18" else 1))
  plan = plan_model(float_model, rules, sample, train=False)
  groups: dict[str, list] = {}
  for path, geo in plan.items():
    group = re.sub(r"layer\d+_\d+/", "", path)
    groups.setdefault(group, []).append(geo)
  groups["all"] = list(plan.values())
  rows = []
  for chunk in args.profile_chunks:
    for group, geos in groups.items():
      zs = [jax.random.normal(jax.random.key(i), (g.n, g.d)) for i, g in enumerate(geos)]
      cs = [z[: g.k] for z, g in zip(zs, geos, strict=True)]

      def loss(zs, cs, chunk=chunk):
        total = 0.0
        for z, c in zip(zs, cs, strict=True):
          zs_, _ = dkm_lib.dkm(z, c, tau=0.1, iters=quant.dkm_iters, chunk_size=chunk)
          total = total + jnp.sum(zs_**2)
        return total

      fn = jax.jit(jax.grad(loss, argnums=(0, 1)))
      jax.block_until_ready(fn(zs, cs))
      times = []
      for _ in range(max(2, args.steps)):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(zs, cs))
        times.append(time.perf_counter() - t0)
      n = sum(g.n for g in geos)
      desc = f"{group} (n={n:,}, k={'/'.join(sorted({str(g.k) for g in geos}))})"
      rows.append((desc, chunk, float(np.median(times))))
      print(f"  dkm fwd+bwd {desc} chunk={chunk}: {rows[-1][2]:.3f} s", flush=True)
  return rows


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--models", default="resnet18,cnn")
  ap.add_argument("--variants", default="float,lowrank,lr2vq,dkm")
  ap.add_argument("--image-size", type=int, default=224, help="ResNet-18 input size")
  ap.add_argument("--batch", type=int, default=32, help="ResNet-18 batch")
  ap.add_argument("--cnn-batch", type=int, default=64)
  ap.add_argument("--steps", type=int, default=3, help="timed steps (median); ResNet-18 is slow")
  ap.add_argument("--cnn-steps", type=int, default=20)
  ap.add_argument("--dtype", default="float32")
  ap.add_argument("--chunk-size", type=int, default=QuantConfig.chunk_size)
  ap.add_argument("--dkm-iters", type=int, default=QuantConfig.dkm_iters)
  ap.add_argument("--profile", action="store_true", help="also time DKM alone (ResNet-18 layers)")
  ap.add_argument("--profile-chunks", default="4096,16384", type=lambda s: [int(x) for x in s.split(",")])
  args = ap.parse_args()
  quant = QuantConfig(chunk_size=args.chunk_size, dkm_iters=args.dkm_iters)
  print(
    f"jax {jax.__version__}, {jax.device_count()} {jax.devices()[0].platform} device(s), "
    f"{os.cpu_count()} CPUs; dtype {args.dtype}; DKM iters {quant.dkm_iters}, chunk {quant.chunk_size}"
  )
  results: dict[str, dict] = {}
  for model_name in args.models.split(","):
    steps = args.steps if model_name == "resnet18" else args.cnn_steps
    sub = argparse.Namespace(**{**vars(args), "steps": steps})
    for variant in args.variants.split(","):
      r = time_variant(model_name, variant, sub, quant)
      results[f"{model_name}/{variant}"] = r
      print(
        f"  {model_name:<8} {variant:<8} compile {r['compile_s']:6.1f} s  "
        f"step {r['step_s'] * 1e3:9.1f} ms  (runs: {', '.join(f'{t:.3f}' for t in r['times'])})",
        flush=True,
      )

  print()
  print("| model | input | batch | variant | step ms | × float | compile s |")
  print("|---|---|---|---|---|---|---|")
  for key, r in results.items():
    model_name, variant = key.split("/")
    base = results.get(f"{model_name}/float")
    ratio = f"{r['step_s'] / base['step_s']:.2f}" if base else "-"
    size, batch = (
      (args.image_size, args.batch) if model_name == "resnet18" else (8, args.cnn_batch)
    )
    print(
      f"| {MODELS[model_name][0]} | {size} | {batch} | {variant} | {r['step_s'] * 1e3:.1f} "
      f"| {ratio} | {r['compile_s']:.1f} |"
    )

  if args.profile and "resnet18" in args.models:
    print("\nDKM alone (forward + backward, LR²VQ d̃, all layers of a group in one jit):")
    rows = dkm_profile("resnet18", args, quant)
    print("| layers | chunk | DKM fwd+bwd s |")
    print("|---|---|---|")
    for desc, chunk, t in rows:
      print(f"| {desc} | {chunk} | {t:.3f} |")

  def ratio(model_name: str, variant: str) -> str:
    a, b = results.get(f"{model_name}/{variant}"), results.get(f"{model_name}/float")
    return f"{a['step_s'] / b['step_s']:.2f}" if a and b else "nan"

  print(
    f"RESULT lr2vq_over_float_resnet18={ratio('resnet18', 'lr2vq')} "
    f"dkm_over_float_resnet18={ratio('resnet18', 'dkm')} "
    f"lr2vq_over_float_cnn={ratio('cnn', 'lr2vq')} "
    f"resnet18_input={args.image_size} resnet18_batch={args.batch}"
  )


if __name__ == "__main__":
  main()
