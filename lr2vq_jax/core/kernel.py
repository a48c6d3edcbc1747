"""A quantized layer's kernel rows as a function of its LR²VQ arrays: the math both front ends run.

  mode       arrays                          recorded state        rows X̂ (n, m)
  lowrank    z (n,d̃), projection (d̃,m)       projection mode       Z·P
  quantize   z, projection, codebook (k,d̃)   + tau, store, iters   train: DKM(Z)·P; eval: hard codes
  frozen     codebook, projection            + codes (n,)          C[a]·P

Framework-neutral (jnp only): the linen layers (`lr2vq_jax.nn`) and the NNX kernels
(`lr2vq_jax.nnx`) only fetch the arrays from their variables and reshape the rows to a kernel.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from lr2vq_jax.core import codec, recorded
from lr2vq_jax.core import dkm as dkm_lib
from lr2vq_jax.core import kmeans as kmeans_lib
from lr2vq_jax.core.mode import MODES, QUANTIZED, Mode, as_mode
from lr2vq_jax.core.recorded import DEFAULTS, PROJECTIONS, STORES

STAGES = MODES  # the former name of the layer modes, kept importable
QUANT = "quant"  # non-trainable state: kernel shape, recorded settings, DKM temperature, codes
LOSSES = "losses"  # sown auxiliary losses (commitment), summed into the task loss
# State that training DKM carries between calls: with `QuantConfig.dkm_refresh` > 1 each row's
# candidate centroids ("neighbors", (n, t) int32) and the layer's training-call counter ("count");
# with `QuantConfig.dkm_warm` the warm start ("offset", (k, d̃) float32: refined − codebook).
DKM_LISTS = "dkm_lists"


@dataclasses.dataclass(frozen=True)
class QuantConfig:
  """Mode-independent knobs of the quantized layers (one per model, hashable).

  `dkm_iters`, `store` and `projection` are recorded in the variables when they are made (init
  or a conversion); None (the default) means "as the variables say" (`DEFAULTS` where they say
  nothing), a set value must agree with them: `SettingError` in conversions, export and calls
  outside `jit` (under `jit` the recorded value is read as a traced scalar and always wins).
  """

  tau_alpha: float = 0.03  # τ = α · mean squared distance to the nearest centroid at init
  dkm_iters: int | None = None  # centroid updates per forward pass (default 1)
  # DKM's backward pass: "unrolled" through every iteration, or "last": the one-step gradient at
  # the refined centroids (core/dkm.py; same forward values, the iterations are not recomputed).
  dkm_grad: str = dkm_lib.GRADS[0]
  # Training DKM's attention over each row's t nearest centroids only (core/dkm_top.py); 0: all k.
  dkm_top_t: int = dkm_lib.TOP_T
  # Top-t DKM re-ranks each row's t nearest centroids every `dkm_refresh` training calls and
  # reuses the lists in between (kept in the `DKM_LISTS` collection when the caller makes it
  # mutable, as the train step does); 1: rank on every call. No effect at dkm_top_t = 0.
  dkm_refresh: int = 16
  # Warm-started DKM: each training call starts its updates from codebook + the refinement offset
  # the previous call ended with (carried in `DKM_LISTS`, see `warm_start`), so the iterations
  # accumulate over steps and one update per call (dkm_iters=1) keeps up; False: from the codebook.
  dkm_warm: bool = True
  commitment: float = 0.0  # β of β·mean‖z − sg(C[a])‖²
  # fp16 tables evaluated and exported: C·P (k×m, "codebook", default) or C (k×d̃) + P ("factored")
  store: str | None = None
  # "learned" (default): P is any d̃×m matrix; "orthonormal": the layer uses P's Gram-Schmidt (QR)
  # factor, rows orthonormal (a Stiefel parametrization), so Z carries all the scale.
  projection: str | None = None
  chunk_size: int = dkm_lib.CHUNK_SIZE  # rows of Z per DKM/assignment chunk (memory bound)
  # Mesh axis that training-time DKM splits the rows of Z over when a mesh is set (`jax.set_mesh`,
  # see train/partitioning.py); None or a one-device axis: unsharded.
  shard_axis: str | None = None

  def __post_init__(self):
    if self.store not in (None, *STORES):
      raise ValueError(f"QuantConfig.store={self.store!r}: expected one of {STORES}")
    if self.projection not in (None, *PROJECTIONS):
      raise ValueError(f"QuantConfig.projection={self.projection!r}: expected one of {PROJECTIONS}")
    if self.dkm_grad not in dkm_lib.GRADS:
      raise ValueError(f"QuantConfig.dkm_grad={self.dkm_grad!r}: expected one of {dkm_lib.GRADS}")
    if self.dkm_iters is not None and self.dkm_iters < 0:
      raise ValueError(f"QuantConfig.dkm_iters={self.dkm_iters}: must be >= 0")
    if self.dkm_top_t < 0:
      raise ValueError(f"QuantConfig.dkm_top_t={self.dkm_top_t}: must be >= 0 (0: all centroids)")
    if self.dkm_refresh < 1:
      raise ValueError(f"QuantConfig.dkm_refresh={self.dkm_refresh}: must be >= 1 (1: every call)")
    if self.tau_alpha <= 0:
      raise ValueError(f"QuantConfig.tau_alpha={self.tau_alpha}: must be > 0")

  def value(self, name: str):
    """Setting `name` as given, or its default when unset (for making new variables)."""
    given = getattr(self, name)
    return DEFAULTS[name] if given is None else given

  def carries_lists(self, k: int) -> bool:
    """Whether a quantize layer with k centroids keeps its top-t lists between training calls."""
    return self.dkm_refresh > 1 and 0 < self.dkm_top_t < k

  def settings(self, mode: Mode) -> dict:
    """The settings variables in `mode` record, as this config makes them."""
    return {name: self.value(name) for name in recorded.MODE_SETTINGS[mode]}


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
  return _orthonormal_rows(p)


@jax.jit
def _orthonormal_rows(p: jax.Array) -> jax.Array:
  """Modified Gram-Schmidt on the rows of p (float32). Jitted so that the d(d-1)/2 unrolled
  projections are traced, linearized and transposed once per shape of P, not once per layer
  (ResNet-18's layers share a few shapes); XLA inlines the call, so the math is unchanged."""
  rows: list[jax.Array] = []
  for i in range(p.shape[0]):
    v = p[i]
    for q in rows:
      v = v - jnp.sum(q * v) * q  # modified Gram-Schmidt: project out the finished rows
    rows.append(v / jnp.sqrt(jnp.sum(v * v)))  # exact for unit rows: P = I stays I
  return jnp.stack(rows)


def projection_as(p: jax.Array, mode) -> jax.Array:
  """`effective_projection` for a mode given as a name or a recorded (maybe traced) index."""
  if isinstance(mode, str):
    return effective_projection(p, mode)
  if recorded.is_concrete(mode):
    return effective_projection(p, recorded.decode("projection", mode))
  branches = [lambda p, name=name: effective_projection(p, name) for name in PROJECTIONS]
  return jax.lax.switch(mode, branches, p)


def fp16_round(x: jax.Array) -> jax.Array:
  """What an fp16 export stores, back in fp32: evaluation uses exactly the shipped values.

  NumPy stays NumPy (an export of host variables); a jax array takes one jitted program per
  shape when called eagerly, not two."""
  if isinstance(x, np.ndarray):
    return x.astype(np.float16).astype(np.float32)
  return _fp16_round(x)


@jax.jit
def _fp16_round(x: jax.Array) -> jax.Array:
  return x.astype(jnp.float16).astype(jnp.float32)


def warm_start(codebook: jax.Array, offset: jax.Array | None) -> jax.Array:
  """DKM's starting centroids (float32): the codebook param, moved by a carried warm `offset`.

  The warm state is the offset `refined − codebook` of the previous training call, not the refined
  centroids themselves: starting at codebook + sg(offset) keeps the previous call's iterations
  (so one update per call continues where the last one stopped, the DKM paper's warm start) and
  also follows the optimizer's step on the codebook; the codebook's gradient path is the cold
  one (d start / d codebook = I). Evaluation, freezing and export start from the same point, so
  the codes they ship are those training converged to. None: the codebook (a cold start).
  """
  c = codebook.astype(jnp.float32)
  return c if offset is None else c + jax.lax.stop_gradient(offset.astype(jnp.float32))


@functools.partial(jax.jit, static_argnames=("chunk_size", "axis_name"))
def refined_codebook(z, codebook, tau, *, iters, chunk_size: int, axis_name=None) -> jax.Array:
  """DKM-refined centroids from the current Z: the centroids training ends its forward pass with.

  `iters` may be a recorded (traced) count: the updates run in a `while_loop` for every caller,
  so evaluation under `jit` and an eager export compute the same codes (jitted: an eager caller,
  export or a conversion, traces and compiles it once per shape, not once per layer). `axis_name`:
  mesh axes to split the rows over under a context mesh (`dkm.dkm`'s, as in training).
  """
  z = jax.lax.stop_gradient(z).astype(jnp.float32)
  tau = jax.lax.stop_gradient(tau)

  def update(carry):
    i, c = carry
    _, c = dkm_lib.dkm(z, c, tau=tau, iters=1, chunk_size=chunk_size, axis_name=axis_name)
    return i + 1, c

  c0 = jax.lax.stop_gradient(codebook).astype(jnp.float32)
  iters = jnp.asarray(iters, jnp.int32)
  _, centroids = jax.lax.while_loop(lambda carry: carry[0] < iters, update, (iters * 0, c0))
  return centroids


def hard_codes(z, codebook, projection, tau, *, settings: dict, chunk_size: int):
  """(codes, refined C, effective P): what evaluation and export decode, from the same function.

  `settings` holds projection and dkm_iters (names/counts, or recorded, maybe traced, scalars).
  """
  centroids = refined_codebook(z, codebook, tau, iters=settings["dkm_iters"], chunk_size=chunk_size)
  codes = codec.encode(jax.lax.stop_gradient(z).astype(jnp.float32), centroids)
  return codes, centroids, projection_as(projection, settings["projection"])


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


def stored_rows(codes, codebook, projection, store) -> jax.Array:
  """Rows decoded from the fp16 tables of `store` (a name or a recorded, maybe traced, index)."""
  if isinstance(store, str) or recorded.is_concrete(store):
    name = store if isinstance(store, str) else recorded.decode("store", store)
    return decode_rows(codes, frozen_tables(codebook, projection, name))
  branches = [
    lambda c, p, name=name: decode_rows(codes, frozen_tables(c, p, name)) for name in STORES
  ]
  return jax.lax.switch(store, branches, codebook, projection)


def random_rows(key: jax.Array, x: jax.Array, k: int) -> jax.Array:
  """k distinct rows of x (n, d), a uniformly random subset: the codebook a layer's `init` starts
  from (trained codebooks come from the conversions' k-means). The indices of the k largest of n
  uniform draws: one top_k, where `jax.random.choice(replace=False)` sorts all n (slower to compile
  and to run)."""
  _, idx = jax.lax.top_k(jax.random.uniform(key, (x.shape[0],)), k)
  return x[idx]


def temperature(z, codebook, alpha: float, chunk_size: int = kmeans_lib.CHUNK_SIZE) -> jax.Array:
  """τ = α · mean squared distance from each row of Z to its nearest centroid.

  Called eagerly by every conversion: the element-wise part and the final scaling are one jitted
  program each (exact, whatever XLA fuses), while the two reductions stay programs of their own,
  as when each op ran eagerly, so τ keeps its bits (a reduction fused with its operand's
  element-wise producer may sum in another order)."""
  z = z.astype(jnp.float32)
  codebook = codebook.astype(jnp.float32)
  codes = codec.encode(z, codebook, chunk_size=chunk_size)
  err = jnp.sum(_squared_errors(z, codebook, codes), axis=-1)
  return _scaled_temperature(jnp.mean(err), alpha)


@jax.jit
def _squared_errors(z: jax.Array, codebook: jax.Array, codes: jax.Array) -> jax.Array:
  """(z − C[a])² element-wise: one program, not a dozen eager gather/broadcast/arithmetic ops."""
  return (z - jnp.take(codebook, codes, axis=0)) ** 2


@functools.partial(jax.jit, static_argnames=("alpha",))
def _scaled_temperature(mean_err: jax.Array, alpha: float) -> jax.Array:
  return jnp.maximum(alpha * mean_err, 1e-12)


def train_iters(recorded_iters, config: QuantConfig) -> int:
  """Soft DKM's static iteration count: the explicit setting, else the recorded one when Python
  can read it, else the default."""
  if config.dkm_iters is not None:
    return config.dkm_iters
  if isinstance(recorded_iters, int):
    return recorded_iters
  return DEFAULTS["dkm_iters"]


def carried_neighbors(arrays, lists, count, config: QuantConfig):
  """(lists, count + 1): each row's `dkm_top_t` nearest centroids re-ranked against DKM's
  starting centroids (`warm_start` of the codebook and a carried offset) when
  count % dkm_refresh == 0 (as top-t DKM ranks them), else the carried `lists`."""
  z = jax.lax.stop_gradient(arrays["z"]).astype(jnp.float32)
  c = jax.lax.stop_gradient(warm_start(arrays["codebook"], arrays.get("offset")))

  def rank():
    return dkm_lib.neighbors(
      z, c, top_t=config.dkm_top_t, chunk_size=config.chunk_size, axis_name=config.shard_axis
    )

  fresh = jax.lax.cond(count % config.dkm_refresh == 0, rank, lambda: lists.astype(jnp.int32))
  return fresh, count + 1


def _lowrank_rows(arrays, settings, config, *, train: bool):
  """Z·P."""
  del config, train
  p = projection_as(arrays["projection"], settings["projection"])
  return arrays["z"].astype(jnp.float32) @ p, None


def _quantize_rows(arrays, settings, config: QuantConfig, *, train: bool):
  """Training: soft DKM(Z)·P and β·commitment; evaluation: the hard codes an export ships."""
  if train:
    return quantize_train_rows(arrays, settings, config)[:2]
  c = warm_start(arrays["codebook"], arrays.get("offset"))
  codes, c, p = hard_codes(
    arrays["z"], c, arrays["projection"], arrays["tau"], settings=settings,
    chunk_size=config.chunk_size,
  )  # fmt: skip
  return stored_rows(codes, c, p, settings["store"]), None


def quantize_train_rows(arrays, settings, config: QuantConfig):
  """(soft DKM(Z)·P, β·commitment or None, next warm offset) of a quantize-mode training call.

  DKM starts from `warm_start(codebook, arrays["offset"])` and attends over each row's carried
  `neighbors` when given (`carried_neighbors`: no ranking); the next offset is
  sg(refined − codebook), what a warm-started layer carries to its next call.
  """
  z, p, tau = arrays["z"], arrays["projection"], arrays["tau"]
  z32 = z.astype(jnp.float32)
  z_soft, centroids = dkm_lib.dkm(
    z32,
    warm_start(arrays["codebook"], arrays.get("offset")),
    tau=jax.lax.stop_gradient(tau),
    iters=train_iters(settings["dkm_iters"], config),
    chunk_size=config.chunk_size,
    axis_name=config.shard_axis,
    grad=config.dkm_grad,
    top_t=config.dkm_top_t,
    neighbors=arrays.get("neighbors"),  # carried lists (`carried_neighbors`): no ranking
  )
  loss = None
  if config.commitment > 0:
    target = jax.lax.stop_gradient(centroids)
    codes = codec.encode(jax.lax.stop_gradient(z32), target)
    loss = config.commitment * jnp.mean(jnp.sum((z32 - target[codes]) ** 2, axis=-1))
  offset = jax.lax.stop_gradient(centroids - arrays["codebook"].astype(jnp.float32))
  return z_soft @ projection_as(p, settings["projection"]), loss, offset


def _frozen_rows(arrays, settings, config, *, train: bool):
  """C[a]·P: in float32 for training (fine-tuning C and P), from the fp16 tables for evaluation."""
  del config
  codes, c = arrays["codes"], arrays["codebook"]
  p = projection_as(arrays["projection"], settings["projection"])
  if train:
    return decode_rows(codes, (c.astype(jnp.float32), p)), None
  return stored_rows(codes, c, p, settings["store"]), None


# The rows of each quantized mode: (arrays, settings, config, *, train) -> (rows, loss or None).
MODE_ROWS = {Mode.LOWRANK: _lowrank_rows, Mode.QUANTIZE: _quantize_rows, Mode.FROZEN: _frozen_rows}


def mode_rows(
  mode: Mode | str,
  arrays: Mapping[str, jax.Array],
  settings: Mapping,
  config: QuantConfig,
  *,
  train: bool,
) -> tuple[jax.Array, jax.Array | None]:
  """(rows X̂ (n, m) float32, β·commitment or None) of one layer in `mode`.

  `arrays` holds the mode's z / projection / codebook / tau / codes (and in training, optionally
  each row's carried top-t `neighbors`); `settings` the recorded
  projection / store / dkm_iters (names, or recorded scalars, maybe traced). Training (`train`)
  runs soft DKM in the quantize mode; evaluation the hard codes export ships.
  """
  rows_fn = MODE_ROWS[as_mode(mode, QUANTIZED)]
  return rows_fn(arrays, settings, config, train=train)
