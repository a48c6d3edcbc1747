"""LR²VQ: low-rank representation vector quantization for model compression, in JAX/Flax.

Importing the library never imports TensorFlow or clu (only `lr2vq_jax.train` and the training
entry point do).
"""

from lr2vq_jax import convert, nn, presets
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
from lr2vq_jax.export import Artifact, ArtifactError, export, load
from lr2vq_jax.nn import QuantConfig, describe, quantize_model

# `export` is imported eagerly on purpose: binding the function here, after the submodule
# `lr2vq_jax.export` is loaded, keeps `lq.export` the function for good.

__version__ = "0.1.0"


def __getattr__(name: str):
  """`lq.select_dim` / `lq.DimSelection`: the task-level d̃ choice, loaded on first use because it
  trains and evaluates through `lr2vq_jax.train` (which brings TensorFlow's data pipeline)."""
  if name in ("select_dim", "DimSelection"):
    from lr2vq_jax.train import dim_select

    return getattr(dim_select, name)
  raise AttributeError(f"module 'lr2vq_jax' has no attribute {name!r}")


__all__ = [
  "Artifact",
  "ArtifactError",
  "CompressedTensor",
  "DimEstimate",
  "KMeansResult",
  "LayerPlan",
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
  "plan_layers",
  "presets",
  "quantize_model",
  "size_report",
  "to_subvectors",
]
