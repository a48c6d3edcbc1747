"""The `lr2vq` command line (also `python -m lr2vq_jax` and `python -m lr2vq_jax.cli`).

registry.py  `@command` registry and `CLIError` (one line of message, one of hint)
targets.py   the model + rules that report / estimate-dim / plan look at (--model or --config)
sizing.py    report, estimate-dim, plan: sizes, d̃ and budgets, no training
runs.py      train, export, eval, prepare: a config's runs and their artifacts
main.py      the parser from the registry, and `main`
"""

from lr2vq_jax.cli.main import build_parser, main
from lr2vq_jax.cli.registry import COMMANDS, CLIError, arg, command
from lr2vq_jax.cli.targets import MODELS, PRESET_PREFIX

__all__ = [
  "COMMANDS",
  "MODELS",
  "PRESET_PREFIX",
  "CLIError",
  "arg",
  "build_parser",
  "command",
  "main",
]
