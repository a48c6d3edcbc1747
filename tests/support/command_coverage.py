"""Which documented commands the suite runs, and how: one row per kind of command, first match wins.

A command no row matches fails tests/test_documented_commands.py; a `SKIP` row says why it cannot
run in a test, `VALIDATE` why only its flags and config are checked, `DRY_RUN` why it only prints
the commands it would run.
"""

from __future__ import annotations

import dataclasses
import re


@dataclasses.dataclass(frozen=True)
class Row:
  pattern: str  # re.search on the command as printed
  skip: str = ""  # why it is not run here ("" = run it)
  validate: str = ""  # why only its flags are parsed and its config validated, not trained
  dry: str = ""  # why it runs as a dry run (prints the commands it would run)
  env: bool = False  # an `export A=B ...` line: sets variables for the later DRY_RUN commands


def RUN(pattern: str) -> Row:
  return Row(pattern)


def VALIDATE(pattern: str, why: str) -> Row:
  assert why, pattern
  return Row(pattern, validate=why)


def SKIP(pattern: str, why: str) -> Row:
  assert why, pattern
  return Row(pattern, why)


def DRY_RUN(pattern: str, why: str) -> Row:
  assert why, pattern
  return Row(pattern, dry=why)


def ENV(pattern: str) -> Row:
  return Row(pattern, env=True)


COVERAGE = (
  SKIP(r"^make test(-fast)?$", "it is this test suite (test-fast: its tests not marked slow)"),
  SKIP(r"^make lint$", "ruff over the sources: .ci/run runs it before the tests"),
  SKIP(r"^pip install ", "installs packages from an index (make demo / make test install the venv)"),
  SKIP(r"^(\.venv/bin/)?python benchmarks/", "a benchmark: measured by its script (minutes to "
       "hours), reported in README/docs, not a test"),
  SKIP(r"^lr2vq prepare cifar10\b", "downloads CIFAR-10 (tests never download)"),
  SKIP(r"^lr2vq train --config configs/cifar10_", "needs CIFAR-10 prepared, a download; its "
       ":runlocal config is validated on mocked data (tests/train/test_pipeline.py)"),
  SKIP(r"^lr2vq estimate-dim --config CONFIG --float-dir RUN/float$",
       "synopsis of the README's `lr2vq estimate-dim --config configs/default.py --float-dir …`"),
  SKIP(r"^lr2vq estimate-dim --weights FILE$", "synopsis with a placeholder (FILE); print a "
       "concrete command to have it run here"),
  SKIP(r"^lr2vq [\w-]+( --[\w-]+)?$", "a mention of a subcommand or option in prose"),
  SKIP(r"…", "a synopsis in prose (… stands for any arguments)"),
  ENV(r"^export [A-Z_]+="),
  DRY_RUN(r"^launch/tpu_pod\.sh ", "creates and uses Cloud TPU VMs and a bucket: its gcloud "
          "commands are printed and checked (tests/scale/test_launch.py); what runs on the "
          "workers runs on gs:// against a local emulator in tests/gcs/"),
  SKIP(r"^gcloud storage cp .* gs://my-lr2vq/", "uploads to Google Cloud Storage; the "
       "destinations are the ones `launch/tpu_pod.sh` reads (test_tpu_section_paths_agree) and "
       "tests/gcs/ reads tars and weights from a bucket on a local emulator"),
  RUN(r"^make demo$"),
  RUN(r"^lr2vq train --config configs/imagenet_resnet18_large_lr2vq\.py "),  # = README's run
  VALIDATE(r"^lr2vq train --config configs/imagenet_", "the other 11 ImageNet configs: same "
           "command and code path as the one trained (~1.5 min each on 2 cores); their flags are "
           "parsed as `lr2vq train` does and the config validated against the prepared data"),
  RUN(r"^lr2vq (train|export|eval|report|estimate-dim|prepare|plan) "),
  RUN(r"^python -m lr2vq_jax\.main "),
)  # fmt: skip


def coverage_row(command: str) -> Row | None:
  return next((r for r in COVERAGE if re.search(r.pattern, command)), None)
