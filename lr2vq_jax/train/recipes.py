"""Experiment recipes shared by the files in configs/: the sections and the ImageNet builder.

Each `configs/imagenet_<model>_<blocks>_<method>.py` calls `imagenet(...)` and documents its own
command, hardware and expected result. Recipe (reconstructed from the
paper's abstract and PQF's): start from torchvision weights (`config.float.init_from`), low-rank pre-training 13.5 epochs
(1.5× the fine-tuning, the ratio the digits ablations chose; unverified at ImageNet scale), then 9
epochs of quantization fine-tuning with Adam and a cosine schedule as PQF does; PQ tunes
codebooks with codes frozen for the same 9 epochs; vanilla DKM fine-tunes for the same 9 epochs.

`runlocal` shrinks everything for a CPU smoke run (the same ResNet at 1/8 width with one block per
stage — the same layer and shortcut kinds and preset rules, half the layers —, 32-px images,
batch 8, d̃ ≤ 4, 2 steps per trained stage; the float stage imports the weights and evaluates, as
in the recipe); the test suite runs it on a tiny ImageNet in the official tar layout, prepared by
`lr2vq prepare`.
"""

import ml_collections

from lr2vq_jax.core import kmeans as kmeans_lib
from lr2vq_jax.nn import QuantConfig
from lr2vq_jax.nn.recorded import DEFAULTS
from lr2vq_jax.train import stages
from lr2vq_jax.train.datasets import default_data_config
from lr2vq_jax.train.step import OPTIMIZER_DEFAULTS

# The LR²VQ recipe the digits ablations chose on validation (docs/research.md "Ablations",
# configs/digits_ablations.py): an orthonormal P, and low-rank pre-training 1.5× as long as the
# quantization fine-tuning (30 and 20 epochs there). Every LR²VQ config applies both.
LR2VQ_RECIPE = {"quant.projection": "orthonormal"}
LOWRANK_EPOCH_RATIO = 1.5


def lowrank_epochs(quantize_epochs: float) -> float:
  """Low-rank pre-training length of the recipe for a given quantization fine-tuning length."""
  return LOWRANK_EPOCH_RATIO * quantize_epochs


METHOD_STAGES = stages.method_stages()  # {"lr2vq": "float,lowrank,quantize", "pq": ..., ...}


def stage(num_epochs: float, lr: float, **kw) -> ml_collections.ConfigDict:
  """One stage's training section: Adam, cosine schedule, optional L2 decay, resume/log cadence."""
  cfg = ml_collections.ConfigDict(
    dict(
      num_epochs=num_epochs,
      num_steps=0,
      lr=lr,
      **OPTIMIZER_DEFAULTS,
      log_every=100,
      checkpoint_every=1000,
      init_from="",
      tau_alpha=0.0,
      tau_final_factor=1.0,  # τ annealed geometrically to τ_0·this by the last step (1: fixed)
      distill=0.0,  # weight of the KL to the float model's logits (0: plain cross-entropy)
      distill_temperature=1.0,
      teacher="",  # the float stage's directory ("": <workdir>/float)
      bn_reestimate_batches=0,  # before export: BN statistics recomputed with the hard weights
      max_steps_this_run=0,  # >0: stop (checkpointed) after this many steps; rerun to resume
    )
  )
  cfg.update(kw)
  return cfg


def quant_section(**overrides) -> ml_collections.ConfigDict:
  """The `config.quant` section: DKM temperature rule, iterations, commitment, export layout."""
  cfg = ml_collections.ConfigDict(
    dict(
      tau_alpha=QuantConfig.tau_alpha,
      dkm_iters=DEFAULTS["dkm_iters"],
      # "unrolled", or "last": one-step gradient, faster, costs accuracy at m=18 (docs)
      dkm_grad=QuantConfig.dkm_grad,
      dkm_top_t=QuantConfig.dkm_top_t,  # > 0: attention over the t nearest centroids (faster)
      dkm_refresh=QuantConfig.dkm_refresh,  # > 1: re-rank those t every N steps, carried between
      dkm_warm=QuantConfig.dkm_warm,  # True: DKM starts where the previous step's updates ended
      commitment=QuantConfig.commitment,
      store=DEFAULTS["store"],
      projection=LR2VQ_RECIPE["quant.projection"],  # or "learned": any P (no QR)
      chunk_size=QuantConfig.chunk_size,
      kmeans_iters=kmeans_lib.ITERS,
    )
  )
  cfg.update(overrides)
  return cfg


quant = quant_section  # the former name: config files written before the rename still load


def compression_overrides() -> dict:
  """Config fields that override the preset from the command line (0 / "": the preset's own):
  `k` and `m` on every compressed layer, or `rules` replacing the preset, as text
  "PATTERN:k=K,m=M[,d=D];PATTERN:skip;..." (see `lr2vq_jax.core.rules.parse_rules`)."""
  return {"k": 0, "m": 0, "rules": ""}


def shorten(config: ml_collections.ConfigDict, *, steps: int, kmeans_iters: int) -> None:
  """Shrinks every stage to `steps` steps (logging and checkpointing along) for smoke runs."""
  config.quant.kmeans_iters = kmeans_iters
  for name in stages.NAMES:
    config[name].num_steps = steps
    config[name].log_every = max(1, steps // 2)
    config[name].checkpoint_every = max(1, steps // 2)


def imagenet(model: str, blocks: str, method: str, arg: str | None) -> ml_collections.ConfigDict:
  if method not in METHOD_STAGES:
    raise ValueError(f"method {method!r}: expected one of {sorted(METHOD_STAGES)}")
  config = ml_collections.ConfigDict()
  config.model = model
  config.dtype = "bfloat16"  # compute; params and optimizer state stay float32
  config.seed = 0
  config.sharding = "replicated"  # or "fsdp": also split large params (train/partitioning.py)
  # > 0: a profiler trace of that many steps per stage (configs/default.py)
  config.profile_steps = 0
  config.data = default_data_config("imagenet2012")
  config.data.batch_size = 1024
  config.data.eval_batch_size = 1000
  config.preset = f"{model}_{blocks}_blocks"
  config.d = 0 if method != "lr2vq" else (8 if blocks == "large" else 4)  # d̃ (capped at each m)
  config.update(compression_overrides())
  config.stages = METHOD_STAGES[method]
  config.quant = quant_section()
  lr = 1e-3 * config.data.batch_size / 128  # PQF: Adam 1e-3 per 128-image worker
  config.float = stage(0, lr, init_from="")  # 0 epochs: import torchvision weights, evaluate
  config.lowrank = stage(lowrank_epochs(9), lr)
  config.quantize = stage(9, lr, final_lr_factor=1e-3)
  config.pq = stage(9, lr, final_lr_factor=1e-3, freeze=("projection",))
  config.dkm = stage(9, lr, final_lr_factor=1e-3, freeze=("projection",))
  if arg == "runlocal":
    # 1/8 width, one block per stage (layer{1..4}_0; models/__init__.py): minutes → seconds
    config.model = f"{model}_width8_1block"
    config.dtype = "float32"
    config.data.image_size = 32
    config.data.batch_size = 8
    config.data.eval_batch_size = 8
    config.data.shuffle_buffer = 16
    shorten(config, steps=2, kmeans_iters=2)
    # d̃ at most 4 (the small-blocks recipe's): Gram-Schmidt's compile grows as d̃², about two
    # thirds of the steps' compile at d̃ = 8; the same code paths (d̃ < m on 3×3 convs, = m on 1×1)
    config.d = min(config.d, 4)
    config.float.num_steps = 0  # as the recipe: the float stage imports the weights, evaluates
  elif arg:
    raise ValueError(f"unknown config argument {arg!r}; expected 'runlocal' or nothing")
  return config
