"""LR²VQ: low-rank representation vector quantization for model compression, in JAX/Flax.

Importing the library never imports TensorFlow or clu (the training system loads TensorFlow only to
read CIFAR-10 or ImageNet).
"""

from lr2vq_jax import convert, nn, nnx, presets
from lr2vq_jax.core import (
  CompressedTensor,
  DimEstimate,
  LayerPlan,
  Rule,
  SizeReport,
  SubvectorError,
  clamp_k,
  compress_tensor,
  estimate_dim,
  estimate_dim_model,
  from_subvectors,
  plan_layers,
  size_report,
  to_subvectors,
)
from lr2vq_jax.core.dkm import dkm
from lr2vq_jax.core.kmeans import KMeansResult, kmeans
from lr2vq_jax.core.mode import MODES, Mode
from lr2vq_jax.dim_choice import DimScores
from lr2vq_jax.export import Artifact, ArtifactError, export, load
from lr2vq_jax.nn import QuantConfig, describe, quantize_model, sum_losses
from lr2vq_jax.planning import Plan, plan

# `export` is imported eagerly on purpose: binding the function here, after the submodule
# `lr2vq_jax.export` is loaded, keeps `lq.export` the function for good.

__version__ = "0.1.0"


def select_dim(model, *args, **kwargs):
  """d̃ by the clustered-SVD predictor. `select_dim(model, variables, rules, eval_fn, candidates)`
  for any linen model (`lr2vq_jax.dim_choice`); `select_dim(config, float_dir, workdir,
  candidates)` for an experiment config (`lr2vq_jax.train.dim_select`, loaded on first use: it
  brings TensorFlow's data pipeline)."""
  import flax.linen

  from lr2vq_jax import dim_choice

  if isinstance(model, flax.linen.Module):
    return dim_choice.select_dim(model, *args, **kwargs)
  from lr2vq_jax.train import dim_select

  return dim_select.select_dim(model, *args, **kwargs)


def __getattr__(name: str):
  """`lq.DimSelection`: the config-level result, loaded on first use (see `select_dim`)."""
  if name == "DimSelection":
    from lr2vq_jax.train import dim_select

    return dim_select.DimSelection
  raise AttributeError(f"module 'lr2vq_jax' has no attribute {name!r}")


__all__ = [
  "Artifact",
  "ArtifactError",
  "CompressedTensor",
  "DimEstimate",
  "DimScores",
  "KMeansResult",
  "LayerPlan",
  "MODES",
  "Mode",
  "Plan",
  "QuantConfig",
  "Rule",
  "SizeReport",
  "SubvectorError",
  "clamp_k",
  "compress_tensor",
  "convert",
  "describe",
  "dkm",
  "estimate_dim",
  "estimate_dim_model",
  "export",
  "from_subvectors",
  "kmeans",
  "load",
  "nn",
  "nnx",
  "plan",
  "plan_layers",
  "presets",
  "quantize_model",
  "select_dim",
  "size_report",
  "sum_losses",
  "to_subvectors",
]
