"""A stage built from the config, and where it starts: the previous stage's checkpoint, converted.

`build_stage` makes everything about a stage that does not depend on its weights (models, rules,
optimizer, mesh, state layout); `restore_final` reads a finished stage's last checkpoint;
`initial_variables` converts the previous stage's (or a torchvision state dict) into this one's.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from lr2vq_jax import paths
from lr2vq_jax.models import create_model
from lr2vq_jax.models.torch_import import load_torchvision
from lr2vq_jax.nn import QuantConfig, plan_model, quantize_model
from lr2vq_jax.train import checkpointing, input_pipeline, partitioning, stages
from lr2vq_jax.train.config import layer_config, stage_config, stage_rules
from lr2vq_jax.train.state import abstract_train_state, abstract_variables
from lr2vq_jax.train.step import TrainState, create_optimizer


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
  def spec(self) -> stages.StageSpec:
    return stages.STAGES[self.name]

  @property
  def layer_config(self) -> QuantConfig:
    return layer_config(self.config, self.name)

  @property
  def sample_input(self) -> jax.Array:
    """One image of the dataset's shape, what `model.init` traces the model with."""
    return jnp.zeros((1, *self.info.image_shape), jnp.float32)

  @functools.cached_property
  def tx(self) -> optax.GradientTransformation:
    """The stage's optimizer (schedule, frozen params) for its model's parameter tree."""
    params = abstract_variables(self.model, self.sample_input)["params"]
    return create_optimizer(self.cfg, self.num_steps, params)

  @property
  def rng(self) -> jax.Array:
    """The stage's random key: the config's seed folded with the stage's fixed number."""
    return jax.random.fold_in(jax.random.key(self.config.seed), self.spec.seed_fold)


def build_stage(config: ml_collections.ConfigDict, name: str, workdir: str) -> Stage:
  """Stage `name` of `config`, its files under `<workdir>/<name>`; reads and writes nothing."""
  spec = stages.get(name)
  info = input_pipeline.dataset_info(config.data)
  float_model = create_model(
    config.model, num_classes=info.num_classes, dtype=config.get("dtype", "float32")
  )
  rules = stage_rules(config, name)
  model = quantize_model(float_model, rules, spec.mode, layer_config(config, name))
  cfg = stage_config(config, name)
  steps = cfg.num_steps or int(cfg.num_epochs * info.num_train_examples) // config.data.batch_size
  return Stage(
    name=name,
    config=config,
    cfg=cfg,
    workdir=paths.join(workdir, name),
    model=model,
    float_model=float_model,
    rules=rules,
    num_steps=int(steps),
    info=info,
    mesh=partitioning.make_mesh(),
  )


def abstract_state(stage: Stage) -> TrainState:
  """Shapes, dtypes and target shardings of the stage's state, computed without any weights."""
  mode = partitioning.sharding_mode(stage.config)
  return abstract_train_state(stage.model, stage.tx, stage.sample_input, stage.mesh, mode)


def restore_final(stage: Stage, directory: str) -> TrainState:
  """The last checkpoint of a finished stage, checked to be that stage of the same model.

  Reads only: a directory without checkpoints is an error before anything is opened (Orbax would
  create the folder), and the checkpoint manager is closed on every path.
  """
  root = checkpointing.checkpoint_dir(directory)
  missing = FileNotFoundError(
    f"stage {stage.name!r} has no checkpoint in {directory}; run that stage first "
    f"(--config.stages={stage.name}) or set init_from"
  )
  if not checkpointing.committed_steps(root):
    raise missing
  with checkpointing.Checkpointer(root) as ckpt:
    step = ckpt.latest_step()
    if step is None:
      raise missing
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


def initial_variables(stage: Stage) -> dict | None:
  """The stage's starting variables: the previous stage's final ones (`<workdir>/<previous>` or
  the stage's `init_from`) converted, or for the root a torchvision state dict; None: random."""
  init_from = stage.cfg.get("init_from") or ""
  spec = stage.spec
  if spec.previous is None:
    return load_torchvision(init_from) if init_from else None
  prev = build_stage(stage.config, spec.previous, paths.parent(stage.workdir))
  prev_state = restore_final(prev, init_from or prev.workdir)
  variables = partitioning.to_host(prev_state.variables())  # Z may span processes
  return spec.convert(
    variables,
    stage.rules,
    key=stage.rng,
    kmeans_iters=stage.config.quant.kmeans_iters,
    plan=plan_model(stage.float_model, stage.rules, stage.sample_input, train=False),
    config=stage.layer_config,
  )
