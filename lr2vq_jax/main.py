"""Training entry point: `python -m lr2vq_jax.main --config configs/X.py --workdir DIR`.

Thin on purpose (flax examples): parse flags, set up processes, hand over to the pipeline.
"""

from __future__ import annotations

import os

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
  "config", None, "Experiment config file (get_config).", lock_config=True
)
flags.DEFINE_string("workdir", None, "Where checkpoints, metrics, artifacts and results.json go.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  import jax

  from lr2vq_jax.train import distributed, pipeline

  distributed.initialize()
  logging.info(
    "JAX %s: %d processes, %d devices", jax.__version__, jax.process_count(), jax.device_count()
  )
  os.makedirs(FLAGS.workdir, exist_ok=True)
  pipeline.run(FLAGS.config, FLAGS.workdir)


def run(argv: list[str] | None = None) -> None:
  app.run(main, argv=argv)


if __name__ == "__main__":
  run()
