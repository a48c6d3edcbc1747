"""What one `kmeans` program costs to lower and compile (CPU s), at the shapes the README's ResNet-18
`:runlocal` run and the digits recipe quantize with.

For each (n, d, k): `kmeans.lower(x, k, key=..., iters=...)` then `.compile()`, timed with
`time.process_time()`, best of --repeat (each from a cleared JAX cache, no persistent cache), and the
StableHLO size of the lowered program and the optimized HLO size of the compiled one. k <= 64 seeds by
greedy k-means++, k > 64 by `kmeans_parallel`. Run with the test suite's settings (without XLA_FLAGS:
XLA's defaults):

  XLA_FLAGS="--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false" \
    JAX_DEFAULT_PRNG_IMPL=rbg python benchmarks/kmeans_compile.py
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

from lr2vq_jax.core import kmeans as kmeans_lib  # noqa: E402

# (n, d, k): the runlocal run's k-means shapes (its 11 calls hit these 6), then the digits recipe's.
SHAPES = (
  (288, 18, 256),
  (1152, 18, 256),
  (2048, 18, 256),
  (128, 4, 128),
  (16000, 4, 2048),
  (64, 18, 64),
  (2000, 4, 16),
  (1000, 9, 16),
)


def measure(n: int, d: int, k: int, iters: int, repeat: int) -> tuple[float, float, int, int]:
  """(lower s, compile s, StableHLO chars, optimized HLO chars), best of `repeat` each."""
  x = jnp.asarray(np.random.default_rng(0).normal(size=(n, d)).astype(np.float32))
  low, comp = float("inf"), float("inf")
  for _ in range(repeat):
    jax.clear_caches()
    t0 = time.process_time()
    lowered = kmeans_lib.kmeans.lower(x, k, key=jax.random.key(0), iters=iters)
    t1 = time.process_time()
    compiled = lowered.compile()
    t2 = time.process_time()
    low, comp = min(low, t1 - t0), min(comp, t2 - t1)
  return low, comp, len(lowered.as_text()), len(compiled.as_text())


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--iters", type=int, default=2, help="Lloyd iterations (runlocal: 2)")
  parser.add_argument("--repeat", type=int, default=3)
  args = parser.parse_args()
  jax.config.update("jax_enable_compilation_cache", False)
  print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r} prng={jax.config.jax_default_prng_impl}")
  print(f"{'n':>6} {'d':>3} {'k':>5}  {'lower s':>7} {'compile s':>9} {'StableHLO':>9} {'HLO':>8}")
  total_low = total_comp = 0.0
  for n, d, k in SHAPES:
    low, comp, shlo, hlo = measure(n, d, k, args.iters, args.repeat)
    total_low, total_comp = total_low + low, total_comp + comp
    print(f"{n:>6} {d:>3} {k:>5}  {low:7.2f} {comp:9.2f} {shlo:9d} {hlo:8d}", flush=True)
  print(
    f"RESULT kmeans_compile iters={args.iters} shapes={len(SHAPES)} "
    f"lower_cpu_s={total_low:.2f} compile_cpu_s={total_comp:.2f} "
    f"total_cpu_s={total_low + total_comp:.2f} (best of {args.repeat})"
  )


if __name__ == "__main__":
  main()
