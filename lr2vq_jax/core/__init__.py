"""Pure jnp/numpy core of LR²VQ: subvectors, low rank, k-means, DKM, codec, rules, accounting.

The `kmeans` and `dkm` *functions* are exported from `lr2vq_jax` (the top level), not here:
re-binding those names in this package would shadow the submodules `lr2vq_jax.core.kmeans` and
`lr2vq_jax.core.dkm` (`from lr2vq_jax.core import dkm` must keep returning the module).
"""

from lr2vq_jax.core.accounting import LayerSize, SizeReport, size_report
from lr2vq_jax.core.compress import CompressedTensor, compress_tensor
from lr2vq_jax.core.dimension import DimEstimate, ModelDimEstimate, estimate_dim, estimate_dim_model
from lr2vq_jax.core.lowrank import lowrank_error, svd_init
from lr2vq_jax.core.rules import LayerPlan, Rule, plan_layers, resolve
from lr2vq_jax.core.subvectors import (
  SubvectorError,
  clamp_k,
  from_subvectors,
  num_subvectors,
  row_length,
  to_subvectors,
)

__all__ = [
  "CompressedTensor",
  "DimEstimate",
  "LayerPlan",
  "LayerSize",
  "ModelDimEstimate",
  "Rule",
  "SizeReport",
  "SubvectorError",
  "clamp_k",
  "compress_tensor",
  "estimate_dim",
  "estimate_dim_model",
  "from_subvectors",
  "lowrank_error",
  "num_subvectors",
  "plan_layers",
  "resolve",
  "row_length",
  "size_report",
  "svd_init",
  "to_subvectors",
]
