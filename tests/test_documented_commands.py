"""The README and the config headers as an executable contract: every command line they print runs.

`documented_commands()` extracts every command: the lines of README.md's fenced ```bash blocks,
README inline code that starts with a program (`lr2vq …`, `python …`, `make …`, `pip …`), and
the `Run…:` lines of each configs/*.py docstring (continuation lines joined). Each must match one
row of COVERAGE (tests/support/command_coverage.py), first match wins; a command no row matches
FAILS `test_every_documented_command_is_covered`, so a command added to the README later cannot be silently skipped: give it a `RUN`
row (most `lr2vq`/`python -m lr2vq_jax` commands already match one) or, only where it cannot run
here, a `SKIP` row that says why.

RUN commands run as printed, in document order, from a sandbox folder that holds `configs/` and
`benchmarks/` of this checkout, with this environment's `lr2vq` first on PATH, `python` = this
interpreter, and these substitutions (what makes them small, offline and local):
* `--config configs/X.py` → `configs/X.py:quick` or `:runlocal` (whichever the config's header
  offers); a config given with its own argument instead gets every stage shortened to 2 steps,
  and so does a `:quick` training given its own `--config.d`/`rules`/`m`/`k` (programs of its own,
  shared with no other run: tests/support/command_sandbox.py `SHORT`);
* `gs://BUCKET/…` → `runs/…`; `/path/…` and `/data/…` → the sandbox's tiny ImageNet (prepared by
  `lr2vq prepare` from the official tar layout), its tars and a torchvision-layout weight file;
* `make demo` → the Makefile's demo recipe (so with `:quick` too).
A train command whose arguments repeat an earlier one but for --workdir reuses that run (a link).
The sandbox, once made, waits for the session's quick run (tests/conftest.py), so that `make
demo`, in its own empty work dir, loads the programs of the stages they share from the suite's
compilation cache. A command that needs nothing the others make starts ahead of its turn in the
background (AHEAD, with the sandbox; AFTER_DEMO, once `make demo` is done), its test waiting for it
and checking it the same way; a training no later command reads (DEFERRED) starts in its turn in the
background, the commands after it running meanwhile, and its test comes last.
DRY_RUN commands (the cloud launchers) run with `--dry-run` semantics (DRY_RUN=1) and the
variables of the README's `export` lines before them; they must print the gcloud commands.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator

import pytest

from tests.support.command_coverage import coverage_row
from tests.support.command_sandbox import Sandbox, make_sandbox, run_documented, start_documented
from tests.support.documented_commands import documented_commands, readme_commands


@pytest.fixture(scope="module")
def box(tmp_path_factory, request) -> Iterator[Sandbox]:
  """The sandbox: tiny ImageNet prepared, torchvision-layout weights written; the commands that
  need nothing the others make and nothing from the suite's compilation cache start at once in
  the background (AHEAD). Then it waits for the session's quick run: `make demo` trains the same
  float, lowrank and quantize stages (same config, flags and environment), so its run, fresh as
  printed, loads their programs from the suite's compilation cache instead of compiling them a
  second time beside the quick run."""
  box = make_sandbox(tmp_path_factory.mktemp("sandbox"))
  for command in AHEAD:
    start_documented(box, command)
  request.getfixturevalue("quick_run")  # waited for, not read: the demo's work dir starts empty
  yield box
  box.close()


def test_every_documented_command_is_covered():
  found = documented_commands()
  assert len(found["README.md"]) >= 8 and all(found[k] for k in found if "imagenet" in k)
  missing = [f"{src}: {c}" for src, cmds in found.items() for c in cmds if coverage_row(c) is None]
  assert not missing, (
    "documented commands no COVERAGE row of tests/support/command_coverage.py matches (give each "
    "a RUN row, or a SKIP row saying why it cannot run here):\n  " + "\n  ".join(missing)
  )


def test_extraction_sees_continuations_and_comments(tmp_path):
  readme = tmp_path / "README.md"
  readme.write_text("```bash\nlr2vq a --x 1 \\\n  --y 2   # note\n```\nrun `lr2vq b --z`.\n")
  assert readme_commands(readme) == ["lr2vq a --x 1 --y 2", "lr2vq b --z"]


README_COMMANDS = documented_commands()["README.md"]


def _documented(prefix: str, sources: tuple[str, ...] | None = None) -> list[str]:
  """The documented commands (of `sources`, default all) that start with `prefix`."""
  found = [
    c
    for src, cmds in documented_commands().items()
    if sources is None or src in sources
    for c in cmds
    if c.startswith(prefix)
  ]
  assert found, f"no documented command starts with {prefix!r}"
  return list(dict.fromkeys(found))


# Commands that need nothing the commands before them make start ahead of their turn, in the
# background (their tests then wait for them and check them as if they ran in their turn), so that
# they overlap the short digits commands instead of adding their whole length to the module's (one
# xdist worker's) wall time. With the sandbox (AHEAD): the ImageNet smoke run (a 1/8-width
# ResNet-18 compiled three ways), which reads only the sandbox's prepared data and weights. Once
# `make demo` is done (AFTER_DEMO): the README's digits ablation run (configs/digits_ablations.py's
# header prints the same one: its test waits for this run); started with the sandbox it would slow
# the session's quick run that the sandbox and other modules wait for, beside the demo its test.
AHEAD = [
  *_documented("lr2vq train --config configs/imagenet_resnet18_large_lr2vq.py ", ("README.md",)),
]
AFTER_DEMO = [
  *_documented("python -m lr2vq_jax.main --config configs/digits_ablations.py:", ("README.md",)),
]
# Trainings whose work dirs no later README command reads: they start in their turn, in the
# background, and the commands after them run meanwhile; their tests come last and wait for them.
DEFERRED = [
  i
  for i, c in enumerate(README_COMMANDS)
  if re.match(r"lr2vq train .*--workdir runs/(x_d2|planned) ", c)
]


def run_readme_upto(box: Sandbox, index: int) -> str | None:
  """Runs the README's commands up to `index` in document order, each once; that one's stdout.
  A DEFERRED one before `index` is only started (in the background)."""
  for i in range(index + 1):
    command = README_COMMANDS[i]
    if i in box.outputs:
      continue
    if i in DEFERRED and i < index:
      if command not in box.started:
        start_documented(box, command)
      continue
    start = time.monotonic()
    box.outputs[i] = run_documented(box, command)
    print(f"{time.monotonic() - start:6.1f} s  {command}")  # -s: where time goes
    if command == "make demo":
      for later in AFTER_DEMO:
        if later not in box.started and README_COMMANDS.index(later) > i:
          start_documented(box, later)
  return box.outputs[index]


def _command_id(index: int) -> str:
  return f"{index:02d}-" + re.sub(r"\W+", "_", README_COMMANDS[index])[:48].strip("_")


@pytest.mark.slow
@pytest.mark.parametrize(
  "index",
  [i for i in range(len(README_COMMANDS)) if i not in DEFERRED] + DEFERRED,
  ids=_command_id,
)
def test_readme_command_runs(box, index):
  """One README command as printed (after the ones before it, which it may depend on)."""
  run_readme_upto(box, index)


@pytest.mark.slow
def test_readme_imagenet_path_ran_every_stage(box):
  sandbox = box
  run_readme_upto(box, len(README_COMMANDS) - 1)
  for i in DEFERRED:
    run_readme_upto(box, i)
  outputs = {README_COMMANDS[i]: out for i, out in sandbox.outputs.items()}
  ran = [c for c, out in outputs.items() if out is not None]
  assert any(c.startswith("lr2vq eval") for c in ran) and any("imagenet" in c for c in ran)
  imagenet_eval = [
    out for c, out in outputs.items() if "imagenet" in c and c.startswith("lr2vq eval")
  ]
  assert imagenet_eval and "on imagenet2012/test: top-1" in imagenet_eval[0]
  # The ImageNet run went through every stage on the prepared TFRecords (JPEG decoding included).
  run = sandbox.root / "runs" / "imagenet_r18_lr2vq"
  for stage in ("float", "lowrank", "quantize"):
    assert os.listdir(run / stage / "checkpoints"), stage
    assert "eval_top1" in (run / stage / "metrics.jsonl").read_text(), stage
  assert (run / "quantize" / "artifact" / "manifest.json").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("source", [k for k in documented_commands() if k != "README.md"])
def test_config_header_commands_run(box, source):
  for command in documented_commands()[source]:
    run_documented(box, command)
