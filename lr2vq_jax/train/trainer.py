"""Runs one pipeline stage: build → initialise or resume → jitted, sharded steps → evaluate.

The stages and what each starts from are the table in `stages.py`. Every stage but the root
(float) starts from the previous stage's last checkpoint (`<workdir>/<previous>` or the stage's
`init_from`) converted by `lr2vq_jax.convert`; every stage resumes automatically from its own
checkpoints. Data order and RNG are keyed by step.
"""

from __future__ import annotations

import contextlib
import time

import jax
import ml_collections
import numpy as np
from absl import logging

from lr2vq_jax import paths
from lr2vq_jax.train import checkpointing, input_pipeline, metrics, partitioning, run_config
from lr2vq_jax.train.config import layer_config
from lr2vq_jax.train.evaluation import evaluate
from lr2vq_jax.train.metrics import MetricsLogger
from lr2vq_jax.train.preemption import Preemption
from lr2vq_jax.train.stage_setup import (
  Stage,
  abstract_state,
  build_stage,
  initial_variables,
  restore_final,
)
from lr2vq_jax.train.state import create_train_state
from lr2vq_jax.train.step import (
  TrainState,
  learning_rate_schedule,
  make_train_step,
  nonfinite_params,
)
from lr2vq_jax.train.teacher import make_teacher

# The trainer's public face for callers outside train/ (cli, benchmarks, tests).
__all__ = [
  "NonFiniteError",
  "Stage",
  "abstract_state",
  "build_stage",
  "evaluate",
  "layer_config",
  "restore_final",
  "run_stage",
  "train_and_evaluate",
]
BUDGET_SPENT = (
  "stage %s: stopping at step %d of %d (max_steps_this_run=%d; checkpoint saved); "
  "rerun the same command to continue"
)


class NonFiniteError(FloatingPointError):
  """A step produced NaN/Inf; the last good checkpoint is kept and nothing bad is saved."""


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
  ckpt = checkpointing.Checkpointer(checkpointing.checkpoint_dir(stage.workdir), max_to_keep=2)
  logger = MetricsLogger(stage.workdir, stage=name)
  try:
    return train_and_evaluate(stage, ckpt, logger)
  finally:  # also on errors: pending saves finish and Orbax's threads stop before exit
    ckpt.close()
    logger.close()


def train_and_evaluate(
  stage: Stage, ckpt: checkpointing.Checkpointer, logger: MetricsLogger
) -> tuple[TrainState, dict]:
  """The stage's loop: start or resume, train to the end (or the run's budget), evaluate."""
  cfg = stage.cfg
  state, start, unlogged = _restore_or_initialize(stage, ckpt, logger)
  train_step = partitioning.jit_train_step(
    make_train_step(stage.model, cfg, stage.tx, stage.num_steps), abstract_state(stage), stage.mesh
  )
  teacher = make_teacher(stage) if cfg.get("distill", 0.0) > 0 else None
  hooks = metrics.periodic_hooks(
    stage.workdir,
    num_train_steps=stage.num_steps,
    writer=logger.writer,
    profile_steps=int(stage.config.get("profile_steps", 0)),
    first_step=start,
  )
  log_every = max(1, int(cfg.get("log_every", 50)))
  ckpt_every = max(1, int(cfg.get("checkpoint_every", 500)))
  stop_at = _stop_at(stage, start)
  batches = input_pipeline.build_input(
    stage.config.data, split="train", start_step=start, num_batches=stop_at - start
  )
  window: list[dict] = []  # device metrics not yet checked for NaN/Inf
  last_good, done, started = start, start, time.monotonic()
  with Preemption() as preempt, contextlib.closing(hooks):
    for step in range(start, stop_at):
      batch = partitioning.global_batch(next(batches), stage.mesh)
      if teacher is not None:
        batch["teacher_logits"] = teacher(batch["image"])
      state, step_metrics = train_step(state, batch)
      window.append(step_metrics)
      done = step + 1
      for hook in hooks:
        hook(done)
      preempted = preempt.requested  # read once: a signal landing mid-iteration waits a step
      log = done % log_every == 0 or done == stage.num_steps
      save = done % ckpt_every == 0 or done == stop_at or preempted
      if log or save:
        unlogged += _checked(stage, jax.device_get(window), state, done, last_good)
        window = []
      if log:
        _log_row(
          stage, logger, done, unlogged, (done - start) / max(time.monotonic() - started, 1e-9)
        )
        unlogged = []
      if save:
        ckpt.save(done, state, _meta(stage, done, unlogged), force=True)
        last_good = done
      if preempted:
        logging.warning(
          "stage %s: stopping at step %d (SIGTERM; checkpoint saved)", stage.name, done
        )
        break
  batches.close()  # its input threads stop before evaluation starts
  if done == stop_at < stage.num_steps:
    logging.warning(BUDGET_SPENT, stage.name, done, stage.num_steps, cfg.max_steps_this_run)
  results = _final_eval(stage, state, logger)
  ckpt.wait()
  return state, results


def _restore_or_initialize(
  stage: Stage, ckpt: checkpointing.Checkpointer, logger: MetricsLogger
) -> tuple[TrainState, int, list[dict]]:
  """(state, first step, host metrics not yet logged): the stage's own latest checkpoint, or step
  0 from the previous stage's variables, converted (saved at once as the step-0 checkpoint)."""
  start = ckpt.latest_step()
  if start is not None:
    state, meta = ckpt.restore(start, abstract_state=abstract_state(stage))
    logger.truncate_after(start)
    logging.info("stage %s: resumed at step %d of %d", stage.name, start, stage.num_steps)
    return state, start, [dict(m) for m in meta.get("pending", [])]
  state = create_train_state(
    stage.model,
    stage.tx,
    stage.sample_input,
    stage.mesh,
    stage.rng,
    initial_variables(stage),
    partitioning.sharding_mode(stage.config),
  )
  ckpt.save(0, state, _meta(stage, 0), force=True)
  return state, 0, []


def _stop_at(stage: Stage, start: int) -> int:
  """The last step of this run: a time-limited job trains at most `max_steps_this_run` steps."""
  budget = int(stage.cfg.get("max_steps_this_run", 0) or 0)
  return min(start + budget, stage.num_steps) if budget else stage.num_steps


def _checked(stage: Stage, host: list[dict], state, done: int, last_good: int) -> list[dict]:
  """The window's metrics as host floats; `NonFiniteError` at the first non-finite step."""
  bad = [i for i, m in enumerate(host) if not bool(m["finite"])]
  if bad:
    first = done - len(host) + bad[0] + 1
    layers = nonfinite_params(partitioning.to_host(state.params))
    raise NonFiniteError(
      f"stage {stage.name}: non-finite loss or params at step {first}"
      + (f" (layers: {', '.join(layers[:5])})" if layers else "")
      + f"; last good checkpoint: step {last_good}"
    )
  return [{k: float(v) for k, v in m.items() if k != "finite"} for m in host]


def _log_row(stage: Stage, logger: MetricsLogger, done: int, rows: list[dict], rate: float) -> None:
  """One metrics row (means since the last row, and the learning rate) and one console line."""
  means = {k: float(np.mean([m[k] for m in rows])) for k in sorted(rows[0])}
  means["learning_rate"] = float(learning_rate_schedule(stage.cfg, stage.num_steps)(done - 1))
  logger.write_scalars(done, means)
  if jax.process_index() == 0:
    eta = (stage.num_steps - done) / max(rate, 1e-9)
    print(
      f"[{stage.name}] step {done}/{stage.num_steps}  loss {means['loss']:.4f}  "
      f"acc {100 * means['accuracy']:.1f}%  {rate:.1f} steps/s  ETA {eta:.0f}s",
      flush=True,
    )


def _final_eval(stage: Stage, state: TrainState, logger: MetricsLogger) -> dict:
  """Eval metrics of a finished stage (one eval row in the log); `{"preempted": True}` if not."""
  if int(state.step) < stage.num_steps:
    return {"preempted": True}
  data = stage.config.data
  results = evaluate(
    stage.model,
    state.variables(),
    lambda: input_pipeline.eval_batches(data, "eval"),
    stage.mesh,
  )
  if not _has_eval_row(logger, stage.num_steps):  # a rerun of a finished stage adds no row
    logger.write_scalars(stage.num_steps, {f"eval_{k}": v for k, v in results.items()})
  return results


def _meta(stage: Stage, step: int, pending: list | None = None) -> dict:
  return {
    "stage": stage.name,
    "model": stage.config.model,
    "step": step,
    "num_steps": stage.num_steps,
    # metrics of the steps since the last log row, so a resumed run logs the same rows
    "pending": list(pending or []),
  }


def _has_eval_row(logger: MetricsLogger, step: int) -> bool:
  return any(
    r["step"] == step and r["stage"] == logger.stage and "eval_top1" in r["scalars"]
    for r in logger.read_rows()
  )
