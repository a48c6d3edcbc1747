"""A layer's kernel as a function of its LR²VQ variables, for every stage of the pipeline.

The variables live in the calling layer's own scope (big_vision `StdConv` style: the kernel is
computed from other params), so a quantized layer has the same path as the float layer it replaces.

  stage      params                         'quant' collection   kernel
  float      kernel                         -                     kernel
  lowrank    z (n,d̃), projection (d̃,m)      shapes                Z·P
  quantize   z, projection, codebook (k,d̃)  shapes, tau           train: DKM(Z)·P; eval: hard codes
  frozen     codebook, projection           shapes, codes (n,)    C[a]·P

"shapes" are `shape` (the kernel's) and `view_shape` (what is cut into subvectors), kept so that
an export or a later stage needs nothing but the variables.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from lr2vq_jax.core import codec, lowrank
from lr2vq_jax.core import dkm as dkm_lib
from lr2vq_jax.core.rules import LayerPlan, Rule, plan_layer

STAGES = ("float", "lowrank", "quantize", "frozen")
STORES = ("codebook", "factored")
PROJECTIONS = ("learned", "orthonormal")
QUANT = "quant"  # non-trainable collection: kernel shape, DKM temperature, frozen codes
LOSSES = "losses"  # sown auxiliary losses (commitment), summed into the task loss


@dataclasses.dataclass(frozen=True)
class QuantConfig:
  """Stage-independent knobs of the quantized layers (one per model, hashable)."""

  tau_alpha: float = 0.03  # τ = α · mean squared distance to the nearest centroid at init
  dkm_iters: int = 3  # centroid updates per training forward pass
  # DKM's backward pass: "unrolled" through every iteration, or "last": the one-step gradient at
  # the refined centroids (core/dkm.py; same forward values, the iterations are not recomputed).
  dkm_grad: str = "unrolled"
  commitment: float = 0.0  # β of β·mean‖z − sg(C[a])‖²
  store: str = "codebook"  # export as C·P (k×m fp16) or as C (k×d̃) + P (d̃×m) fp16
  # "learned": P is any d̃×m matrix; "orthonormal": the layer uses P's Gram-Schmidt (QR) factor,
  # rows orthonormal (a Stiefel parametrization), so Z carries all the scale.
  projection: str = "learned"
  chunk_size: int = 4096  # rows of Z per DKM/assignment chunk (memory bound)
  # Mesh axis that training-time DKM splits the rows of Z over when a mesh is set (`jax.set_mesh`,
  # see train/partitioning.py); None or a one-device axis: unsharded.
  shard_axis: str | None = None

  def __post_init__(self):
    if self.store not in STORES:
      raise ValueError(f"QuantConfig.store={self.store!r}: expected one of {STORES}")
    if self.projection not in PROJECTIONS:
      raise ValueError(f"QuantConfig.projection={self.projection!r}: expected one of {PROJECTIONS}")
    if self.dkm_grad not in dkm_lib.GRADS:
      raise ValueError(f"QuantConfig.dkm_grad={self.dkm_grad!r}: expected one of {dkm_lib.GRADS}")
    if self.dkm_iters < 0:
      raise ValueError(f"QuantConfig.dkm_iters={self.dkm_iters}: must be >= 0")
    if self.tau_alpha <= 0:
      raise ValueError(f"QuantConfig.tau_alpha={self.tau_alpha}: must be > 0")


def effective_projection(p: jax.Array, mode: str) -> jax.Array:
  """The P a layer multiplies by (float32): the param itself, or its rows orthonormalised.

  "orthonormal" is Gram-Schmidt on the rows (= the Q of QR with diag(R) > 0): unique and
  differentiable for full-rank P, and an already orthonormal P (the SVD init) is left unchanged.
  Written with plain element-wise ops and small reductions rather than a LAPACK QR, whose rounding
  can depend on the thread count, so that runs on different meshes and process layouts agree.
  """
  p = p.astype(jnp.float32)
  if mode == "learned":
    return p
  rows: list[jax.Array] = []
  for i in range(p.shape[0]):
    v = p[i]
    for q in rows:
      v = v - jnp.sum(q * v) * q  # modified Gram-Schmidt: project out the finished rows
    rows.append(v / jnp.sqrt(jnp.sum(v * v)))  # exact for unit rows: P = I stays I
  return jnp.stack(rows)


def fp16_round(x: jax.Array) -> jax.Array:
  """What an fp16 export stores, back in fp32: evaluation uses exactly the shipped values."""
  return x.astype(jnp.float16).astype(jnp.float32)


def refined_codebook(z, codebook, tau, *, iters: int, chunk_size: int) -> jax.Array:
  """DKM-refined centroids from the current Z: the centroids training ends its forward pass with."""
  _, centroids = dkm_lib.dkm(
    jax.lax.stop_gradient(z).astype(jnp.float32),
    jax.lax.stop_gradient(codebook).astype(jnp.float32),
    tau=jax.lax.stop_gradient(tau),
    iters=iters,
    chunk_size=chunk_size,
  )
  return centroids


def hard_tables(z, codebook, projection, tau, config: QuantConfig):
  """Hard codes and the fp16-rounded tables that evaluation and export share.

  Returns (codes, tables) where tables is (C·P,) for store="codebook" or (C, P) for "factored".
  """
  centroids = refined_codebook(
    z, codebook, tau, iters=config.dkm_iters, chunk_size=config.chunk_size
  )
  codes = codec.encode(jax.lax.stop_gradient(z).astype(jnp.float32), centroids)
  projection = effective_projection(projection, config.projection)
  return codes, frozen_tables(centroids, projection, config.store)


def frozen_tables(codebook, projection, store: str):
  """fp16-rounded decode tables of a frozen layer, in the layout the export stores."""
  codebook = codebook.astype(jnp.float32)
  projection = projection.astype(jnp.float32)
  if store == "codebook":
    return (fp16_round(codebook @ projection),)
  return (fp16_round(codebook), fp16_round(projection))


def decode_rows(codes, tables) -> jax.Array:
  """X̂ = (C·P)[a] or C[a]·P from the tables of `frozen_tables`."""
  if len(tables) == 1:
    return jnp.take(tables[0], codes, axis=0)
  return jnp.take(tables[0], codes, axis=0) @ tables[1]


def temperature(z, codebook, alpha: float, chunk_size: int = 65536) -> jax.Array:
  """τ = α · mean squared distance from each row of Z to its nearest centroid."""
  z = z.astype(jnp.float32)
  codebook = codebook.astype(jnp.float32)
  codes = codec.encode(z, codebook, chunk_size=chunk_size)
  err = jnp.sum((z - codebook[codes]) ** 2, axis=-1)
  return jnp.maximum(alpha * jnp.mean(err), 1e-12)


def _init_rows(mdl, init_fn: Callable, geo: LayerPlan, param_dtype) -> jax.Array:
  kernel = init_fn(mdl.make_rng("params"), geo.shape, param_dtype)
  return geo.to_rows(jnp.asarray(kernel, jnp.float32))


def quantized_kernel(
  mdl: Any,
  *,
  init_fn: Callable,
  shape: Sequence[int],
  param_dtype: Any,
  rule: Rule,
  stage: str,
  train: bool,
  config: QuantConfig,
  n_out_dims: int | None,
) -> jax.Array:
  """Creates/reads the stage's variables in `mdl`'s scope and returns the kernel (param_dtype)."""
  if stage not in STAGES:
    raise ValueError(f"stage={stage!r}: expected one of {STAGES}")
  geo = plan_layer("/".join(map(str, mdl.path)), shape, rule, n_out_dims=n_out_dims)
  mdl.variable(QUANT, "shape", lambda: jnp.asarray(geo.shape, jnp.int32))
  mdl.variable(QUANT, "view_shape", lambda: jnp.asarray(geo.view_shape, jnp.int32))
  initializing = mdl.is_initializing()
  rows0 = _init_rows(mdl, init_fn, geo, param_dtype) if initializing else None
  z0 = p0 = None
  if initializing and stage != "frozen":
    z0, p0 = lowrank.svd_init(rows0, geo.d)

  if stage == "lowrank":
    z = mdl.param("z", _given(z0, (geo.n, geo.d), param_dtype))
    p = mdl.param("projection", _given(p0, (geo.d, geo.m), param_dtype))
    p = effective_projection(p, config.projection)
    return geo.to_kernel(z.astype(jnp.float32) @ p).astype(param_dtype)

  if stage == "quantize":
    z = mdl.param("z", _given(z0, (geo.n, geo.d), param_dtype))
    p = mdl.param("projection", _given(p0, (geo.d, geo.m), param_dtype))
    c0 = _random_rows(mdl, z0, geo.k) if initializing else None
    c = mdl.param("codebook", _given(c0, (geo.k, geo.d), param_dtype))
    tau = mdl.variable(QUANT, "tau", lambda: temperature(z, c, config.tau_alpha)).value
    if not train:
      codes, tables = hard_tables(z, c, p, tau, config)
      return geo.to_kernel(decode_rows(codes, tables)).astype(param_dtype)
    z32 = z.astype(jnp.float32)
    z_soft, centroids = dkm_lib.dkm(
      z32,
      c.astype(jnp.float32),
      tau=jax.lax.stop_gradient(tau),
      iters=config.dkm_iters,
      chunk_size=config.chunk_size,
      axis_name=config.shard_axis,
      grad=config.dkm_grad,
    )
    if config.commitment > 0:
      target = jax.lax.stop_gradient(centroids)
      codes = codec.encode(jax.lax.stop_gradient(z32), target)
      err = jnp.mean(jnp.sum((z32 - target[codes]) ** 2, axis=-1))
      mdl.sow(LOSSES, "commitment", config.commitment * err)
    p = effective_projection(p, config.projection)
    return geo.to_kernel(z_soft @ p).astype(param_dtype)

  if stage == "frozen":
    codes = mdl.variable(QUANT, "codes", lambda: jnp.zeros((geo.n,), jnp.int32)).value
    c0 = None
    if initializing:
      z0, p0 = (rows0, jnp.eye(geo.m)) if geo.d == geo.m else lowrank.svd_init(rows0, geo.d)
      c0 = _random_rows(mdl, z0, geo.k)
    c = mdl.param("codebook", _given(c0, (geo.k, geo.d), param_dtype))
    p = mdl.param("projection", _given(p0, (geo.d, geo.m), param_dtype))
    p = effective_projection(p, config.projection)
    if train:
      tables = (c.astype(jnp.float32), p)
    else:
      tables = frozen_tables(c, p, config.store)
    return geo.to_kernel(decode_rows(codes, tables)).astype(param_dtype)

  raise ValueError(f"stage={stage!r} has no quantized kernel")  # "float" never gets here


def _given(value, shape, dtype) -> Callable:
  """A param initializer returning `value` (computed once for several params at init time).

  Flax also calls initializers abstractly in `apply` to check shapes, where `value` is None.
  """
  return lambda *_: jnp.zeros(shape, dtype) if value is None else jnp.asarray(value, dtype)


def _random_rows(mdl, x: jax.Array, k: int) -> jax.Array:
  """k distinct rows of x: a cheap codebook for `init` (real codebooks come from convert)."""
  idx = jax.random.choice(mdl.make_rng("params"), x.shape[0], (k,), replace=False)
  return x[idx]
