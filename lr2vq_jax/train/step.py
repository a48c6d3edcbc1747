"""Train state, optimizer and the jitted train / eval steps of one pipeline stage.

Loss = task + ½·wd·Σ‖W‖² (params with ndim > 1) + every term sown into `losses` (β·commitment of
the quantized layers). task = cross-entropy, or with distillation weight w and temperature T
(BGD/PQF style, teacher = the float model's logits in `batch["teacher_logits"]`):
(1 − w)·CE + w·T²·KL(softmax(t/T) ‖ softmax(s/T)). `tau_final_factor` f anneals every layer's DKM
temperature geometrically, τ_t = τ_0·f^(t/T_steps). Evaluation runs the hard-code path.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import traverse_util

from lr2vq_jax.nn import DKM_LISTS, LOSSES, QUANT, sum_losses


@flax.struct.dataclass
class TrainState:
  """Everything a stage's training needs to resume; a plain pytree for jit and Orbax."""

  step: jax.Array
  params: Any
  # non-trainable collections: batch_stats, quant (shapes, τ, frozen codes), dkm_lists (DKM's
  # carried state: top-t candidate lists with quant.dkm_refresh > 1, warm offsets with dkm_warm)
  model_state: Any
  opt_state: Any
  rng: jax.Array

  def variables(self) -> dict:
    return {"params": self.params, **self.model_state}


OPTIMIZERS = ("adam", "sgd")  # what `create_optimizer` builds
SCHEDULES = ("cosine", "constant")  # what `learning_rate_schedule` builds
# The optimizer fields of a stage section and their defaults (`recipes.stage` adds the rest).
OPTIMIZER_DEFAULTS = dict(
  optimizer=OPTIMIZERS[0],
  schedule=SCHEDULES[0],
  warmup_steps=0,
  final_lr_factor=0.0,
  weight_decay=0.0,
  weight_decay_exclude=("codebook",),
  freeze=(),
  grad_clip=0.0,
)


def learning_rate_schedule(cfg: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
  """Linear warmup then `cfg.schedule` ("cosine" to cfg.lr·cfg.final_lr_factor, or "constant")."""
  warmup = int(cfg.get("warmup_steps", 0))
  if cfg.schedule == "cosine":
    main = optax.cosine_decay_schedule(
      cfg.lr, max(1, num_steps - warmup), alpha=cfg.get("final_lr_factor", 0.0)
    )
  elif cfg.schedule == "constant":
    main = optax.constant_schedule(cfg.lr)
  else:
    raise ValueError(f"schedule={cfg.schedule!r}: expected one of {SCHEDULES}")
  if warmup == 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, cfg.lr, warmup), main], [warmup])


def _mask(params: Mapping, patterns: tuple[str, ...]) -> Any:
  """Pytree of bools: True where the param path ("a/b/kernel") matches one of `patterns`."""
  flat = traverse_util.flatten_dict(dict(params))
  hits = {k: any(re.search(p, "/".join(k)) for p in patterns) for k in flat}
  return traverse_util.unflatten_dict(hits)


def create_optimizer(cfg: ml_collections.ConfigDict, num_steps: int, params: Mapping):
  """optax optimizer from a stage config: adam/adamw/sgd, schedule, frozen params by regex."""
  lr = learning_rate_schedule(cfg, num_steps)
  if cfg.optimizer == "adam":
    tx = optax.adam(lr)
  elif cfg.optimizer == "sgd":
    tx = optax.sgd(lr, momentum=cfg.get("momentum", 0.9), nesterov=cfg.get("nesterov", False))
  else:
    raise ValueError(f"optimizer={cfg.optimizer!r}: expected one of {OPTIMIZERS}")
  if cfg.get("grad_clip", 0):
    tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip), tx)
  frozen = tuple(cfg.get("freeze", ()) or ())
  if frozen:
    labels = jax.tree.map(lambda f: "frozen" if f else "train", _mask(params, frozen))
    tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
  return tx


def weight_penalty(params: Mapping, exclude: tuple[str, ...] = ()) -> jax.Array:
  """½·Σ‖p‖² over params with ndim > 1 (kernels, z, projections, codebooks) not excluded."""
  flat = traverse_util.flatten_dict(dict(params))
  terms = [
    jnp.sum(jnp.square(v.astype(jnp.float32)))
    for k, v in flat.items()
    if v.ndim > 1 and not any(re.search(p, "/".join(k)) for p in exclude)
  ]
  return 0.5 * sum(terms) if terms else jnp.zeros(())


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def distillation_loss(logits: jax.Array, teacher: jax.Array, temperature: float) -> jax.Array:
  """T²·KL(softmax(teacher/T) ‖ softmax(logits/T)), batch mean (Hinton et al.'s scaling)."""
  t = jax.nn.log_softmax(jax.lax.stop_gradient(teacher).astype(jnp.float32) / temperature)
  s = jax.nn.log_softmax(logits.astype(jnp.float32) / temperature)
  kl = jnp.sum(jnp.exp(t) * (t - s), axis=-1)
  return temperature**2 * jnp.mean(kl)


def anneal_tau(model_state: Mapping, rate: float) -> dict:
  """`model_state` with every quantized layer's τ multiplied by `rate` (one step of annealing)."""
  if rate == 1.0 or QUANT not in model_state:
    return dict(model_state)
  flat = traverse_util.flatten_dict(dict(model_state[QUANT]))
  flat = {k: v * rate if k[-1] == "tau" else v for k, v in flat.items()}
  return {**model_state, QUANT: traverse_util.unflatten_dict(flat)}


def make_train_step(
  model: nn.Module, cfg: ml_collections.ConfigDict, tx, num_steps: int = 1
) -> Callable:
  """(state, batch) → (state, metrics); metrics include `finite` (loss and params all finite).

  A batch with "teacher_logits" adds the distillation term (weight `cfg.distill`).
  """
  wd = float(cfg.get("weight_decay", 0.0))
  wd_exclude = tuple(cfg.get("weight_decay_exclude", ()) or ())
  distill = float(cfg.get("distill", 0.0))
  temp = float(cfg.get("distill_temperature", 1.0))
  tau_rate = float(cfg.get("tau_final_factor", 1.0)) ** (1.0 / max(1, num_steps))
  mutable = ["batch_stats", LOSSES, DKM_LISTS]

  def train_step(state: TrainState, batch: Mapping[str, jax.Array]):
    def loss_fn(params):
      variables = {"params": params, **state.model_state}
      logits, new_state = model.apply(
        variables,
        batch["image"],
        train=True,
        mutable=mutable,
        rngs={"dropout": jax.random.fold_in(state.rng, state.step)},
      )
      ce = cross_entropy(logits, batch["label"])
      task = ce
      if "teacher_logits" in batch and distill > 0:
        kd = distillation_loss(logits, batch["teacher_logits"], temp)
        task = (1.0 - distill) * ce + distill * kd
      aux = sum_losses(new_state)
      loss = task + aux + (wd * weight_penalty(params, wd_exclude) if wd else 0.0)
      return loss, (logits, new_state, ce, aux)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, (logits, new_state, ce, aux)), grads = grad_fn(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    model_state = anneal_tau(state.model_state, tau_rate)
    for collection in ("batch_stats", DKM_LISTS):
      if collection in new_state:
        model_state[collection] = new_state[collection]
    finite = jnp.isfinite(loss) & jnp.all(
      jnp.stack([jnp.all(jnp.isfinite(p)) for p in jax.tree.leaves(params)])
    )
    metrics = {
      "loss": loss,
      "cross_entropy": ce,
      "aux_loss": aux,
      "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"]),
      "grad_norm": optax.tree.norm(grads),
      "finite": finite,
    }
    new = state.replace(
      step=state.step + 1, params=params, model_state=model_state, opt_state=opt_state
    )
    return new, metrics

  return train_step


def make_eval_step(model: nn.Module) -> Callable:
  """(variables, batch) → summed top-1 / top-5 hits, loss and count over the masked batch."""

  def eval_step(variables, batch):
    logits = model.apply(variables, batch["image"], train=False)
    mask = batch.get("mask", jnp.ones(batch["label"].shape, bool)).astype(jnp.float32)
    labels = batch["label"]
    top5 = jax.lax.top_k(logits, min(5, logits.shape[-1]))[1]
    return {
      "top1": jnp.sum((jnp.argmax(logits, -1) == labels) * mask),
      "top5": jnp.sum(jnp.any(top5 == labels[:, None], axis=-1) * mask),
      "loss": jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, labels) * mask),
      "count": jnp.sum(mask),
    }

  return eval_step


def nonfinite_params(params: Mapping) -> list[str]:
  """Paths of params holding NaN or Inf (for the error message when a step goes bad)."""
  flat = traverse_util.flatten_dict(dict(jax.device_get(params)))
  return ["/".join(k) for k, v in flat.items() if not bool(jnp.all(jnp.isfinite(v)))]
