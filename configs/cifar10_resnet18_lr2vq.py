"""LR²VQ on CIFAR-10, ResNet-18 (ImageNet layout), small blocks (31.4×, 1.357 MiB, PQF/BGD accounting).

Run:       lr2vq train --config configs/cifar10_resnet18_lr2vq.py --workdir runs/cifar10
Smoke:     --config configs/cifar10_resnet18_lr2vq.py:runlocal  (CPU, a few steps per stage)
Hardware:  one GPU or TPU host (about 3·10⁴ steps at batch 256); on 2 CPU cores only :runlocal.
Expected:  not measured: no CIFAR-10 run has been made with this code. Needs tfds `cifar10`
           prepared in data_dir (`lr2vq prepare cifar10 --data_dir DIR` downloads it); nothing is
           downloaded by the tests.
"""

import ml_collections

from lr2vq_jax.train.datasets import default_data_config
from lr2vq_jax.train.recipes import (
  compression_overrides,
  lowrank_epochs,
  quant_section,
  shorten,
  stage,
)


def get_config(arg=None):
  config = ml_collections.ConfigDict()
  config.model = "resnet18"
  config.dtype = "float32"
  config.seed = 0
  # > 0: a profiler trace of that many steps per stage (configs/default.py)
  config.profile_steps = 0
  config.data = default_data_config("cifar10")
  config.data.batch_size = 256
  config.data.eval_batch_size = 500
  config.preset = "resnet18_small_blocks"
  config.d = 4
  config.update(compression_overrides())
  config.stages = "float,lowrank,quantize,pq,dkm"
  config.quant = quant_section()
  sgd = dict(optimizer="sgd", weight_decay=5e-4, warmup_steps=500)
  config.float = stage(100, 0.1, **sgd)
  config.lowrank = stage(lowrank_epochs(20), 1e-3)
  config.quantize = stage(20, 1e-3)
  config.pq = stage(20, 1e-3, freeze=("projection",))
  config.dkm = stage(20, 1e-3, freeze=("projection",))
  if arg == "runlocal":
    shorten(config, steps=2, kmeans_iters=2)
    config.data.batch_size = 8
    config.data.eval_batch_size = 8
    config.float.warmup_steps = 0
  elif arg:
    raise ValueError(f"unknown config argument {arg!r}; expected 'runlocal' or nothing")
  return config
