"""What the jitted train and eval steps cost to trace, lower and compile (CPU s), per model/stage.

Builds each stage as the trainer does (`build_stage` of a config, `make_train_step` +
`partitioning.jit_train_step`, `make_eval_step` jitted as evaluation does) on a random init and a
synthetic batch, then times `jitted.trace(...)`, `.lower()` and `.compile()` with
`time.process_time()` (best of --repeat, each from a cleared JAX cache) and prints the StableHLO
size of the lowered step and the optimized HLO size of the compiled one. Models: the digits CNN
of configs/default.py:quick and the 1/8-width, one-block-per-stage ResNet-18 of
configs/imagenet_resnet18_large_lr2vq.py:runlocal (32 px, batch 8, d̃ = 4; no ImageNet needed:
the data info is synthetic). Run with the test suite's settings (without XLA_FLAGS: XLA's defaults):

  JAX_PLATFORMS=cpu XLA_FLAGS=--xla_backend_optimization_level=0 JAX_DEFAULT_PRNG_IMPL=rbg \
    python benchmarks/step_compile.py
  python benchmarks/step_compile.py --models resnet18 --stages quantize --repeat 1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from lr2vq_jax.train import datasets, input_pipeline, partitioning, stage_setup  # noqa: E402
from lr2vq_jax.train.state import create_train_state  # noqa: E402
from lr2vq_jax.train.step import make_eval_step, make_train_step  # noqa: E402

# name: (config module, config argument)
MODELS = {
  "cnn": ("configs/default.py", "quick"),
  "resnet18": ("configs/imagenet_resnet18_large_lr2vq.py", "runlocal"),
}
STAGES = ("float", "lowrank", "quantize")


def load_config(model: str):
  import importlib.util

  path, arg = MODELS[model]
  spec = importlib.util.spec_from_file_location("cfg", ROOT / path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg)


def synthetic_info(cfg):
  """DataInfo without the data (ImageNet is not needed to trace its model)."""
  if cfg.name != "imagenet2012":
    return REAL_INFO(cfg)
  s = cfg.image_size
  return datasets.DataInfo(cfg.name, 1000, (s, s, 3), 64, 16, 16)


REAL_INFO = input_pipeline.dataset_info


def build(model: str, stage_name: str):
  """(jitted train step, jitted eval step, state, batch, mesh) of one stage."""
  config = load_config(model)
  stage_setup.input_pipeline.dataset_info = synthetic_info
  try:
    stage = stage_setup.build_stage(config, stage_name, "/tmp/unused")
  finally:
    stage_setup.input_pipeline.dataset_info = REAL_INFO
  num_steps = max(stage.num_steps, 1)
  state = create_train_state(stage.model, stage.tx, stage.sample_input, stage.mesh, stage.rng)
  train = partitioning.jit_train_step(
    make_train_step(stage.model, stage.cfg, stage.tx, num_steps),
    stage_setup.abstract_state(stage),
    stage.mesh,
  )
  shape = stage.sample_input.shape[1:]
  rng = np.random.default_rng(0)
  b = config.data.batch_size
  batch = {
    "image": rng.normal(size=(b, *shape)).astype(np.float32),
    "label": rng.integers(0, stage.info.num_classes, size=(b,)).astype(np.int32),
  }
  batch = partitioning.global_batch(batch, stage.mesh)
  ev = dict(batch, mask=jnp.ones((b,), bool))
  return train.jitted, jax.jit(make_eval_step(stage.model)), state, batch, ev, stage.mesh


def timed(fn):
  t0 = time.process_time()
  out = fn()
  return out, time.process_time() - t0


def measure(jitted, args, mesh) -> dict:
  """trace / lower / compile CPU seconds and HLO sizes (characters) of one jitted step."""
  jax.clear_caches()
  with jax.set_mesh(mesh):
    traced, t_trace = timed(lambda: jitted.trace(*args))
    lowered, t_lower = timed(traced.lower)
    compiled, t_compile = timed(lowered.compile)
  return dict(
    trace=t_trace,
    lower=t_lower,
    compile=t_compile,
    stablehlo=len(lowered.as_text()),
    hlo=len(compiled.as_text() or ""),
  )


def best(runs: list[dict]) -> dict:
  return {k: min(r[k] for r in runs) for k in runs[0]}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", default=",".join(MODELS))
  parser.add_argument("--stages", default=",".join(STAGES))
  parser.add_argument("--repeat", type=int, default=3)
  args = parser.parse_args()
  rows = []
  for model in args.models.split(","):
    for stage in args.stages.split(","):
      train, ev, state, batch, eval_batch, mesh = build(model, stage)
      for step, jitted, call in (
        ("train_step", train, (state, batch)),
        ("eval_step", ev, (state.variables(), eval_batch)),
      ):
        r = best([measure(jitted, call, mesh) for _ in range(args.repeat)])
        rows.append((f"{model}/{stage}/{step}", r))
        print(f"  {rows[-1][0]}: {r}", flush=True)
  print(f"\njax {jax.__version__} ({jax.default_backend()}), best of {args.repeat}, CPU s")
  print("| model/stage/step | trace s | lower s | compile s | StableHLO chars | HLO chars |")
  print("|---|---|---|---|---|---|")
  for name, r in rows:
    print(
      f"| {name} | {r['trace']:.2f} | {r['lower']:.2f} | {r['compile']:.2f} | "
      f"{r['stablehlo']:,} | {r['hlo']:,} |"
    )
  total = {k: sum(r[k] for _, r in rows) for k in ("trace", "lower", "compile")}
  print(
    f"RESULT trace_s={total['trace']:.2f} lower_s={total['lower']:.2f} "
    f"compile_s={total['compile']:.2f} total_s={sum(total.values()):.2f}"
  )


if __name__ == "__main__":
  main()
