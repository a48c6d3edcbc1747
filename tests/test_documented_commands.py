"""The README and the config headers as an executable contract: every command line they print runs.

`documented_commands()` extracts every command: the lines of README.md's fenced ```bash blocks,
README inline code that starts with a program (`lr2vq …`, `python …`, `make …`, `pip …`), and
the `Run…:` lines of each configs/*.py docstring (continuation lines joined). Each must match one
row of COVERAGE, first match wins; a command no row matches FAILS `test_every_documented_command
_is_covered`, so a command added to the README later cannot be silently skipped: give it a `RUN`
row (most `lr2vq`/`python -m lr2vq_jax` commands already match one) or, only where it cannot run
here, a `SKIP` row that says why.

RUN commands run as printed, in document order, from a sandbox folder that holds `configs/` and
`benchmarks/` of this checkout, with this environment's `lr2vq` first on PATH, `python` = this
interpreter, and these substitutions (what makes them small, offline and local):
* `--config configs/X.py` → `configs/X.py:quick` or `:runlocal` (whichever the config's header
  offers); a config given with its own argument instead gets every stage shortened to 4 steps;
* `gs://BUCKET/…` → `runs/…`; `/path/…` and `/data/…` → the sandbox's tiny ImageNet (prepared by
  `lr2vq prepare` from the official tar layout), its tars and a torchvision-layout weight file;
* `make demo` → the Makefile's demo recipe (so with `:quick` too).
A train command whose arguments repeat an earlier one but for --workdir reuses that run (a link).
DRY_RUN commands (the cloud launchers) run with `--dry-run` semantics (DRY_RUN=1) and the
variables of the README's `export` lines before them; they must print the gcloud commands.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 600
PROGRAMS = ("lr2vq ", "python ", ".venv/bin/", "make ", "pip ", "tfds ")


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


# ----------------------------------------------------------------------------- extraction


def _logical_lines(text: str) -> list[str]:
  out, cur = [], ""
  for raw in text.splitlines():
    line = raw.strip()
    cur = f"{cur} {line[:-1].strip()}".strip() if line.endswith("\\") else f"{cur} {line}".strip()
    if not line.endswith("\\"):
      out.append(cur)
      cur = ""
  return [ln for ln in out if ln]


def _strip_comment(line: str) -> str:
  return re.sub(r"\s+#\s.*$", "", line).strip()


def readme_commands(path: Path = ROOT / "README.md") -> list[str]:
  text = path.read_text(encoding="utf-8")
  cmds = []
  for block in re.findall(r"```(?:bash|sh|shell|console)\n(.*?)```", text, flags=re.S):
    cmds += [_strip_comment(ln) for ln in _logical_lines(block) if not ln.startswith("#")]
  prose = re.sub(r"```.*?```", "", text, flags=re.S)
  cmds += [c for c in re.findall(r"`([^`\n]+)`", prose) if c.startswith(PROGRAMS)]
  return [c for c in cmds if c]


def header_commands(path: Path) -> list[str]:
  """Commands on the `Run…:` lines of a config's docstring (and `make demo (= …)` forms)."""
  doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
  cmds, lines = [], doc.splitlines()
  for i, line in enumerate(lines):
    m = re.match(r"^Run[\w ]*:\s+(.*)$", line)
    if not m:
      continue
    text = m.group(1)
    while text.rstrip().endswith("\\") and i + 1 < len(lines):
      i += 1
      text = text.rstrip()[:-1] + " " + lines[i].strip()
    first = re.split(r"\s{2,}\(|\s+\(=", text)[0].strip()
    cmds.append(first)
    cmds += re.findall(r"\(=\s*([^)]+)\)", text)  # `make demo   (= python -m …)`
  return [c.strip() for c in cmds]


def documented_commands() -> dict[str, list[str]]:
  """{source file: commands in document order} for README.md and every configs/*.py."""
  out = {"README.md": readme_commands()}
  for path in sorted((ROOT / "configs").glob("*.py")):
    out[f"configs/{path.name}"] = header_commands(path)
  return out


def coverage_row(command: str) -> Row | None:
  return next((r for r in COVERAGE if re.search(r.pattern, command)), None)


def test_every_documented_command_is_covered():
  found = documented_commands()
  assert len(found["README.md"]) >= 8 and all(found[k] for k in found if "imagenet" in k)
  missing = [f"{src}: {c}" for src, cmds in found.items() for c in cmds if coverage_row(c) is None]
  assert not missing, (
    "documented commands no COVERAGE row of tests/test_documented_commands.py matches (give each "
    "a RUN row, or a SKIP row saying why it cannot run here):\n  " + "\n  ".join(missing)
  )


def test_extraction_sees_continuations_and_comments(tmp_path):
  readme = tmp_path / "README.md"
  readme.write_text("```bash\nlr2vq a --x 1 \\\n  --y 2   # note\n```\nrun `lr2vq b --z`.\n")
  assert readme_commands(readme) == ["lr2vq a --x 1 --y 2", "lr2vq b --z"]


# ----------------------------------------------------------------------------- running


@dataclasses.dataclass
class Sandbox:
  root: Path
  data_dir: Path
  manual_dir: Path
  weights: dict[str, Path]
  runs: dict[str, str] = dataclasses.field(default_factory=dict)  # train args → workdir
  outputs: dict[int, str | None] = dataclasses.field(default_factory=dict)  # README index → stdout
  exported: dict[str, str] = dataclasses.field(default_factory=dict)  # README `export` lines

  def env(self) -> dict[str, str]:
    path = os.path.dirname(sys.executable)  # this environment's `lr2vq` console script
    return {
      **{k: v for k, v in os.environ.items() if not k.startswith("LR2VQ_")},
      "PATH": f"{path}{os.pathsep}{os.environ.get('PATH', '')}",
      "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
      "JAX_PLATFORMS": "cpu",
      "TF_CPP_MIN_LOG_LEVEL": "2",
    }


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> Sandbox:
  from tests.support.tiny_imagenet import write_tiny_imagenet
  from tests.support.torchvision_weights import write_torchvision_weights

  root = tmp_path_factory.mktemp("sandbox")
  for name in ("configs", "benchmarks", "launch"):
    (root / name).symlink_to(ROOT / name)
  manual = root / "data" / "imagenet_tars"
  write_tiny_imagenet(manual)
  weights = {
    m: write_torchvision_weights(root / "data" / f"{m}_torchvision.safetensors", f"{m}_width8")
    for m in ("resnet18", "resnet50")
  }
  box = Sandbox(root, root / "data" / "tensorflow_datasets", manual, weights)
  out = _run(box, ["lr2vq", "prepare", "imagenet2012", "--manual_dir", str(manual),
                   "--data_dir", str(box.data_dir)])  # fmt: skip
  assert "train 14, validation 4 examples" in out
  return box


def _config_suffix(spec: str) -> tuple[str, list[str]]:
  """`configs/X.py` → (`configs/X.py:quick|:runlocal`, []) or (spec, step-shortening overrides)."""
  path, _, arg = spec.partition(":")
  header = (ROOT / path).read_text(encoding="utf-8")
  for mode in ("quick", "runlocal"):
    if not arg and f"{path}:{mode}" in header:
      return f"{path}:{mode}", []
  stages = ("float", "lowrank", "quantize", "pq", "dkm")
  return spec, [f"--config.{s}.num_steps=4" for s in stages] + ["--config.quant.kmeans_iters=2"]


def _substitute(box: Sandbox, argv: list[str]) -> list[str]:
  out, extra = [], []
  for i, a in enumerate(argv):
    prev = argv[i - 1] if i else ""
    if a.startswith("--config=configs/") or (prev == "--config" and a.startswith("configs/")):
      head = "--config=" if a.startswith("--config=") else ""
      spec, extra = _config_suffix(a[len(head) :])
      a = head + spec
    a = re.sub(r"gs://BUCKET/", "runs/", a)
    for prefix in ("/path/", "/data/"):
      if prefix in a and not a.split(prefix, 1)[0].endswith(str(box.root)):
        name = a.split(prefix, 1)[1]
        model = name.split("_torchvision")[0]
        target = {
          "tensorflow_datasets": box.data_dir,
          "imagenet_tars": box.manual_dir,
        }.get(name) or box.weights.get(model)
        assert target is not None, f"no sandbox file for {prefix}{name}"
        a = a.split(prefix, 1)[0] + str(target)
    out.append(a)
  return out + extra


def _link_repeated_run(box: Sandbox, argv: list[str]) -> bool:
  """A train whose arguments repeat an earlier one's but for --workdir: link that workdir."""
  if argv[:2] != ["lr2vq", "train"] and argv[1:3] != ["-m", "lr2vq_jax.main"]:
    return False
  workdir = next((a.split("=", 1)[1] for a in argv if a.startswith("--workdir=")), None)
  if workdir is None and "--workdir" in argv:
    workdir = argv[argv.index("--workdir") + 1]
  rest = [a for a in argv if a not in (workdir, "--workdir", f"--workdir={workdir}")]
  key = " ".join(rest[2:] if argv[0] == "lr2vq" else rest[3:])
  if key in box.runs and workdir:
    target = box.root / workdir
    if box.runs[key] == workdir:  # the very same command again: its run is done
      return True
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(box.root / box.runs[key], target_is_directory=True)
    return True
  box.runs[key] = workdir or ""
  return False


def _run(box: Sandbox, argv: list[str]) -> str:
  proc = subprocess.run(argv, cwd=box.root, env=box.env(), capture_output=True, text=True,
                        timeout=TIMEOUT)  # fmt: skip
  text = proc.stdout + proc.stderr
  assert proc.returncode == 0, f"`{shlex.join(argv)}` exited {proc.returncode}:\n{text[-4000:]}"
  assert "Traceback" not in text, text[-4000:]
  return proc.stdout


def _validate(box: Sandbox, argv: list[str]) -> str:
  """`lr2vq train` flag parsing (absl + config overrides) and config validation, in-process."""
  from absl import flags
  from ml_collections import config_flags

  from lr2vq_jax.train.validate import validate_config

  flag_argv = ["lr2vq train", *argv[2:]]
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, flag_values=fv, sys_argv=flag_argv)
  flags.DEFINE_string("workdir", None, "", flag_values=fv)
  fv(flag_argv)
  cwd = os.getcwd()
  try:
    os.chdir(box.root)
    validate_config(fv.config, str(box.root / fv.workdir))
  finally:
    os.chdir(cwd)
  return ""


def _exports(command: str) -> dict[str, str]:
  """{name: value} of an `export A=B C=D` line."""
  return dict(word.split("=", 1) for word in shlex.split(command)[1:])


def _dry_run(box: Sandbox, command: str) -> str:
  """A launcher line with DRY_RUN=1 and the exported variables: it must print gcloud commands."""
  env = {**box.env(), **box.exported, "DRY_RUN": "1"}
  proc = subprocess.run(["bash", "-c", command], cwd=box.root, env=env, capture_output=True,
                        text=True, timeout=60)  # fmt: skip
  assert proc.returncode == 0, f"`{command}` (dry run) exited {proc.returncode}:\n{proc.stderr}"
  printed = [ln for ln in proc.stdout.splitlines() if ln.startswith("+ ")]
  assert printed and all(ln.startswith(("+ gcloud ", "+ git ")) for ln in printed), proc.stdout
  return proc.stdout


def _makefile_recipe(target: str) -> str:
  lines = (ROOT / "Makefile").read_text(encoding="utf-8").splitlines()
  start = next(i for i, ln in enumerate(lines) if ln.startswith(f"{target}:"))
  recipe = lines[start + 1].strip()
  return recipe.replace("$(BIN)/python", "python")


def run_documented(box: Sandbox, command: str) -> str | None:
  """Runs one documented command (COVERAGE says how); its stdout, or None when skipped."""
  row = coverage_row(command)
  assert row is not None, command
  if row.skip:
    return None
  if row.env:
    box.exported.update(_exports(command))
    return ""
  if row.dry:
    return _dry_run(box, command)
  if row.validate:
    return _validate(box, _substitute(box, shlex.split(command)))
  if command.startswith("make "):
    command = _makefile_recipe(command.split()[1])
  argv = _substitute(box, shlex.split(command))
  if argv[0] == "python":
    argv[0] = sys.executable
  if _link_repeated_run(box, argv):
    return ""
  return _run(box, argv)


README_COMMANDS = documented_commands()["README.md"]


def run_readme_upto(box: Sandbox, index: int) -> str | None:
  """Runs the README's commands up to `index` in document order, each once; that one's stdout."""
  for i in range(index + 1):
    if i not in box.outputs:
      start = time.monotonic()
      box.outputs[i] = run_documented(box, README_COMMANDS[i])
      print(f"{time.monotonic() - start:6.1f} s  {README_COMMANDS[i]}")  # -s: where time goes
  return box.outputs[index]


def _command_id(index: int) -> str:
  return f"{index:02d}-" + re.sub(r"\W+", "_", README_COMMANDS[index])[:48].strip("_")


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(README_COMMANDS)), ids=_command_id)
def test_readme_command_runs(sandbox, index):
  """One README command as printed (after the ones before it, which it may depend on)."""
  run_readme_upto(sandbox, index)


@pytest.mark.slow
def test_readme_imagenet_path_ran_every_stage(sandbox):
  run_readme_upto(sandbox, len(README_COMMANDS) - 1)
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
def test_config_header_commands_run(sandbox, source):
  for command in documented_commands()[source]:
    run_documented(sandbox, command)


def test_tpu_section_dry_runs_and_paths_agree(tmp_path):
  """README "Train on a Cloud TPU pod": each launcher line dry-runs with the section's variables,
  and the bucket paths agree: the tars and weights are uploaded where `prepare` and `run` read."""
  for name in ("configs", "launch"):
    (tmp_path / name).symlink_to(ROOT / name)
  box = Sandbox(tmp_path, tmp_path, tmp_path, {})
  section = re.search(r"## Train on a Cloud TPU pod\n(.*?)\n## ", ROOT.joinpath("README.md")
                      .read_text(encoding="utf-8"), flags=re.S).group(1)  # fmt: skip
  tmp_readme = tmp_path / "README.md"
  tmp_readme.write_text(section, encoding="utf-8")
  uploads, remote = {}, []
  for command in readme_commands(tmp_readme):
    row = coverage_row(command)
    assert row is not None and (row.env or row.dry or row.skip), command
    if row.skip:  # the uploads (and mentions of subcommands in the prose)
      words = shlex.split(command)
      if words[:3] == ["gcloud", "storage", "cp"]:
        uploads.update({name: words[-1] for name in words[3:-1]})
      continue
    out = run_documented(box, command)
    for line in out.splitlines():
      words = shlex.split(line[2:])
      if "--command" in words:
        remote.append(shlex.split(words[words.index("--command") + 1]))
  bucket = box.exported["BUCKET"]
  prepare = next(w for w in remote if "prepare" in w)
  manual = prepare[prepare.index("--manual_dir") + 1]
  for tar in ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"):
    assert uploads[tar].rstrip("/") == manual, (tar, uploads[tar], manual)
  train = next(w for w in remote if "lr2vq_jax.main" in w)
  init = next(w.split("=", 1)[1] for w in train if w.startswith("--config.float.init_from="))
  weights = init.rsplit("/", 1)
  assert uploads[weights[1]].rstrip("/") == weights[0]
  workdir = train[train.index("--workdir") + 1]
  data_dir = prepare[prepare.index("--data_dir") + 1]
  assert f"TFDS_DATA_DIR={data_dir}" in train
  assert workdir.startswith(bucket + "/") and data_dir.startswith(bucket + "/")
  assert f"`{workdir}`" in section.replace("\n", " ")  # the prose names the run's folder
