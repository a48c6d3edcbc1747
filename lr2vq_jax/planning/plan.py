"""`plan`: per-layer (k, m, d̃) for a byte budget, minimising the predicted loss increase.

Predicted loss increase of a layer = ½ · s · ‖W − Ŵ‖², with s the layer's mean empirical Fisher
diagonal (`sensitivity`, from a few training batches) and ‖W − Ŵ‖² the clustered-SVD weight error
of the candidate (`candidates`). Without batches s = 1 for every layer (weight error only), and the
plan says so. The sum over layers is minimised under the exact byte count of
`core.accounting.size_report` by a multiple-choice knapsack (`knapsack`). d̃ does not change the
codebook-convention bytes and the weight error cannot choose it (it favours d̃ = m on trained
weights), so d̃ is the caller's: `d` (an int cap, a fraction of m, or None for d̃ = m).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Mapping, Sequence

import jax
import numpy as np

from lr2vq_jax.core.accounting import MIB, size_report, table_bytes
from lr2vq_jax.core.rules import Rule, iter_leaves, kernels_by_path, params_collection, plan_layers
from lr2vq_jax.planning import candidates as cand
from lr2vq_jax.planning import knapsack

NO_DATA = "no data: sensitivity 1 for every layer, the plan minimises the weight error only"


@dataclasses.dataclass(frozen=True)
class LayerChoice:
  """One kernel: its candidates, the chosen one and its sensitivity."""

  path: str
  shape: tuple[int, ...]
  sensitivity: float
  candidates: tuple[cand.Candidate, ...]
  chosen: cand.Candidate
  energy: float  # ‖W‖²: the "rel err" column is error / energy
  reference: cand.Candidate | None = None  # the reference rules' (k, m, d̃) for this layer

  def predicted(self, c: cand.Candidate | None = None) -> float:
    """Predicted loss increase ½·s·‖W − Ŵ‖² of candidate c (default: the chosen one)."""
    return 0.5 * self.sensitivity * (self.chosen if c is None else c).error

  def rule(self) -> Rule:
    pattern = f"^{re.escape(self.path)}$"
    c = self.chosen
    return Rule(pattern, skip=True) if c.is_float else Rule(pattern, k=c.k, m=c.m, d=c.d)


@dataclasses.dataclass(frozen=True)
class Plan:
  """The allocation: per-layer choices, the budget and what the prediction rests on."""

  layers: tuple[LayerChoice, ...]
  target_bytes: float
  fixed_bytes: float  # parameters outside the planned kernels, fp32
  uncompressed_bytes: float
  store: str
  basis: str

  @property
  def total_bytes(self) -> float:
    return self.fixed_bytes + sum(lc.chosen.bytes for lc in self.layers)

  @property
  def predicted(self) -> float:
    return sum(lc.predicted() for lc in self.layers)

  @property
  def reference_bytes(self) -> float | None:
    if any(lc.reference is None for lc in self.layers):
      return None
    return self.fixed_bytes + sum(lc.reference.bytes for lc in self.layers)

  @property
  def reference_predicted(self) -> float | None:
    if any(lc.reference is None for lc in self.layers):
      return None
    return sum(lc.predicted(lc.reference) for lc in self.layers)

  def rules(self) -> tuple[Rule, ...]:
    return tuple(lc.rule() for lc in self.layers)

  def rules_text(self, sep: str = ";") -> str:
    """The rules as `config.rules` text (`core.rules.parse_rules` reads it back)."""
    out = []
    for r in self.rules():
      out.append(f"{r.pattern}:skip" if r.skip else f"{r.pattern}:k={r.k},m={r.m},d={r.d}")
    return sep.join(out)

  def table(self) -> str:
    """Per-layer allocation with bytes and predicted loss, then the totals."""
    head = f"{'layer':<28} {'shape':<16} {'k':>5} {'m':>3} {'d':>3} {'bytes':>10} {'sens':>9}"
    head += f" {'rel err':>8} {'pred loss':>10} {'ref k/m/d':>11} {'ref pred':>10}"
    lines = [head, "-" * len(head)]
    for lc in self.layers:
      c, energy = lc.chosen, max(lc.energy, 1e-30)
      kmd = ("fp32", "", "") if c.is_float else (c.k, c.m, c.d)
      r = lc.reference
      ref = "-" if r is None else ("fp32" if r.is_float else f"{r.k}/{r.m}/{r.d}")
      ref_pred = "-" if r is None else f"{lc.predicted(r):.3e}"
      lines.append(
        f"{lc.path:<28} {'x'.join(map(str, lc.shape)):<16} {kmd[0]:>5} {kmd[1]:>3} {kmd[2]:>3} "
        f"{c.bytes:>10,.1f} {lc.sensitivity:>9.3g} {c.error / energy:>8.4f} "
        f"{lc.predicted():>10.3e} {ref:>11} {ref_pred:>10}"
      )
    lines.append("-" * len(head))
    lines.append(f"other parameters (fp32): {self.fixed_bytes:,.0f} bytes")
    lines.append(self.totals_line())
    if self.reference_bytes is not None:
      lines.append(
        f"reference rules (uniform): {self.reference_bytes:,.1f} bytes "
        f"({self.reference_bytes / MIB:.3f} MiB), predicted loss {self.reference_predicted:.4e}"
      )
    lines.append(f"sensitivity: {self.basis}")
    return "\n".join(lines)

  def totals_line(self) -> str:
    total = self.total_bytes
    return (
      f"total {total:,.1f} bytes ({total / MIB:.3f} MiB) of target {self.target_bytes:,.1f} "
      f"({self.target_bytes / MIB:.3f} MiB), ratio {self.uncompressed_bytes / total:.1f}×, "
      f"predicted loss {self.predicted:.4e}"
    )


def _kernels(params: Mapping, layers: str | None) -> dict[str, np.ndarray]:
  return {
    path: np.asarray(jax.device_get(leaf), np.float32)
    for path, leaf in kernels_by_path(params).items()
    if np.ndim(leaf) >= 2 and (layers is None or re.search(layers, path))
  }


def plan(
  model,
  variables: Mapping,
  *,
  target_bytes: float | None = None,
  ratio: float | None = None,
  batches: Iterable[Mapping] | None = None,
  d: int | float | None = None,
  ms: Sequence[int] = cand.DEFAULT_MS,
  ks: Sequence[int] = cand.DEFAULT_KS,
  layers: str | None = None,
  keep_float: str | None = None,
  store: str = "codebook",
  reference: Sequence[Rule] | None = None,
  key: jax.Array | None = None,
  max_rows: int = 2048,
  iters: int = 8,
) -> Plan:
  """Per-layer (k, m, d̃) of `variables` (a linen model's, trained or from shapes) within
  `target_bytes` (or uncompressed bytes / `ratio`), minimising Σ ½·s·‖W − Ŵ‖².

  Kernels matching `layers` (regex, default all ≥ 2-D kernels) are planned, those also matching
  `keep_float` stay fp32; each planned layer may also stay fp32 if that fits the budget best.
  `reference` rules (e.g. a uniform preset) get their predicted loss printed alongside.
  """
  params = params_collection(variables)
  num_params = sum(math.prod(np.shape(leaf)) for _, leaf in iter_leaves(params))
  uncompressed = 4.0 * num_params
  target_bytes = _target(uncompressed, target_bytes, ratio)
  kernels = _kernels(params, layers)
  if not kernels:
    raise ValueError(f"no kernel matches layers={layers!r}")
  sens, used = ({p: 1.0 for p in kernels}, 0)
  if batches is not None:
    sens, used = _sensitivity(model, variables, batches, kernels, key)
  basis = f"mean Fisher diagonal on {used} training batches" if used else NO_DATA
  rng = np.random.default_rng(
    np.asarray(jax.random.key_data(key)).ravel() if key is not None else 0
  )
  search = dict(ms=ms, ks=ks, d=d, store=store, rng=rng, max_rows=max_rows, iters=iters)
  options = {path: _options(path, w, keep_float, search) for path, w in kernels.items()}
  fixed = uncompressed - sum(4.0 * w.size for w in kernels.values())
  choice = _solve(options, sens, fixed, uncompressed, target_bytes)
  refs = _reference(params, kernels, reference, options, store, rng, max_rows, iters)
  result = Plan(
    layers=tuple(
      LayerChoice(
        p,
        kernels[p].shape,
        sens[p],
        tuple(options[p]),
        options[p][choice[p]],
        float(np.sum(np.square(kernels[p], dtype=np.float64))),
        refs.get(p),
      )
      for p in kernels
    ),
    target_bytes=float(target_bytes),
    fixed_bytes=fixed,
    uncompressed_bytes=uncompressed,
    store=store,
    basis=basis,
  )
  check = size_report(params, result.rules(), store=store).compressed_bytes
  if abs(check - result.total_bytes) > 1e-6:  # the knapsack's bytes are the accounting's
    raise AssertionError(f"plan bytes {result.total_bytes} != size_report {check}")
  return result


def _solve(
  options: Mapping[str, Sequence[cand.Candidate]],
  sens: Mapping[str, float],
  fixed: float,
  uncompressed: float,
  target_bytes: float,
) -> dict[str, int]:
  """Index of the chosen candidate per layer: least Σ ½·s·error within the budget (knapsack)."""
  paths = list(options)
  costs = [[c.bytes for c in options[p]] for p in paths]
  errors = [[0.5 * sens[p] * c.error for c in options[p]] for p in paths]
  smallest = fixed + sum(min(c) for c in costs)
  if not target_bytes >= smallest:
    raise knapsack.BudgetError(
      f"target {target_bytes:,.0f} bytes is below the smallest possible size {smallest:,.0f} "
      f"bytes (ratio {uncompressed / smallest:.1f}×) of these candidates"
    )
  choice = knapsack.solve(costs, errors, target_bytes - fixed)
  return dict(zip(paths, choice, strict=True))


def _target(uncompressed: float, target_bytes: float | None, ratio: float | None) -> float:
  """The byte budget: `target_bytes`, or the uncompressed bytes / `ratio` (exactly one given)."""
  if (target_bytes is None) == (ratio is None):
    raise ValueError("give exactly one of target_bytes and ratio")
  if ratio is None:
    return target_bytes
  if not ratio > 1:
    raise ValueError(f"ratio {ratio!r}: must be a number > 1")
  return uncompressed / ratio


def _options(path: str, kernel: np.ndarray, keep_float: str | None, search: dict) -> list:
  """A layer's candidates: fp32 only where `keep_float` matches, else every (k, m, d̃) and fp32."""
  if keep_float and re.search(keep_float, path):
    return [cand.Candidate(None, 0, 0, 4.0 * kernel.size, 0.0)]
  return cand.layer_candidates(kernel, allow_float=True, **search)


def _sensitivity(model, variables, batches, kernels, key):
  from lr2vq_jax.planning.sensitivity import layer_sensitivity

  return layer_sensitivity(model, variables, batches, kernels, key)


def _reference(params, kernels, reference, options, store, rng, max_rows, iters):
  """The candidate each layer gets under the `reference` rules (fp32 where none compresses it)."""
  if reference is None:
    return {}
  plans = plan_layers(params, reference)
  out = {}
  for path, w in kernels.items():
    lp = plans.get(path)
    if lp is None:
      out[path] = cand.Candidate(None, 0, 0, 4.0 * w.size, 0.0)
      continue
    same = [c for c in options[path] if (c.k, c.m, c.d) == (lp.k, lp.m, lp.d)]
    if same:
      out[path] = same[0]
      continue
    err = cand.layer_errors(w, lp.m, lp.d, [lp.k], rng=rng, max_rows=max_rows, iters=iters)
    out[path] = cand.Candidate(
      lp.k, lp.m, lp.d, lp.code_bits / 8 + table_bytes(lp.k, lp.m, lp.d, store), err[lp.k]
    )
  return out
