"""The multiple-choice knapsack: within budget, as good as brute force on small instances."""

import itertools

import numpy as np
import pytest

from lr2vq_jax.planning import knapsack


def _instance(rng, groups=4, options=5):
  costs = [np.sort(rng.integers(1, 50, options)).astype(float) for _ in range(groups)]
  errors = [np.sort(rng.uniform(0, 10, options))[::-1] for _ in range(groups)]
  return costs, errors


def _brute(costs, errors, budget):
  best = np.inf
  for pick in itertools.product(*(range(len(c)) for c in costs)):
    if sum(c[i] for c, i in zip(costs, pick, strict=True)) <= budget:
      best = min(best, sum(e[i] for e, i in zip(errors, pick, strict=True)))
  return best


@pytest.mark.parametrize("seed", range(20))
def test_within_budget_and_near_optimal(seed):
  rng = np.random.default_rng(seed)
  costs, errors = _instance(rng)
  budget = float(rng.uniform(sum(c.min() for c in costs), sum(c.max() for c in costs)))
  pick = knapsack.solve(costs, errors, budget)
  spent = sum(c[i] for c, i in zip(costs, pick, strict=True))
  err = sum(e[i] for e, i in zip(errors, pick, strict=True))
  assert spent <= budget
  best = _brute(costs, errors, budget)
  assert err <= best + 0.35 * (sum(e.max() for e in errors) - best)  # heuristic: close, not exact
  # no single upgrade that fits is left: the greedy fix-up spent what it could
  for g, (c, e) in enumerate(zip(costs, errors, strict=True)):
    for j in range(len(c)):
      if e[j] < e[pick[g]]:
        assert spent - c[pick[g]] + c[j] > budget


def test_exact_on_convex_instances():
  """Convex error-vs-cost curves with equal steps: the Lagrangian choice is the optimum."""
  costs = [np.arange(6.0) * 10] * 3
  errors = [np.array([32, 16, 8, 4, 2, 1.0]) * w for w in (1, 3, 5)]
  for budget in (0, 10, 40, 70, 150):
    pick = knapsack.solve(costs, errors, budget + 1e-9 if budget else 1e-9)
    got = sum(e[i] for e, i in zip(errors, pick, strict=True))
    assert got == pytest.approx(_brute(costs, errors, budget + 1e-9))


def test_budget_errors():
  with pytest.raises(knapsack.BudgetError, match="below the smallest possible size"):
    knapsack.solve([[5.0, 10.0]], [[1.0, 0.0]], 4.0)
  with pytest.raises(knapsack.BudgetError, match="positive"):
    knapsack.solve([[5.0]], [[1.0]], 0.0)
