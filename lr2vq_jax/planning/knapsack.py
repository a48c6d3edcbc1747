"""Multiple-choice knapsack: one option per layer, total bytes within a budget, least total error.

Lagrangian relaxation: for a price λ ≥ 0 every layer independently takes the option minimising
error + λ·bytes; the bytes spent fall as λ rises, so λ is bisected to the smallest price whose
choice fits. That choice lies on each layer's lower convex hull and usually leaves bytes unspent;
a greedy fix-up then takes the upgrade with the best error saved per extra byte while it fits.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class BudgetError(ValueError):
  """The budget is below the cheapest choice (or not a positive number)."""


def _choose(costs: Sequence[np.ndarray], errors: Sequence[np.ndarray], lam: float) -> list[int]:
  # lexsort: primary key last; ties in error + λ·bytes go to the cheaper option.
  return [int(np.lexsort((c, e + lam * c))[0]) for c, e in zip(costs, errors, strict=True)]


def _spent(costs: Sequence[np.ndarray], choice: Sequence[int]) -> float:
  return float(sum(c[i] for c, i in zip(costs, choice, strict=True)))


def solve(
  costs: Sequence[Sequence[float]], errors: Sequence[Sequence[float]], budget: float
) -> list[int]:
  """Index of the chosen option per group: Σ costs ≤ budget, Σ errors as small as found."""
  costs = [np.asarray(c, np.float64) for c in costs]
  errors = [np.asarray(e, np.float64) for e in errors]
  cheapest = sum(float(c.min()) for c in costs)
  if not budget > 0:
    raise BudgetError(f"budget {budget!r} bytes: must be a positive number")
  if cheapest > budget:
    raise BudgetError(
      f"budget {budget:,.0f} bytes is below the smallest possible size {cheapest:,.0f} bytes"
    )
  choice = _choose(costs, errors, 0.0)
  if _spent(costs, choice) > budget:
    lo, hi = 0.0, 1.0
    while _spent(costs, _choose(costs, errors, hi)) > budget:
      lo, hi = hi, hi * 4.0
      if hi > 1e300:  # only the cheapest options fit: take them
        return [int(np.lexsort((e, c))[0]) for c, e in zip(costs, errors, strict=True)]
    for _ in range(200):
      mid = 0.5 * (lo + hi) if hi < 2 * lo + 1e-300 else np.sqrt(max(lo, 1e-300) * hi)
      if _spent(costs, _choose(costs, errors, mid)) > budget:
        lo = mid
      else:
        hi = mid
      if hi - lo <= 1e-12 * hi:
        break
    choice = _choose(costs, errors, hi)
  return _fix_up(costs, errors, choice, budget)


def _fix_up(costs, errors, choice: list[int], budget: float) -> list[int]:
  """Greedy: while bytes remain, take the upgrade saving the most error per extra byte."""
  choice = list(choice)
  while True:
    left = budget - _spent(costs, choice)
    best, best_gain = None, 0.0
    for g, (c, e) in enumerate(zip(costs, errors, strict=True)):
      extra = c - c[choice[g]]
      saved = e[choice[g]] - e
      ok = (saved > 0) & (extra <= left + 1e-9)
      if not ok.any():
        continue
      gain = np.where(ok, saved / np.maximum(extra, 1e-12), -np.inf)
      j = int(np.argmax(gain))
      if gain[j] > best_gain:
        best, best_gain = (g, j), float(gain[j])
    if best is None:
      return choice
    choice[best[0]] = best[1]
