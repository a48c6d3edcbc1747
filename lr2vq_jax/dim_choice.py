"""Choosing d̃ for any model: the clustered-SVD predictor, scored by the caller's evaluation.

For each candidate d̃ the float variables are cut to rank d̃ (`float_to_lowrank`), Z is clustered
as the quantize stage starts (`lowrank_to_quantize`), and `eval_fn(quantized_model, variables)`
scores the hard-code model; the lowest score wins. No training. This is the predictor that picked
the measured best d̃ at both block sizes on the digits task (README "Choosing d̃"); the weight
error alone (`lq.estimate_dim`) cannot see the task and favours d̃ near m on trained weights.

Every candidate is represented at full width m (`at_rank`, `widen`): Z keeps its first d̃ columns
and zeros after them, P completes to m orthonormal rows. Z·P and every distance between rows of Z
and centroids are those of the rank-d̃ factors (the zero columns add exact zeros), so one SVD per
layer serves all candidates, and one compiled k-means (and τ, and evaluation) per layer shape
instead of one per (layer, d̃).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

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
  rules_m = presets.with_d(rules, m)  # d̃ = m on every rule: the full SVD, once per layer
  plan = None if sample is None else plan_model(model, rules_m, sample)
  full = convert.float_to_lowrank(variables, rules_m, plan=plan, config=config)
  scores = []
  for d in cands:
    quant = convert.lowrank_to_quantize(
      at_rank(full, d), rules_m, key=key, kmeans_iters=kmeans_iters, config=config
    )
    qmodel = quantize_model(model, presets.with_d(rules, d), Mode.QUANTIZE, config)
    scores.append(float(eval_fn(qmodel, narrow(quant, d))))
  return DimScores(cands, tuple(scores))


def _map_layers(variables: Mapping[str, Any], fn: Callable[[dict], dict]) -> dict:
  """`variables` with `fn` applied to the params of every low-rank layer (those with z and
  projection), given and returning the layer's {leaf name: array}."""
  params = traverse_util.flatten_dict(dict(variables["params"]))
  layers = sorted({k[:-1] for k in params if k[-1] == "z"})
  for layer in layers:
    leaves = {k[-1]: v for k, v in params.items() if k[:-1] == layer}
    params.update({layer + (name,): v for name, v in fn(leaves).items()})
  return {**variables, "params": traverse_util.unflatten_dict(params)}


def at_rank(variables: Mapping[str, Any], d: int) -> dict:
  """Low-rank variables of width m with Z cut to its first min(d̃, m) columns (the rest zero): from
  the d̃ = m SVD, the rank-d̃ truncated SVD, with the layer shapes of d̃ = m."""

  def cut(leaves):
    z = leaves["z"]
    return {"z": z * (jnp.arange(z.shape[1]) < d).astype(z.dtype)}

  return _map_layers(variables, cut)


def widen(variables: Mapping[str, Any]) -> dict:
  """Low-rank variables of rank d̃ < m as width m: Z padded with zero columns, P (d̃, m) completed
  by m − d̃ orthonormal rows orthogonal to its own, so that Z·P and the "orthonormal" projection
  mode's first d̃ rows are unchanged. Layers already of width m pass through."""

  def pad(leaves):
    z, p = leaves["z"], leaves["projection"]
    d, m = p.shape
    if d == m:
      return {}
    _, _, vt = jnp.linalg.svd(p.astype(jnp.float32), full_matrices=True)
    return {
      "z": jnp.pad(z, ((0, 0), (0, m - d))),
      "projection": jnp.concatenate([p, vt[d:].astype(p.dtype)]),
    }

  return _map_layers(variables, pad)


def narrow(variables: Mapping[str, Any], d: int) -> dict:
  """Width-m variables of rank d̃ back to the rank-d̃ shapes: Z and the codebook keep their first
  min(d̃, m) columns, P its first rows (what the rank-d̃ model's layers hold)."""

  def cut(leaves):
    dd = min(d, leaves["projection"].shape[1])
    out = {"z": leaves["z"][:, :dd], "projection": leaves["projection"][:dd]}
    if "codebook" in leaves:
      out["codebook"] = leaves["codebook"][:, :dd]
    return out

  return _map_layers(variables, cut)
