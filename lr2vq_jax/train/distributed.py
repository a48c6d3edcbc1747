"""Multi-process start-up: `jax.distributed.initialize` when launched as several processes."""

from __future__ import annotations

import os

import jax
from absl import logging

_ENV = ("LR2VQ_COORDINATOR", "LR2VQ_NUM_PROCESSES", "LR2VQ_PROCESS_ID")


def initialize() -> None:
  """Joins the other processes when the launcher says there are some; a no-op otherwise.

  Explicit: LR2VQ_COORDINATOR=host:port, LR2VQ_NUM_PROCESSES, LR2VQ_PROCESS_ID (plain clusters,
  localhost tests). Automatic: Cloud TPU pods and SLURM (`jax.distributed.initialize()` detects
  them) when LR2VQ_DISTRIBUTED=1. Once per process: a later command in the same process (train,
  then export) keeps the processes already joined.
  """
  if jax.distributed.is_initialized():
    return
  if all(k in os.environ for k in _ENV):
    jax.distributed.initialize(
      coordinator_address=os.environ["LR2VQ_COORDINATOR"],
      num_processes=int(os.environ["LR2VQ_NUM_PROCESSES"]),
      process_id=int(os.environ["LR2VQ_PROCESS_ID"]),
      initialization_timeout=int(os.environ.get("LR2VQ_INIT_TIMEOUT", "120")),
    )
  elif os.environ.get("LR2VQ_DISTRIBUTED") == "1":
    jax.distributed.initialize()
  else:
    return
  logging.info("process %d of %d", jax.process_index(), jax.process_count())
