"""CPU seconds a fresh process pays to read the embedded digits: the NumPy stream vs tf.data.

Each measurement is a new Python process that imports the stream, reads `--steps` training batches
(the default batch, 128) and one pass of the validation and test splits, and reports its CPU time
(`time.process_time`, imports included: what every digits run and test subprocess pays). The two
streams yield the same batches (tests/train/test_array_stream.py); best of `--repeats`.

  python benchmarks/digits_input.py [--steps 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import sys, time
from lr2vq_jax.train import {module} as stream
from lr2vq_jax.train.datasets import default_data_config
cfg = default_data_config("digits")
kw = dict(global_batch=cfg.batch_size, local_batch=cfg.batch_size, p=0, seed=0, start_step=0)
extra = {{"pc": 1}} if "{module}" == "tf_datasets" else {{}}
for b in stream.batches(cfg, cfg.train_split, num_batches={steps}, training=True, **kw, **extra):
  pass
for split in (cfg.eval_split, cfg.test_split):
  for b in stream.batches(cfg, split, num_batches=None, training=False, **kw, **extra):
    pass
print(time.process_time(), "tensorflow" in sys.modules)
"""


def cpu_seconds(module: str, steps: int) -> tuple[float, bool]:
  """(CPU s, whether TensorFlow was imported) of one fresh process reading through `module`."""
  env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
  code = CHILD.format(module=module, steps=steps)
  out = subprocess.run(
    [sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True
  ).stdout.split()
  return float(out[0]), out[1] == "True"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=200)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {args.steps} train batches")
  print("| stream | CPU s per process (best) | all runs | imports TensorFlow |")
  print("|---|---|---|---|")
  best = {}
  for module, name in (("tf_datasets", "tf.data"), ("array_stream", "NumPy")):
    runs = [cpu_seconds(module, args.steps) for _ in range(args.repeats)]
    best[name] = min(r[0] for r in runs)
    all_runs = ", ".join(f"{r[0]:.2f}" for r in runs)
    print(f"| {name} | {best[name]:.2f} | {all_runs} | {runs[0][1]} |")
  saved = best["tf.data"] - best["NumPy"]
  print(
    f"RESULT tf_data_cpu_s={best['tf.data']:.2f} numpy_cpu_s={best['NumPy']:.2f} saved={saved:.2f}"
  )


if __name__ == "__main__":
  main()
