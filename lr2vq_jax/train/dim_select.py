"""Choosing d̃ on the task before quantization fine-tuning: the clustered rank-d̃ model's val loss.

For each candidate d̃ the float model's compressed kernels are cut to rank d̃ (truncated SVD), their
Z clustered by k-means exactly as the quantize stage starts, and the hard-code model evaluated on
the validation split; the lowest validation loss wins. No training is needed. Of the predictors
benchmarks/dim_predictors.py compares on the digits task, this is the one that picked the measured
best d̃ at both block sizes (README "Choosing d̃"). Optional: a short low-rank pre-training per
candidate, label-free BN re-estimation before scoring (both picked worse there). The weight-error
criterion (`lq.estimate_dim`) cannot see the task: on trained weights k-means in more dimensions
always fits better, so it favours d̃ near m.

Every candidate is scored at width m (`dim_choice.at_rank` / `widen`: Z's columns past d̃ zero, the
same Z·P and distances): one SVD per layer, and one compiled k-means, τ and evaluation for all d̃.
"""

from __future__ import annotations

import copy
import dataclasses

import jax
import ml_collections
import numpy as np

from lr2vq_jax import convert, paths
from lr2vq_jax.dim_choice import at_rank, widen
from lr2vq_jax.nn import plan_model
from lr2vq_jax.train import input_pipeline, partitioning
from lr2vq_jax.train.bn_reestimate import reestimate_batch_stats
from lr2vq_jax.train.config import config_rules
from lr2vq_jax.train.evaluation import evaluate
from lr2vq_jax.train.stage_setup import build_stage, restore_final
from lr2vq_jax.train.trainer import run_stage

BASIS = "validation loss of the k-means-clustered rank-d̃ model"


@dataclasses.dataclass(frozen=True)
class DimSelection:
  """Per-candidate validation loss / top-1 after clustering; `best` has the lowest loss."""

  candidates: tuple[int, ...]
  val_loss: tuple[float, ...]
  val_top1: tuple[float, ...]
  pretrain_steps: int
  bn_batches: int = 0

  @property
  def best(self) -> int:
    return self.candidates[int(np.argmin(self.val_loss))]

  @property
  def basis(self) -> str:
    steps = (
      f"after {self.pretrain_steps} steps of low-rank pre-training"
      if self.pretrain_steps
      else "from the truncated SVD (no pre-training)"
    )
    bn = (
      f", BatchNorm re-estimated on {self.bn_batches} unlabeled batches" if self.bn_batches else ""
    )
    return f"{BASIS}, {steps}{bn}"

  def table(self) -> str:
    lines = [f"  {'d':>4} {'val loss':>9} {'val top-1':>9}"]
    for d, loss, top1 in zip(self.candidates, self.val_loss, self.val_top1, strict=True):
      mark = "*" if d == self.best else " "
      lines.append(f"{mark} {d:>4} {loss:>9.4f} {top1:>9.2f}")
    lines.append(f"best d = {self.best}; based on the {self.basis}")
    return "\n".join(lines)


def _with_d(config: ml_collections.ConfigDict, d: int) -> ml_collections.ConfigDict:
  config = copy.deepcopy(config)
  config.d = int(d)
  return config


def _full_width(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config` with d̃ = m on every compressed layer."""
  return _with_d(config, max(r.m for r in config_rules(config) if not r.skip))


def clustered_score(
  config: ml_collections.ConfigDict, lowrank_variables: dict, workdir: str, bn_batches: int = 0
):
  """(val loss, val top-1 %) of `lowrank_variables` (any rank) after the quantize stage's k-means
  init, with BatchNorm statistics first re-estimated on `bn_batches` unlabeled training batches.
  Scored at width m (`widen`), so every rank shares one compiled k-means and evaluation."""
  stage = build_stage(_full_width(config), "quantize", workdir)
  key = jax.random.fold_in(jax.random.key(config.seed), 1)
  variables = convert.lowrank_to_quantize(
    widen(lowrank_variables),
    stage.rules,
    key=key,
    kmeans_iters=config.quant.kmeans_iters,
    tau_alpha=stage.layer_config.tau_alpha,
  )
  if bn_batches:
    train = input_pipeline.build_input(config.data, split="train")
    variables = reestimate_batch_stats(stage.model, variables, train, bn_batches, stage.mesh)
  result = evaluate(
    stage.model,
    variables,
    lambda: input_pipeline.eval_batches(config.data, "eval"),
    stage.mesh,
  )
  return result["loss"], result["top1"]


def truncated(config: ml_collections.ConfigDict, float_variables: dict) -> dict:
  """The low-rank stage's variables at `config.d` straight from the float ones (SVD, no training)."""
  stage = build_stage(config, "lowrank", "")  # geometry only: nothing is read or written
  sample = jax.numpy.zeros((1, *stage.info.image_shape))
  plan = plan_model(stage.float_model, stage.rules, sample, train=False)
  return convert.float_to_lowrank(float_variables, stage.rules, plan=plan)


def select_dim(
  config: ml_collections.ConfigDict,
  float_dir: str,
  workdir: str,
  candidates: tuple[int, ...],
  *,
  pretrain_steps: int = 0,
  bn_batches: int = 0,
) -> DimSelection:
  """Scores every candidate d̃ for `config` (its preset and data) from the finished float stage
  in `float_dir`. The defaults are the predictor that matched the measured best d̃ at both block
  sizes (README "Choosing d̃"): no pre-training, no BN re-estimation. With
  `pretrain_steps`, each rank-d̃ model is first pre-trained that long (a `lowrank` stage under
  `workdir/d<d̃>`)."""
  float_stage = build_stage(config, "float", paths.parent(float_dir))
  float_vars = partitioning.to_host(restore_final(float_stage, float_dir).variables())
  full = None if pretrain_steps else truncated(_full_width(config), float_vars)
  losses, top1s = [], []
  for d in candidates:
    cfg = _with_d(config, d)
    run_dir = paths.join(workdir, f"d{d}")
    if pretrain_steps:
      cfg.lowrank.init_from = float_dir
      cfg.lowrank.num_steps = int(pretrain_steps)
      cfg.lowrank.checkpoint_every = int(pretrain_steps)
      state, _ = run_stage(cfg, "lowrank", run_dir)
      lowrank_vars = partitioning.to_host(state.variables())
    else:
      lowrank_vars = at_rank(full, d)
    loss, top1 = clustered_score(cfg, lowrank_vars, run_dir, bn_batches)
    losses.append(float(loss))
    top1s.append(float(top1))
  cands = tuple(int(c) for c in candidates)
  return DimSelection(cands, tuple(losses), tuple(top1s), pretrain_steps, bn_batches)
