"""Runs one pipeline stage: build → initialise or resume → jitted, sharded steps → evaluate.

Stages: float, lowrank, quantize (LR²VQ) and the baselines pq (codes frozen, codebooks tuned) and
dkm (vanilla DKM, d̃ = m). Every stage but float starts from the previous stage's last checkpoint
(`<workdir>/<previous>` or the stage's `init_from`) converted by `lr2vq_jax.convert`; every stage
resumes automatically from its own checkpoints. Data order and RNG are keyed by step.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from lr2vq_jax import convert, paths
from lr2vq_jax.models import create_model
from lr2vq_jax.models.torch_import import load_torchvision
from lr2vq_jax.nn import QuantConfig, plan_model, quantize_model
from lr2vq_jax.nn.recorded import DEFAULTS
from lr2vq_jax.train import checkpointing, hard_codes, input_pipeline, partitioning, run_config
from lr2vq_jax.train.config import stage_config, stage_rules
from lr2vq_jax.train.metrics import MetricsLogger, periodic_hooks
from lr2vq_jax.train.preemption import Preemption
from lr2vq_jax.train.state import abstract_train_state, abstract_variables, create_train_state
from lr2vq_jax.train.step import (
  TrainState,
  create_optimizer,
  learning_rate_schedule,
  make_eval_step,
  make_train_step,
  nonfinite_params,
)

STAGE_KIND = {
  "float": "float",
  "lowrank": "lowrank",
  "quantize": "quantize",
  "pq": "frozen",
  "dkm": "quantize",
}
PREVIOUS = {"lowrank": "float", "quantize": "lowrank", "pq": "float", "dkm": "float"}


class NonFiniteError(FloatingPointError):
  """A step produced NaN/Inf; the last good checkpoint is kept and nothing bad is saved."""


@dataclasses.dataclass
class Stage:
  """Everything about one stage that does not depend on its weights."""

  name: str
  config: ml_collections.ConfigDict  # the whole experiment config
  cfg: ml_collections.ConfigDict  # this stage's section
  workdir: str
  model: Any  # QuantizedModel for this stage
  float_model: Any
  rules: tuple
  num_steps: int
  info: Any
  mesh: Any

  @property
  def quant(self) -> QuantConfig:
    return quant_config(self.config, self.name)

  @property
  def sample_input(self) -> jax.Array:
    """One image of the dataset's shape, what `model.init` traces the model with."""
    return jnp.zeros((1, *self.info.image_shape), jnp.float32)

  @functools.cached_property
  def tx(self) -> optax.GradientTransformation:
    """The stage's optimizer (schedule, frozen params) for its model's parameter tree."""
    params = abstract_variables(self.model, self.sample_input)["params"]
    return create_optimizer(self.cfg, self.num_steps, params)


def quant_config(config: ml_collections.ConfigDict, stage: str | None = None) -> QuantConfig:
  """The layers' knobs from `config.quant`; a stage's own `tau_alpha` (> 0) takes precedence."""
  q = config.quant
  tau_alpha = q.tau_alpha
  if stage is not None and config[stage].get("tau_alpha", 0) > 0:
    tau_alpha = config[stage].tau_alpha
  return QuantConfig(
    tau_alpha=tau_alpha,
    dkm_iters=q.dkm_iters,
    dkm_grad=q.get("dkm_grad", QuantConfig.dkm_grad),
    dkm_top_t=q.get("dkm_top_t", QuantConfig.dkm_top_t),
    commitment=q.commitment,
    store=q.store,
    projection=q.get("projection", DEFAULTS["projection"]),
    chunk_size=q.chunk_size,
    shard_axis=partitioning.ROW_AXIS,
  )


def build_stage(config: ml_collections.ConfigDict, name: str, workdir: str) -> Stage:
  if name not in STAGE_KIND:
    raise ValueError(f"stage {name!r}: expected one of {sorted(STAGE_KIND)}")
  info = input_pipeline.dataset_info(config.data)
  float_model = create_model(
    config.model, num_classes=info.num_classes, dtype=config.get("dtype", "float32")
  )
  rules = stage_rules(config, name)
  model = quantize_model(float_model, rules, STAGE_KIND[name], quant_config(config, name))
  cfg = stage_config(config, name)
  steps = cfg.num_steps or int(cfg.num_epochs * info.num_train_examples) // config.data.batch_size
  return Stage(
    name,
    config,
    cfg,
    paths.join(workdir, name),
    model,
    float_model,
    rules,
    int(steps),
    info,
    partitioning.make_mesh(),
  )


def abstract_state(stage: Stage) -> TrainState:
  """Shapes, dtypes and target shardings of the stage's state, computed without any weights."""
  mode = partitioning.sharding_mode(stage.config)
  return abstract_train_state(stage.model, stage.tx, stage.sample_input, stage.mesh, mode)


def _initial_variables(stage: Stage, key) -> dict | None:
  """Variables converted from the previous stage (or a torchvision state dict); None: random init."""
  init_from = stage.cfg.get("init_from") or ""
  if stage.name == "float":
    return load_torchvision(init_from) if init_from else None
  prev = build_stage(stage.config, PREVIOUS[stage.name], paths.parent(stage.workdir))
  directory = init_from or prev.workdir
  prev_state = restore_final(prev, directory)
  variables = partitioning.to_host(prev_state.variables())  # Z may span processes
  plan = plan_model(stage.float_model, stage.rules, stage.sample_input, train=False)
  q, quant = stage.config.quant, stage.quant
  if stage.name == "lowrank":
    return convert.float_to_lowrank(variables, stage.rules, plan=plan, config=quant)
  if stage.name == "quantize":
    return convert.lowrank_to_quantize(
      variables, stage.rules, key=key, kmeans_iters=q.kmeans_iters, config=quant
    )
  if stage.name == "pq":
    return convert.float_to_pq(
      variables, stage.rules, key=key, kmeans_iters=q.kmeans_iters, plan=plan, config=quant
    )
  return convert.float_to_dkm(
    variables, stage.rules, key=key, kmeans_iters=q.kmeans_iters, plan=plan, config=quant
  )


def restore_final(stage: Stage, directory: str) -> TrainState:
  """The last checkpoint of a finished stage, checked to be that stage of the same model.

  Reads only: a directory without checkpoints is an error before anything is opened (Orbax would
  create the folder), and the checkpoint manager is closed on every path.
  """
  root = checkpointing.checkpoint_dir(directory)
  if not checkpointing.committed_steps(root):
    raise FileNotFoundError(
      f"stage {stage.name!r} has no checkpoint in {directory}; run that stage first "
      f"(--config.stages={stage.name}) or set init_from"
    )
  with checkpointing.Checkpointer(root) as ckpt:
    step = ckpt.latest_step()
    if step is None:
      raise FileNotFoundError(
        f"stage {stage.name!r} has no checkpoint in {directory}; run that stage first "
        f"(--config.stages={stage.name}) or set init_from"
      )
    meta = ckpt.restore_meta(step)
    if meta.get("stage") != stage.name or meta.get("model") != stage.config.model:
      raise ValueError(
        f"{directory} holds stage {meta.get('stage')!r} of model {meta.get('model')!r}; "
        f"expected stage {stage.name!r} of {stage.config.model!r} (fix init_from)"
      )
    if meta.get("step", step) < meta.get("num_steps", 0):
      raise ValueError(
        f"stage {stage.name!r} in {directory} stopped at step {meta['step']} of "
        f"{meta['num_steps']}; rerun it to the end (--config.stages={stage.name}) first"
      )
    state, _ = ckpt.restore(step, abstract_state=abstract_state(stage))
  return state


def _meta(stage: Stage, step: int, pending: list | None = None) -> dict:
  return {
    "stage": stage.name,
    "model": stage.config.model,
    "step": step,
    "num_steps": stage.num_steps,
    # metrics of the steps since the last log row, so a resumed run logs the same rows
    "pending": list(pending or []),
  }


def evaluate(model, variables, make_iter, mesh) -> dict[str, float]:
  """Top-1/top-5 (%) and loss over one pass of a split, each example counted once.

  A quantize-stage model is evaluated through its frozen equivalent: hard codes and tables are
  computed once here (sharded over the mesh), not in every batch.
  """
  model, variables = hard_codes.frozen_model(model, variables, mesh)
  eval_step = jax.jit(make_eval_step(model))
  totals: dict[str, float] = {}
  for batch in make_iter():
    out = jax.device_get(eval_step(variables, partitioning.global_batch(batch, mesh)))
    for key, value in out.items():
      totals[key] = totals.get(key, 0.0) + float(value)
  count = max(totals.get("count", 0.0), 1.0)
  return {
    "top1": 100 * totals["top1"] / count,
    "top5": 100 * totals["top5"] / count,
    "loss": totals["loss"] / count,
  }


def run_stage(
  config: ml_collections.ConfigDict, name: str, workdir: str
) -> tuple[TrainState, dict]:
  """Trains stage `name` to its last step (resuming if possible); returns (state, eval metrics).

  Returns early with `preempted=True` in the metrics when SIGTERM arrived or the stage's
  `max_steps_this_run` steps were done (state checkpointed; the same command resumes).
  """
  stage = build_stage(config, name, workdir)
  paths.makedirs(stage.workdir)
  if jax.process_index() == 0:
    run_config.save(config, name, stage.workdir)
  target = abstract_state(stage)
  ckpt = checkpointing.Checkpointer(checkpointing.checkpoint_dir(stage.workdir), max_to_keep=2)
  logger = MetricsLogger(stage.workdir, stage=name)
  try:
    return _train_and_evaluate(stage, target, ckpt, logger)
  finally:  # also on errors: pending saves finish and Orbax's threads stop before exit
    ckpt.close()
    logger.close()


def _train_and_evaluate(stage: Stage, target, ckpt, logger) -> tuple[TrainState, dict]:
  config, name = stage.config, stage.name
  start = ckpt.latest_step()
  key = jax.random.fold_in(jax.random.key(config.seed), sorted(STAGE_KIND).index(name))
  pending = []
  if start is not None:
    state, meta = ckpt.restore(start, abstract_state=target)
    pending = meta.get("pending", [])
    logger.truncate_after(start)
    logging.info("stage %s: resumed at step %d of %d", name, start, stage.num_steps)
  else:
    start = 0
    variables = _initial_variables(stage, key)
    mode = partitioning.sharding_mode(config)
    state = create_train_state(
      stage.model, stage.tx, stage.sample_input, stage.mesh, key, variables, mode
    )
    ckpt.save(0, state, _meta(stage, 0), force=True)
  train_step = partitioning.jit_train_step(
    make_train_step(stage.model, stage.cfg, stage.tx, stage.num_steps),
    target,
    stage.mesh,
  )
  teacher = _teacher(stage) if stage.cfg.get("distill", 0.0) > 0 else None
  train_iter = input_pipeline.build_input(config.data, split="train", start_step=start)
  hooks = periodic_hooks(
    stage.workdir, num_train_steps=stage.num_steps, writer=logger.writer, profile=False
  )
  state = _loop(stage, state, train_step, train_iter, ckpt, logger, hooks, start, pending, teacher)
  results = {}
  if int(state.step) >= stage.num_steps:
    results = evaluate(
      stage.model,
      state.variables(),
      lambda: input_pipeline.build_input(config.data, split="eval"),
      stage.mesh,
    )
    if not _has_eval_row(logger, stage.num_steps):  # a rerun of a finished stage adds no row
      logger.write_scalars(stage.num_steps, {f"eval_{k}": v for k, v in results.items()})
  else:
    results["preempted"] = True
  ckpt.wait()
  return state, results


def _teacher(stage: Stage):
  """images → logits of the finished float stage (`cfg.teacher` or `<workdir>/float`), for
  distillation; jitted to leave its logits sharded like the batch."""
  if stage.name == "float":
    raise ValueError("stage float cannot distill from itself: set float.distill = 0")
  root = paths.parent(stage.workdir)
  float_stage = build_stage(stage.config, "float", root)
  directory = stage.cfg.get("teacher") or float_stage.workdir
  variables = restore_final(float_stage, directory).variables()
  forward = jax.jit(
    lambda v, x: float_stage.model.apply(v, x, train=False),
    out_shardings=partitioning.batch_sharding(stage.mesh),
  )

  def logits(images: jax.Array) -> jax.Array:
    with jax.set_mesh(stage.mesh):
      return forward(variables, images)

  return logits


def _has_eval_row(logger: MetricsLogger, step: int) -> bool:
  return any(
    r["step"] == step and r["stage"] == logger.stage and "eval_top1" in r["scalars"]
    for r in logger.read_rows()
  )


def _loop(
  stage,
  state,
  train_step,
  train_iter: Iterator,
  ckpt,
  logger,
  hooks,
  start: int,
  pending=(),
  teacher=None,
) -> TrainState:
  log_every = max(1, int(stage.cfg.get("log_every", 50)))
  ckpt_every = max(1, int(stage.cfg.get("checkpoint_every", 500)))
  # A time-limited job trains at most `max_steps_this_run` steps, checkpoints and returns.
  budget = int(stage.cfg.get("max_steps_this_run", 0) or 0)
  stop_at = min(start + budget, stage.num_steps) if budget else stage.num_steps
  last_good = start
  started = time.monotonic()
  with Preemption() as preempt:
    window: list[dict] = []  # device metrics not yet checked for NaN/Inf
    # Host metrics since the last log row; saved in each checkpoint's meta, so a log row averages
    # the same steps whether or not the run was interrupted in between.
    unlogged: list[dict] = [dict(m) for m in pending]
    done = start
    for step in range(start, stop_at):
      batch = partitioning.global_batch(next(train_iter), stage.mesh)
      if teacher is not None:
        batch["teacher_logits"] = teacher(batch["image"])
      state, metrics = train_step(state, batch)
      window.append(metrics)
      done = step + 1
      for hook in hooks:
        hook(done)
      boundary = done % log_every == 0 or done == stage.num_steps
      preempted = preempt.requested  # read once: a signal landing mid-iteration waits a step
      saving = done % ckpt_every == 0 or done == stop_at or preempted
      if boundary or saving:
        host = jax.device_get(window)
        window = []
        bad = [i for i, m in enumerate(host) if not bool(m["finite"])]
        if bad:
          first = done - len(host) + bad[0] + 1
          layers = nonfinite_params(partitioning.to_host(state.params))
          raise NonFiniteError(
            f"stage {stage.name}: non-finite loss or params at step {first}"
            + (f" (layers: {', '.join(layers[:5])})" if layers else "")
            + f"; last good checkpoint: step {last_good}"
          )
        unlogged += [{k: float(v) for k, v in m.items() if k != "finite"} for m in host]
        if boundary:
          means = {k: float(np.mean([m[k] for m in unlogged])) for k in sorted(unlogged[0])}
          means["learning_rate"] = float(_lr(stage)(done - 1))
          logger.write_scalars(done, means)
          _progress(stage, done, means, started, start)
          unlogged = []
      if saving:
        ckpt.save(done, state, _meta(stage, done, unlogged), force=True)
        last_good = done
      if preempted:
        logging.warning(
          "stage %s: stopping at step %d (SIGTERM; checkpoint saved)", stage.name, done
        )
        break
  if done == stop_at < stage.num_steps:
    logging.warning(
      "stage %s: stopping at step %d of %d (max_steps_this_run=%d; checkpoint saved); "
      "rerun the same command to continue",
      stage.name,
      done,
      stage.num_steps,
      budget,
    )
  return state


def _lr(stage: Stage):
  return learning_rate_schedule(stage.cfg, stage.num_steps)


def _progress(stage: Stage, done: int, means: dict, started: float, first: int) -> None:
  """One console line per log step on process 0: loss, accuracy, steps/s and ETA."""
  if jax.process_index() != 0:
    return
  rate = (done - first) / max(time.monotonic() - started, 1e-9)
  eta = (stage.num_steps - done) / max(rate, 1e-9)
  print(
    f"[{stage.name}] step {done}/{stage.num_steps}  loss {means['loss']:.4f}  "
    f"acc {100 * means['accuracy']:.1f}%  {rate:.1f} steps/s  ETA {eta:.0f}s",
    flush=True,
  )
