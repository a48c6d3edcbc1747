"""Training entry point: `python -m lr2vq_jax.main --config configs/X.py --workdir DIR`.

Thin on purpose (flax examples): parse flags, set up processes, hand over to the pipeline.
"""

from __future__ import annotations

import sys
import traceback

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
  "config", None, "Experiment config file (get_config).", lock_config=True
)
flags.DEFINE_string("workdir", None, "Where checkpoints, metrics, artifacts and results.json go.")
flags.DEFINE_bool("verbose", False, "Show the traceback of an error (default: one line + hint).")
flags.DEFINE_bool(
  "show_config", False, "Print every config field (after overrides) and the rules; run nothing."
)
flags.DEFINE_bool(
  "allow_config_change",
  False,
  "Continue a work dir whose stages ran with another config (default: stop and name the fields).",
)
flags.mark_flags_as_required(["config"])
FLAG_HINT = (
  "flags are --config FILE[:arg] --workdir DIR [--config.<field>=<value> ...], each field one "
  "the config has; `lr2vq train --config FILE --show-config` prints them all"
)


def _fail(message: str, hint: str, code: int, verbose: bool) -> None:
  """One line of error and one of hint on stderr (the traceback too with --verbose); exits."""
  if verbose:
    traceback.print_exc()
  print(f"lr2vq train: error: {' '.join(message.split())}", file=sys.stderr)
  print(f"hint: {hint}", file=sys.stderr)
  sys.exit(code)


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if FLAGS.show_config:
    show_config(FLAGS.config)
    return
  if not FLAGS.workdir:
    _fail("--workdir is required", FLAG_HINT, 2, FLAGS.verbose)
  import jax

  from lr2vq_jax.train import distributed, pipeline

  logging.set_verbosity(FLAGS.verbosity if FLAGS["verbosity"].present else logging.WARNING)
  distributed.initialize()
  logging.info(
    "JAX %s: %d processes, %d devices", jax.__version__, jax.process_count(), jax.device_count()
  )
  from lr2vq_jax.train.checkpointing import CheckpointMismatchError
  from lr2vq_jax.train.imagenet_source import ImageNetNotPreparedError
  from lr2vq_jax.train.run_config import ConfigChangedError
  from lr2vq_jax.train.trainer import NonFiniteError
  from lr2vq_jax.train.validate import ConfigError

  try:  # validates the config (and a rerun's earlier config) before writing anything
    pipeline.run(FLAGS.config, FLAGS.workdir, allow_config_change=FLAGS.allow_config_change)
  except (ConfigError, ConfigChangedError) as e:
    _fail(str(e), e.hint, 2, FLAGS.verbose)
  except CheckpointMismatchError as e:
    _fail(str(e), e.hint, 2, FLAGS.verbose)
  except NonFiniteError as e:
    hint = "lower the stage's lr or set its grad_clip; rerunning resumes from the last good step"
    _fail(str(e), hint, 1, FLAGS.verbose)
  except (ImageNetNotPreparedError, FileNotFoundError) as e:
    _fail(str(e), "rerun with --verbose for the traceback", 2, FLAGS.verbose)


def show_config(config) -> None:
  """Every field of the config as the run would see it (after overrides), then its rules."""
  import json

  from lr2vq_jax.train.config import config_rules
  from lr2vq_jax.train.run_config import flatten

  for name, value in sorted(flatten(json.loads(config.to_json())).items()):
    print(f"{name} = {value!r}")
  try:
    rules = config_rules(config)
  except (ValueError, TypeError) as e:
    _fail(str(e), "fix config.preset / rules / k / m / d", 2, FLAGS.verbose)
  print("# rules (first match wins):")
  for rule in rules:
    print(f"#   {rule!r}")
  print("# override any field with --config.<field>=<value>, e.g. --config.k=32 --config.m=4")


def _config_spec(argv: list[str]) -> str | None:
  """The value of --config in `argv` (`--config=X` or `--config X`), if given."""
  for i, a in enumerate(argv):
    if a.startswith("--config="):
      return a.partition("=")[2]
    if a == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing whose errors (bad value, unknown field, bad config file) are one line."""
  from lr2vq_jax.train.config_file import ConfigLoadError, load_config

  spec = _config_spec(argv[1:])
  if spec is not None:  # load it once first: absl's loader would show a traceback
    try:
      load_config(spec)
    except ConfigLoadError as e:
      _fail(str(e), e.hint, 2, "--verbose" in argv)
  try:
    return FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    message = lines[-1] if lines else type(e).__name__
    if isinstance(e, AttributeError | KeyError):
      message = f"no config field {message.strip(chr(34))} (overrides can only set existing fields)"
    _fail(message, FLAG_HINT, 2, "--verbose" in argv)


def run(argv: list[str] | None = None) -> None:
  argv = list(sys.argv if argv is None else argv)
  dashed = {"--show-config": "--show_config", "--allow-config-change": "--allow_config_change"}
  app.run(main, argv=[dashed.get(a, a) for a in argv], flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
