"""lr2vq_jax.paths: URLs stay URLs (never a local `gs:/…` folder), local paths become absolute,
and whole-file writes leave the old file or the new one (the gs:// side runs in tests/gcs/)."""

from __future__ import annotations

import os

from lr2vq_jax import paths


def test_urls_are_kept_and_joined_with_slashes():
  assert paths.is_remote("gs://b/run") and not paths.is_remote("/tmp/run")
  assert paths.as_str("gs://b/run/") == "gs://b/run"
  assert paths.join("gs://b/run", "float", "checkpoints") == "gs://b/run/float/checkpoints"
  assert paths.parent("gs://b/run/float") == "gs://b/run"
  assert paths.bucket_root("gs://b/run/float") == "gs://b"
  assert os.fspath(paths.resolve("gs://b/run") / "x") == "gs://b/run/x"


def test_local_paths_become_absolute(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert paths.as_str("run") == str(tmp_path / "run")
  assert paths.join("run", "float") == os.path.join("run", "float")
  assert paths.parent(os.path.join("run", "float")) == "run"


def test_whole_file_writes_replace_atomically(tmp_path):
  target = tmp_path / "d" / "results.json"
  paths.makedirs(target.parent)
  paths.write_text(target, "old")
  paths.write_bytes(target, b"new")
  assert target.read_bytes() == b"new"
  assert sorted(os.listdir(target.parent)) == ["results.json"]  # no temporary left behind


def test_checkpoint_dirs_of_gs_work_dirs_stay_urls():
  """The bug this layer exists for: os.path.abspath("gs://b/run") is <cwd>/gs:/b/run."""
  from lr2vq_jax.train import checkpointing

  assert checkpointing.checkpoint_dir("gs://b/run/float") == "gs://b/run/float/checkpoints"
  assert paths.as_str(checkpointing.checkpoint_dir("gs://b/run/float")).startswith("gs://")
