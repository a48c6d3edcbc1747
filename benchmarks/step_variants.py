"""What `step_time.py` times: the models, the step variants and how one is built.

Each variant is a stage kind of the project's own train step (`make_train_step` +
`partitioning.jit_train_step`, the state from `train.state.create_train_state` as in the trainer)
with a QuantConfig change, on a random init and one synthetic batch.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from lr2vq_jax import convert, presets
from lr2vq_jax.models import create_model
from lr2vq_jax.nn import QuantConfig, quantize_model
from lr2vq_jax.train import partitioning
from lr2vq_jax.train.state import abstract_train_state, abstract_variables, create_train_state
from lr2vq_jax.train.step import OPTIMIZER_DEFAULTS, create_optimizer, make_train_step

# name: (model, preset, LR²VQ d̃, classes); d̃ as in configs/imagenet_*_lr2vq.py
MODELS = {
  "resnet18": ("resnet18", "resnet18_small_blocks", 4, 1000),
  "resnet50": ("resnet50", "resnet50_large_blocks", 8, 1000),
  "cnn": ("digits_cnn", "digits_small_blocks", 3, 10),
}
# variant: (stage kind, d̃ = m?, frozen params, QuantConfig changes; TOP_T stands for --top-t)
TOP_T = "--top-t"
REFRESH = "--refresh"
VARIANTS = {
  "float": ("float", False, (), {}),
  "lowrank": ("lowrank", False, (), {}),
  "lr2vq": ("quantize", False, (), {}),  # QuantConfig as the flags give it
  "lr2vq_full": ("quantize", False, (), {"dkm_top_t": 0}),  # attention over all k centroids
  "lr2vq_top": ("quantize", False, (), {"dkm_top_t": TOP_T}),  # over the t nearest
  "lr2vq_top_iters1": ("quantize", False, (), {"dkm_top_t": TOP_T, "dkm_iters": 1}),
  # top-t with the lists carried in the train state, re-ranked every --refresh steps
  "lr2vq_lists": ("quantize", False, (), {"dkm_top_t": TOP_T, "dkm_refresh": REFRESH}),
  # ... with one centroid update per step, cold (from the codebook) or warm (QuantConfig.dkm_warm)
  "lr2vq_lists_iters1": (
    "quantize",
    False,
    (),
    {"dkm_top_t": TOP_T, "dkm_refresh": REFRESH, "dkm_iters": 1},
  ),
  "lr2vq_lists_warm1": (
    "quantize",
    False,
    (),
    {"dkm_top_t": TOP_T, "dkm_refresh": REFRESH, "dkm_iters": 1, "dkm_warm": True},
  ),
  "lr2vq_top_warm1": (
    "quantize",
    False,
    (),
    {"dkm_top_t": TOP_T, "dkm_iters": 1, "dkm_warm": True},
  ),
  "dkm": ("quantize", True, ("projection",), {}),
}


def variant_quant(variant: str, args, quant: QuantConfig) -> QuantConfig:
  """The QuantConfig a variant runs with: the flags' one with the variant's changes."""
  given = {TOP_T: args.top_t, REFRESH: args.refresh}
  changes = {k: given.get(v, v) for k, v in VARIANTS[variant][3].items()}
  return dataclasses.replace(quant, **changes)


class Section(dict):
  """A stage config section with attribute access (no ml_collections/TF import: runs on the GPU
  image too); the optimizer fields of `lr2vq_jax.train.step.OPTIMIZER_DEFAULTS`."""

  __getattr__ = dict.__getitem__


def stage_section(lr: float, **kw) -> Section:
  return Section({**OPTIMIZER_DEFAULTS, "lr": lr, **kw})


def build(model_name: str, variant: str, args, quant: QuantConfig):
  """(jitted step, initial state, batch) of one variant; weights are a random init (synthetic)."""
  name, preset, d, classes = MODELS[model_name]
  kind, vanilla, freeze, _ = VARIANTS[variant]
  quant = variant_quant(variant, args, quant)
  rules = presets.with_d(presets.get_preset(preset), d)
  rules = convert.vanilla(rules) if vanilla else rules
  float_model = create_model(name, num_classes=classes, dtype=args.dtype)
  model = quantize_model(float_model, rules, kind, quant)
  size, batch_size, channels = input_of(model_name, args)
  cfg = stage_section(1e-3, weight_decay=1e-4, freeze=freeze)
  mesh = partitioning.make_mesh()
  sample = jnp.zeros((1, size, size, channels), jnp.float32)

  tx = create_optimizer(cfg, 1000, abstract_variables(model, sample)["params"])
  target = abstract_train_state(model, tx, sample, mesh)
  state = create_train_state(model, tx, sample, mesh, jax.random.key(0))
  step = partitioning.jit_train_step(make_train_step(model, cfg, tx), target, mesh)
  rng = np.random.default_rng(0)
  batch = {
    "image": rng.normal(size=(batch_size, size, size, channels)).astype(np.float32),
    "label": rng.integers(0, classes, size=(batch_size,)).astype(np.int32),
  }
  return step, state, partitioning.global_batch(batch, mesh), mesh


def input_of(model_name: str, args) -> tuple[int, int, int]:
  """(image size, batch, channels): ResNets take --image-size/--batch, the CNN 8 px/--cnn-batch."""
  if model_name == "cnn":
    return 8, args.cnn_batch, 1
  return args.image_size, args.batch, 3
