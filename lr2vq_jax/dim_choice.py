"""Choosing d̃ for any model: the clustered-SVD predictor, scored by the caller's evaluation.

For each candidate d̃ the float variables are cut to rank d̃ (`float_to_lowrank`), Z is clustered
as the quantize stage starts (`lowrank_to_quantize`), and `eval_fn(quantized_model, variables)`
scores the hard-code model; the lowest score wins. No training. This is the predictor that picked
the measured best d̃ at both block sizes on the digits task (README "Choosing d̃"); the weight
error alone (`lq.estimate_dim`) cannot see the task and favours d̃ near m on trained weights.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from lr2vq_jax import convert, presets
from lr2vq_jax.core import kmeans as kmeans_lib
from lr2vq_jax.core.dimension import default_candidates
from lr2vq_jax.core.mode import Mode
from lr2vq_jax.core.rules import Rule, as_rules
from lr2vq_jax.nn import QuantConfig, plan_model, quantize_model

BASIS = "the caller's score of the k-means-clustered rank-d̃ model (clustered SVD, no training)"


@dataclasses.dataclass(frozen=True)
class DimScores:
  """Per-candidate score (lower is better, e.g. a validation loss); `best` has the lowest."""

  candidates: tuple[int, ...]
  scores: tuple[float, ...]
  basis: str = BASIS

  @property
  def best(self) -> int:
    return self.candidates[int(np.argmin(self.scores))]

  def table(self) -> str:
    lines = [f"  {'d':>4} {'score':>10}"]
    for d, score in zip(self.candidates, self.scores, strict=True):
      lines.append(f"{'*' if d == self.best else ' '} {d:>4} {score:>10.4f}")
    lines.append(f"best d = {self.best}; based on {self.basis}")
    return "\n".join(lines)

  def __str__(self) -> str:
    return self.table()


def select_dim(
  model: nn.Module,
  variables: Mapping[str, Any],
  rules: Rule | Sequence[Rule],
  eval_fn: Callable[[nn.Module, dict], float],
  candidates: Sequence[int] | None = None,
  *,
  sample: Any = None,
  config: QuantConfig | None = None,
  key: jax.Array | None = None,
  kmeans_iters: int = kmeans_lib.ITERS,
) -> DimScores:
  """Scores every candidate d̃ (default 1..m) of `rules` on the float `variables` of `model`.

  `eval_fn(qmodel, qvariables)` returns a number, lower is better (a validation loss); `qmodel`
  is `quantize_model(model, rules with d̃, "quantize", config)` and evaluates with hard codes.
  `sample`: an input for `model` (needed for DenseGeneral kernels with several in/out axes).
  Candidates above a rule's m use d̃ = m for that rule.
  """
  rules = as_rules(rules)
  key = jax.random.key(0) if key is None else key
  m = max(r.m for r in rules if not r.skip)
  cands = tuple(int(c) for c in (candidates or default_candidates(m)))
  if not cands or min(cands) < 1 or max(cands) > m:
    raise ValueError(f"candidates {cands}: choose d̃ values in 1..{m}")
  scores = []
  for d in cands:
    rules_d = presets.with_d(rules, d)
    plan = None if sample is None else plan_model(model, rules_d, sample)
    lowrank = convert.float_to_lowrank(variables, rules_d, plan=plan, config=config)
    quant = convert.lowrank_to_quantize(
      lowrank, rules_d, key=key, kmeans_iters=kmeans_iters, config=config
    )
    scores.append(float(eval_fn(quantize_model(model, rules_d, Mode.QUANTIZE, config), quant)))
  return DimScores(cands, tuple(scores))
