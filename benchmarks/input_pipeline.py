"""ImageNet input pipeline throughput: images/s per host core, train and eval preprocessing.

Runs the project's own preprocessing functions (lr2vq_jax.train.preprocessing): train = JPEG
decode fused with the Inception crop (8–100% area, aspect 3/4–4/3), resize to 224, flip,
normalise; eval = decode, resize the shorter side to 256, centre crop 224, normalise. Input: JPEGs
of ImageNet's common sizes and aspect ratios (500×375, 375×500, 500×333, 500×500, 333×500,
640×480, 500×281; quality 90, ~60–110 KB like ImageNet's ~110 KB average), held in memory so the
disk is not measured. tf.data options:

  off    sequential map, deterministic, default threadpool (one core: the per-core rate)
  on     num_parallel_calls=AUTOTUNE, autotune on, private threadpool of all host cores,
         deterministic=False (the order does not matter for a throughput pipeline), prefetch
  on_det the same but deterministic (what training uses: reproducible batches)

Per-core rate = images/s / cores used. Ends with `RESULT train_per_core=… eval_per_core=…
cores_for_resnet50=…`, the host cores needed to feed ResNet-50 at a TPU v3 pod host's rate
(--target, default 7,500 images/s: 480,000 images/s on a v3-512 = 64 hosts, MLPerf ResNet-50).

  python benchmarks/input_pipeline.py [--images 256] [--seconds 10] [--batch 64]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from lr2vq_jax.train.preprocessing import augment_seed, imagenet_eval, imagenet_train  # noqa: E402
from tests.support.tiny_imagenet import SIZES, encode_image  # noqa: E402


def jpegs(n: int, seed: int = 0) -> list[bytes]:
  rng = np.random.default_rng(seed)
  return [encode_image(rng, SIZES[i % len(SIZES)]) for i in range(n)]


def dataset(data: list[bytes], mode: str, train: bool, cores: int, batch: int) -> tf.data.Dataset:
  ds = tf.data.Dataset.from_tensor_slices(tf.constant(data)).repeat().enumerate()
  if train:
    fn = lambda i, j: imagenet_train(j, 224, augment_seed(0, i))  # noqa: E731
  else:
    fn = lambda i, j: imagenet_eval(j, 224)  # noqa: E731
  parallel = mode != "off"
  if parallel:
    ds = ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=mode != "on")
  else:
    ds = ds.map(fn)
  ds = ds.batch(batch, drop_remainder=True)
  options = tf.data.Options()
  options.autotune.enabled = parallel
  options.deterministic = mode != "on"
  options.threading.private_threadpool_size = cores if parallel else 1
  options.threading.max_intra_op_parallelism = 1
  return ds.with_options(options).prefetch(tf.data.AUTOTUNE if parallel else 1)


def throughput(ds: tf.data.Dataset, seconds: float, batch: int) -> float:
  it = iter(ds)
  for _ in range(3):  # warm up (threadpools, autotune)
    next(it)
  n, t0 = 0, time.perf_counter()
  while time.perf_counter() - t0 < seconds:
    next(it)
    n += batch
  return n / (time.perf_counter() - t0)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument("--images", type=int, default=256, help="distinct JPEGs (cycled)")
  ap.add_argument("--seconds", type=float, default=10.0, help="timed seconds per case")
  ap.add_argument("--batch", type=int, default=64)
  ap.add_argument("--target", type=float, default=7500.0, help="images/s per host to feed")
  args = ap.parse_args()
  cores = len(os.sched_getaffinity(0))
  data = jpegs(args.images)
  kb = np.mean([len(j) for j in data]) / 1024
  print(f"{len(data)} JPEGs, mean {kb:.0f} KB; {cores} host cores; {args.seconds:.0f} s per case")
  print(f"{'pipeline':<8} {'tf.data':<7} {'cores':>5} {'images/s':>9} {'per core':>9}")
  per_core = {}
  for train in (True, False):
    name = "train" if train else "eval"
    for mode in ("off", "on", "on_det"):
      used = 1 if mode == "off" else cores
      rate = throughput(dataset(data, mode, train, cores, args.batch), args.seconds, args.batch)
      per_core[name, mode] = rate / used
      print(f"{name:<8} {mode:<7} {used:>5} {rate:>9.0f} {rate / used:>9.0f}")
  train_pc = max(per_core["train", "off"], per_core["train", "on_det"])
  eval_pc = max(per_core["eval", "off"], per_core["eval", "on_det"])
  need = args.target / train_pc
  print(
    f"ResNet-50 at {args.target:,.0f} images/s per host needs ~{need:.0f} host cores of train "
    f"preprocessing at {train_pc:.0f} images/s per core"
  )
  print(
    f"RESULT train_per_core={train_pc:.0f} eval_per_core={eval_pc:.0f} "
    f"cores_for_resnet50={need:.0f}"
  )


if __name__ == "__main__":
  main()
