"""Differentiable k-means (DKM): soft assignments, a few centroid updates, soft reconstruction.

`dkm` streams the rows in chunks inside `lax.scan` with a `jax.checkpoint`-ed chunk body, so the
backward pass recomputes each chunk's n x k attention instead of storing it: memory grows like
n * d + k * d, not n * k * iters. `dkm_naive` is the straightforward reference (same math).

With `axis_name` and a context mesh (`jax.set_mesh`) whose named axes hold more than one device,
the rows are split over those devices (`jax.shard_map`): each device scans only its own chunks and
the partial sums sum_i A_ij z_i and sum_i A_ij are `psum`-ed, so DKM memory and work per device
fall like 1/devices. Without them (or on one device) the computation is exactly the unsharded one.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import PartitionSpec as P

from lr2vq_jax.core import dkm_top
from lr2vq_jax.core.distances import compute_dtype, sq_distances
from lr2vq_jax.core.scoring import chunk_layout, chunk_rows

# A cluster whose total attention is at or below this keeps its previous centroid.
EMPTY_EPS = 1e-12
# On CPU a chunk's n x k attention (and its recomputation in the backward pass) is fastest when it
# stays in cache: rows per chunk are capped at this many attention entries / k (1 MiB of f32).
# Measured (benchmarks/step_time.py --profile): the ResNet-18 fc layer (n 128k, k 2048) runs ~5x
# faster at 128 rows than at 4096. Accelerators keep `chunk_size` (large tiles feed the MXU/SMs).
CPU_ATTENTION_BUDGET = 1 << 18
MIN_CPU_ROWS = 64


GRADS = ("unrolled", "last")
ITERS = 3  # centroid updates per forward pass
CHUNK_SIZE = 4096  # rows of z per chunk (memory bound)
# The layers' default `top_t` (QuantConfig.dkm_top_t): training attention over each row's 8 nearest
# centroids. On the trained digits layers the mass beyond them is < 1e-8 and accuracy is unchanged
# (benchmarks/results/dkm_fast_accuracy.txt); `dkm` itself defaults to every centroid (0).
TOP_T = 8
# The layers' default `dkm_iters` (recorded.DEFAULTS): one centroid update per training call. With
# the layers' warm start (QuantConfig.dkm_warm) each call continues where the previous one ended,
# and the top-t lists are carried (QuantConfig.dkm_refresh): a quantize step within ~1.1x a float
# step at digits accuracy within seed noise (benchmarks/results/dkm_warm_accuracy.txt). `dkm`
# itself defaults to ITERS updates from the centroids it is given.
LAYER_ITERS = 1


def _check_grad(grad: str) -> None:
  if grad not in GRADS:
    raise ValueError(f"dkm grad={grad!r}: expected one of {GRADS}")


def _detach_iterations(c_in: jax.Array, c_iter: jax.Array) -> jax.Array:
  """grad="last": the refined centroids' value, with the identity as their Jacobian w.r.t. c_in.

  The one-step (Jacobian-free) approximation of implicit differentiation at the fixed point: the
  iterations are not back-propagated through; the loss's gradient w.r.t. the refined centroids is
  passed to the input centroids unchanged (straight-through), and z gets its gradient from the
  final soft assignment only.
  """
  return c_in + lax.stop_gradient(c_iter - c_in)


def chunk_rows_for(chunk_size: int, k: int) -> int:
  """Rows per DKM chunk: `chunk_size`, capped on CPU so that a chunk's attention fits in cache."""
  if chunk_size < 1:
    raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
  if jax.default_backend() != "cpu":
    return chunk_size
  return min(chunk_size, max(MIN_CPU_ROWS, CPU_ATTENTION_BUDGET // k))


def _attention(z: jax.Array, c: jax.Array, tau: jax.Array) -> jax.Array:
  """Row softmax of -||z_i - c_j||^2 / tau in fp32, with the row max subtracted."""
  logits = -sq_distances(z, c) / tau
  logits = logits - lax.stop_gradient(jnp.max(logits, axis=1, keepdims=True))
  e = jnp.exp(logits)
  return e / jnp.sum(e, axis=1, keepdims=True)


def _update(num: jax.Array, den: jax.Array, prev: jax.Array) -> jax.Array:
  """c_j = num_j / den_j, or prev_j where den_j ~ 0 (an empty soft cluster)."""
  ok = den > EMPTY_EPS
  return jnp.where(ok[:, None], num / jnp.where(ok, den, 1.0)[:, None], prev)


def _prepare(z, centroids, tau):
  if z.ndim != 2 or centroids.ndim != 2 or z.shape[1] != centroids.shape[1]:
    raise ValueError(f"dkm expects z (n, d) and centroids (k, d); got {z.shape}, {centroids.shape}")
  dtype = compute_dtype(z, centroids, tau)  # fp32 (fp64 only for fp64 inputs)
  return jnp.asarray(z, dtype), jnp.asarray(centroids, dtype), jnp.asarray(tau, dtype)


@functools.partial(jax.jit, static_argnames=("iters", "grad"))
def dkm_naive(z: jax.Array, centroids: jax.Array, *, tau, iters: int = ITERS, grad: str = GRADS[0]):
  """Reference DKM holding the full n x k attention: returns (z_soft (n, d), centroids (k, d))."""
  _check_grad(grad)
  z32, c, tau32 = _prepare(z, centroids, tau)
  hp = lax.Precision.HIGHEST
  c_in = c
  zi, ti = (lax.stop_gradient(z32), lax.stop_gradient(tau32)) if grad == "last" else (z32, tau32)
  c = lax.stop_gradient(c) if grad == "last" else c
  for _ in range(iters):
    a = _attention(zi, c, ti)
    c = _update(jnp.matmul(a.T, zi, precision=hp), jnp.sum(a, axis=0), c)
  if grad == "last":
    c = _detach_iterations(c_in, c)
  z_soft = jnp.matmul(_attention(z32, c, tau32), c, precision=hp)
  return z_soft.astype(z.dtype), c.astype(centroids.dtype)


@jax.checkpoint
def _chunk_sums(zb, vb, c, tau):
  """Partial sums (sum_i A_ij z_i, sum_i A_ij) over one chunk; padding rows masked by vb."""
  a = _attention(zb, c, tau) * vb[:, None].astype(zb.dtype)
  return jnp.matmul(a.T, zb, precision=lax.Precision.HIGHEST), jnp.sum(a, axis=0)


@jax.checkpoint
def _chunk_soft(zb, c, tau):
  return jnp.matmul(_attention(zb, c, tau), c, precision=lax.Precision.HIGHEST)


def row_axes(axis_name: str | tuple[str, ...] | None) -> tuple[tuple[str, ...], int]:
  """The axes of the context mesh that rows are split over, and how many shards they make.

  ((), 1) when `axis_name` is None, no mesh is set, the mesh lacks an axis, or it has one device.
  """
  if axis_name is None:
    return (), 1
  names = (axis_name,) if isinstance(axis_name, str) else tuple(axis_name)
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or any(a not in mesh.axis_names for a in names):
    return (), 1
  shards = math.prod(mesh.shape[a] for a in names)
  return (names, shards) if shards > 1 else ((), 1)


def _rank(zs, c, top_t: int) -> jax.Array:
  """Each chunked row's top_t nearest centroids (chunks, chunk, top_t), chunk by chunk."""
  return lax.map(lambda zb: dkm_top.nearest(zb, c, top_t), zs)


def _iterate(
  zs,
  validf,
  c,
  tau,
  iters: int,
  axes: tuple[str, ...] = (),
  grad: str = GRADS[0],
  top_t: int = 0,
  nbrs=None,
):
  """DKM over chunked rows zs (chunks, chunk, d); inside `shard_map` over `axes`, the partial
  sums of each shard's rows are `psum`-ed (nothing to sum when `axes` is empty). 0 < top_t < k:
  every attention of this pass is over each row's top_t nearest input centroids (`dkm_top`);
  `nbrs` (chunks, chunk, t): those neighbour lists given instead (no ranking)."""
  k, d = c.shape
  c_in = c
  zi, ti = (lax.stop_gradient(zs), lax.stop_gradient(tau)) if grad == "last" else (zs, tau)
  c = lax.stop_gradient(c) if grad == "last" else c
  if nbrs is None and 0 < top_t < k:
    nbrs = _rank(zs, c_in, top_t)  # (chunks, chunk, t)
  for _ in range(iters):

    def body(carry, inp, c=c):
      num, den = carry
      if nbrs is None:
        pn, pd = _chunk_sums(inp[0], inp[1], c, ti)
      else:
        pn, pd = dkm_top.chunk_sums(inp[0], inp[1], inp[2], c, ti)
      return (num + pn, den + pd), None

    init = (jnp.zeros((k, d), c.dtype), jnp.zeros((k,), c.dtype))
    if axes:  # the carry holds per-shard (varying) partial sums
      init = lax.pcast(init, axes, to="varying")
    (num, den), _ = lax.scan(body, init, (zi, validf) + (() if nbrs is None else (nbrs,)))
    if axes:
      num, den = lax.psum((num, den), axes)
    c = _update(num, den, c)
  if grad == "last":
    c = _detach_iterations(c_in, c)

  def soft(_, inp, c=c):
    if nbrs is None:
      return None, _chunk_soft(inp[0], c, tau)
    return None, dkm_top.chunk_soft(inp[0], inp[1], c, tau)

  _, z_soft = lax.scan(soft, None, (zs,) if nbrs is None else (zs, nbrs))
  return z_soft.reshape(-1, d), c


def _pad_rows(x: jax.Array, shards: int) -> tuple[jax.Array, int]:
  """(x with zero rows appended to a multiple of `shards`, rows per shard)."""
  local = -(-x.shape[0] // shards)
  return jnp.pad(x, ((0, local * shards - x.shape[0]), (0, 0))), local


def _dkm_sharded(
  z, c, tau, iters, chunk_size, axes: tuple[str, ...], shards: int, grad, top_t, neighbors
):
  """Rows split over `axes` (padded to a multiple of `shards`); sums over rows are psums."""
  n = z.shape[0]
  zp, local = _pad_rows(z, shards)
  valid = (jnp.arange(local * shards) < n).astype(z.dtype)
  nb = None if neighbors is None else _pad_rows(neighbors, shards)[0]
  num, chunk = chunk_layout(local, chunk_size)

  def per_shard(zl, vl, c, tau, nbl):
    zs, _ = chunk_rows(zl, chunk_size)
    vs = jnp.pad(vl, (0, num * chunk - local)).reshape(num, chunk)
    nbs = None if nbl is None else chunk_rows(nbl, chunk_size)[0]
    z_soft, c = _iterate(zs, vs, c, tau, iters, axes, grad, top_t, nbs)
    return z_soft[:local], c

  rows = P(axes, None)
  z_soft, c = jax.shard_map(
    per_shard,
    in_specs=(rows, P(axes), P(), P(), P() if nb is None else rows),
    out_specs=(rows, P()),
  )(zp, valid, c, tau, nb)
  return z_soft[:n], c


@functools.partial(jax.jit, static_argnames=("iters", "chunk_size", "axis_name", "grad", "top_t"))
def dkm(
  z: jax.Array,
  centroids: jax.Array,
  *,
  tau,
  iters: int = ITERS,
  chunk_size: int = CHUNK_SIZE,
  axis_name: str | tuple[str, ...] | None = None,
  grad: str = GRADS[0],
  top_t: int = 0,
  neighbors: jax.Array | None = None,
):
  """Memory-bounded DKM, equal to `dkm_naive` in value and gradient (z, centroids, tau).

  for t < iters: A = softmax(-D(z, c)/tau); c = A^T z / A^T 1 (kept where A^T 1 ~ 0);
  then z_soft = softmax(-D(z, c)/tau) @ c. Returns (z_soft (n, d), centroids (k, d)) in the input
  dtypes; all math is fp32 (fp64 for fp64 inputs). `axis_name`: mesh axes to split the rows over
  (see the module docstring); chunks are then per device, `chunk_size` rows at most (fewer on CPU
  at large k, see `chunk_rows_for`: chunking changes the summation order only).
  `grad`: "unrolled" back-propagates through every iteration (exact); "last" only through the
  final soft assignment, with the one-step approximation of `_detach_iterations` (same values up
  to one rounding; the backward pass no longer recomputes the iterations).
  `top_t` (0 < top_t < k): each row's attention only over its top_t nearest input centroids,
  chosen once per call (`dkm_top`); 0 or >= k: every centroid (the math above, exactly).
  `neighbors` (n, t) int32: each row's candidate centroids given instead of ranked here (e.g.
  `neighbors(...)` of earlier centroids, carried between steps): no n x k work at all; with the
  lists this call would rank, the result equals `top_t=t`.
  """
  _check_grad(grad)
  if top_t < 0:
    raise ValueError(f"dkm top_t={top_t}: must be >= 0 (0: all centroids)")
  z32, c, tau32 = _prepare(z, centroids, tau)
  nb = _check_neighbors(neighbors, z32.shape[0], c.shape[0])
  chunk_size = chunk_rows_for(chunk_size, c.shape[0])
  axes, shards = row_axes(axis_name)
  if shards > 1:
    z_soft, c = _dkm_sharded(z32, c, tau32, iters, chunk_size, axes, shards, grad, top_t, nb)
  else:
    zs, valid = chunk_rows(z32, chunk_size)
    nbs = None if nb is None else chunk_rows(nb, chunk_size)[0]
    vf = valid.astype(z32.dtype)
    z_soft, c = _iterate(zs, vf, c, tau32, iters, grad=grad, top_t=top_t, nbrs=nbs)
    z_soft = z_soft[: z32.shape[0]]
  return z_soft.astype(z.dtype), c.astype(centroids.dtype)


def _check_neighbors(neighbors, n: int, k: int) -> jax.Array | None:
  if neighbors is None:
    return None
  if neighbors.ndim != 2 or neighbors.shape[0] != n or not 1 <= neighbors.shape[1] <= k:
    raise ValueError(f"dkm neighbors: expected (n={n}, t <= k={k}); got {neighbors.shape}")
  if not jnp.issubdtype(neighbors.dtype, jnp.integer):
    raise ValueError(f"dkm neighbors: expected integer indices; got {neighbors.dtype}")
  return jnp.asarray(neighbors, jnp.int32)


@functools.partial(jax.jit, static_argnames=("top_t", "chunk_size", "axis_name"))
def neighbors(
  z: jax.Array,
  centroids: jax.Array,
  *,
  top_t: int,
  chunk_size: int = CHUNK_SIZE,
  axis_name: str | tuple[str, ...] | None = None,
):
  """(n, top_t) int32: each row's top_t nearest centroids, as `dkm(top_t=...)` ranks them.

  What `dkm(neighbors=...)` takes: computed once and reused over several steps, the n x k ranking
  (most of top-t DKM's time on CPU) is paid once per refresh instead of once per call.
  `axis_name`: the rows are ranked where they live, split over those mesh axes (as in `dkm`).
  """
  z32, c, _ = _prepare(z, centroids, 1.0)
  if not 0 < top_t <= c.shape[0]:
    raise ValueError(f"neighbors top_t={top_t}: expected 1..k={c.shape[0]}")
  chunk_size = chunk_rows_for(chunk_size, c.shape[0])

  def rank(zl, c):
    zs, _ = chunk_rows(zl, chunk_size)
    return _rank(zs, c, top_t).reshape(-1, top_t)[: zl.shape[0]]

  n = z32.shape[0]
  axes, shards = row_axes(axis_name)
  if shards == 1:
    return rank(z32, c)
  rows = P(axes, None)
  return jax.shard_map(rank, in_specs=(rows, P()), out_specs=rows)(_pad_rows(z32, shards)[0], c)[:n]
