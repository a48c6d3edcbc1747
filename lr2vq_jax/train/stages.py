"""The training pipeline's stages, in one table: every other list of stages derives from `STAGES`.

Vocabulary of the training system (lr2vq_jax/train, configs, main):

- stage: one step of the pipeline (float, lowrank, quantize, pq, dkm). Its settings are the config
  section `config.<stage>`, its files live in `<workdir>/<stage>`, `config.stages` lists the
  stages a run trains. A built stage (model, rules, optimizer, mesh) is `stage_setup.Stage`; its
  row in this table is a `StageSpec`.
- mode: how a model's compressed layers compute ("float", "lowrank", "quantize", "frozen"), the
  layer-level concept of `lr2vq_jax.nn`; each stage runs its layers in one mode.
- method: what a results row compares ("float", "LR²VQ", "PQ", "vanilla DKM"): a stage's label.
- step: one optimizer update (`step.py`'s train step); a stage trains `num_steps` of them.
- section: a group of config fields (`config.data`, `config.quant`, `config.<stage>`).
- quant section: `config.quant`, the settings of the compressed layers users type (DKM τ rule,
  iterations, commitment, store, projection, chunk size, k-means iterations), built by
  `recipes.quant_section`. The `QuantConfig` the layers run with, the quant section with a
  stage's own `tau_alpha` applied, is the stage's layer config (`stage_setup.layer_config`).
  ("quant" is also the name of the persisted variable collection of the compressed layers.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from lr2vq_jax import convert
from lr2vq_jax.core.mode import Mode

# A conversion takes the previous stage's variables (on the host) to this stage's starting ones:
# fn(variables, rules, *, key, kmeans_iters, plan, config) -> variables (`convert.float_to_pq` and
# `float_to_dkm` have that signature; lowrank and quantize adapt theirs below).
Conversion = Callable[..., dict]


def _to_lowrank(variables, rules, *, key, kmeans_iters, plan, config) -> dict:
  del key, kmeans_iters  # SVD: deterministic
  return convert.float_to_lowrank(variables, rules, plan=plan, config=config)


def _to_quantize(variables, rules, *, key, kmeans_iters, plan, config) -> dict:
  del plan  # the low-rank variables carry their geometry
  return convert.lowrank_to_quantize(
    variables, rules, key=key, kmeans_iters=kmeans_iters, config=config
  )


@dataclasses.dataclass(frozen=True, kw_only=True)
class StageSpec:
  """What the code needs to know about one stage, apart from the config."""

  name: str  # config section, `config.stages` entry, folder under the work dir
  mode: Mode  # the layer mode its compressed layers train in
  previous: str | None  # the stage whose final checkpoint it starts from (None: the root)
  convert: Conversion | None  # previous stage's variables → this stage's starting variables
  # The stage's RNG stream: jax.random.fold_in(key(config.seed), seed_fold). Fixed numbers (each
  # was the stage's index among the sorted names): changing one changes every result.
  seed_fold: int
  label: str | None = None  # the method of its results row (None: no row)
  method: str | None = None  # the recipe ending in this stage (`recipes.imagenet(method=...)`)
  exports: bool = False  # exported as an artifact and evaluated from it
  vanilla: bool = False  # rules with d̃ = m (the baselines), else the configured d̃


STAGES: dict[str, StageSpec] = {
  s.name: s
  for s in (
    StageSpec(name="float", mode=Mode.FLOAT, previous=None, convert=None, seed_fold=1, label="float"),
    StageSpec(name="lowrank", mode=Mode.LOWRANK, previous="float", convert=_to_lowrank, seed_fold=2),
    StageSpec(
      name="quantize", mode=Mode.QUANTIZE, previous="lowrank", convert=_to_quantize, seed_fold=4,
      label="LR²VQ", method="lr2vq", exports=True,
    ),
    StageSpec(
      name="pq", mode=Mode.FROZEN, previous="float", convert=convert.float_to_pq, seed_fold=3,
      label="PQ", method="pq", exports=True, vanilla=True,
    ),
    StageSpec(
      name="dkm", mode=Mode.QUANTIZE, previous="float", convert=convert.float_to_dkm, seed_fold=0,
      label="vanilla DKM", method="dkm", exports=True, vanilla=True,
    ),
  )
}  # fmt: skip
NAMES: tuple[str, ...] = tuple(STAGES)  # pipeline order
# The stages `lr2vq export --stage` accepts.
EXPORTED: tuple[str, ...] = tuple(n for n, s in STAGES.items() if s.exports)
ROOT = "float"  # the stage every other starts from; also the distillation teacher


def get(name: str) -> StageSpec:
  """The stage called `name`; ValueError naming the known ones otherwise."""
  if name not in STAGES:
    raise ValueError(f"unknown stage {name!r}; expected one of: {', '.join(NAMES)}")
  return STAGES[name]


def upstream(name: str) -> tuple[str, ...]:
  """The stages `name` starts from, root first (quantize: float, lowrank)."""
  chain: list[str] = []
  previous = get(name).previous
  while previous is not None:
    chain.insert(0, previous)
    previous = STAGES[previous].previous
  return tuple(chain)


def method_stages() -> dict[str, str]:
  """{recipe method: the `config.stages` it runs}, e.g. {"lr2vq": "float,lowrank,quantize"}."""
  return {s.method: ",".join((*upstream(s.name), s.name)) for s in STAGES.values() if s.method}


def parse_stages(value: Any) -> list[str]:
  """`config.stages` ("float,lowrank" or a sequence of names) as a list of known stages, each
  once; ValueError naming the problem otherwise."""
  if isinstance(value, str):
    names = [s.strip() for s in value.split(",") if s.strip()]
  elif isinstance(value, Sequence) and all(isinstance(s, str) for s in value):
    names = [s.strip() for s in value]
  else:
    raise ValueError(f"{value!r} is not a comma-separated list of stages")
  if not names:
    raise ValueError(f"{value!r} names no stage")
  for i, name in enumerate(names):
    get(name)
    if name in names[:i]:
      raise ValueError(f"stage {name!r} is listed twice")
  return names
