"""The embedded default: the whole LR²VQ pipeline and its baselines on the 8×8 digits, offline.

Run:       make demo   (= python -m lr2vq_jax.main --config configs/default.py --workdir runs/demo)
Quick:     --config configs/default.py:quick  (a few steps per stage; what the test suite runs)
Hardware:  2 CPU cores: make demo took 1 min 30 s on a fresh clone, install included (pip's cache
           warm).
Expected:  float ≥ 98% top-1 on the 450 held-out test digits; LR²VQ (m = 9, k = 16, d̃ = 4) close to
           it at 0.44 code bits per weight; PQ and vanilla DKM at the same bytes score lower on
           average (seeds 0–4: LR²VQ 98.13 ± 0.12, PQ 96.80 ± 0.75, vanilla DKM 97.51 ± 0.88; one
           seed can go either way, README).

Stages: float (train the CNN) → lowrank (SVD, low-rank pre-training) → quantize (k-means++ then
DKM fine-tuning) → export + evaluate the artifact; baselines pq and dkm start from float.
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


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.model = "digits_cnn"
  config.dtype = "float32"
  config.seed = 0
  config.sharding = "replicated"  # or "fsdp": also split large params (train/partitioning.py)
  # > 0: a jax.profiler trace of that many train steps (after each stage's first, compiling, step)
  # in <workdir>/<stage>/plugins/profile/, for TensorBoard's Profile tab or Perfetto; 0: off.
  config.profile_steps = 0
  config.data = default_data_config("digits")
  config.data.batch_size = 64
  config.data.eval_batch_size = 450
  config.preset = "digits_small_blocks"  # conv2, conv3: k = 16, m = 9; conv1 and fc stay float
  config.d = 4  # d̃ of the compressed layers (capped at m); chosen on validation (docs/research.md)
  config.update(compression_overrides())
  config.stages = "float,lowrank,quantize,pq,dkm"
  config.quant = quant_section()
  short = dict(weight_decay=1e-4, log_every=50, checkpoint_every=200)
  config.float = stage(40, 2e-3, **short)
  config.lowrank = stage(lowrank_epochs(20), 1e-3, **short)  # 30 epochs
  config.quantize = stage(20, 1e-3, **short)
  config.pq = stage(20, 1e-3, **short)
  config.dkm = stage(20, 1e-3, tau_alpha=0.01, freeze=("projection",), **short)
  if arg == "quick":
    shorten(config, steps=6, kmeans_iters=3)
  elif arg:
    raise ValueError(f"configs/default.py: unknown argument {arg!r}; expected 'quick' or nothing")
  return config
