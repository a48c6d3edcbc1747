"""README "Train on a Cloud TPU pod": the launcher lines dry-run and the bucket paths agree."""

from __future__ import annotations

import re
import shlex

from tests.support.command_coverage import coverage_row
from tests.support.command_sandbox import Sandbox, run_documented
from tests.support.documented_commands import readme_commands
from tests.support.paths import ROOT


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
