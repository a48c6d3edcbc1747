"""Wall-clock timing shared by the benchmark scripts: one warm-up call, then `repeats` timed ones."""

from __future__ import annotations

import time
from collections.abc import Callable

import jax


def timed_runs(fn: Callable, *args, repeats: int) -> list[float]:
  """Seconds of each of `repeats` calls of `fn(*args)` after a warm-up, waiting for the device."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return times
