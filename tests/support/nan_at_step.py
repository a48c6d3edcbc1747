"""`python -m tests.support.nan_at_step STEP <training flags>`: the real training entry point
with NaN written into the last param leaf before training step STEP, as a diverging update does.

The injection lives here, on the test side: it wraps the trainer's `make_train_step` (inside the
jitted step, so sharding and donation stay the production ones) and then runs `lr2vq_jax.main`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import jax
import jax.numpy as jnp

from lr2vq_jax import main
from lr2vq_jax.train import trainer


def poisoned(make_train_step: Callable, at: int) -> Callable:
  """`make_train_step` whose steps see NaN in the last param leaf at (1-based) step `at`."""

  def make(*args, **kwargs):
    step = make_train_step(*args, **kwargs)

    def run(state, batch):
      leaves, treedef = jax.tree.flatten(state.params)
      leaves[-1] = jnp.where(state.step + 1 == at, jnp.nan, leaves[-1]).astype(leaves[-1].dtype)
      return step(state.replace(params=jax.tree.unflatten(treedef, leaves)), batch)

    return run

  return make


if __name__ == "__main__":
  at = int(sys.argv.pop(1))
  trainer.make_train_step = poisoned(trainer.make_train_step, at)
  main.run()
