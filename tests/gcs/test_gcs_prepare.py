"""`lr2vq prepare imagenet2012` from tars in a bucket into a gs:// data dir, missing tars and a
missing bucket, offline against the local GCS emulator (TensorFlow Datasets writes through TF's
GCS client)."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.support import cli_chain
from tests.support.gcs import objects
from tests.support.gcs.local_gcs import local_gcs
from tests.support.paths import child_pythonpath

pytest.importorskip("gcp_storage_emulator")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QUICK = os.path.join(ROOT, "configs", "default.py") + ":quick"
TARS = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
  """Tars in a bucket, then three commands one after the other in one process from one empty
  folder (tests/support/cli_chain): a prepare that succeeds, one whose tars are missing and a
  train into a missing bucket. {name: (exit code, stdout + stderr)}, the folder and the server."""
  from tests.support.tiny_imagenet import write_tiny_imagenet

  base = tmp_path_factory.mktemp("gcs_prepare")
  with local_gcs(str(base)) as server:
    local = base / "tars"
    write_tiny_imagenet(local)
    for tar in TARS:
      objects.write(server.url, "bucket", f"imagenet/{tar}", (local / tar).read_bytes())
    cwd = base / "cwd"
    cwd.mkdir()
    env = server.child_env({**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": child_pythonpath()})
    steps = [
      ("prepare", ["prepare", "imagenet2012", "--manual_dir", "gs://bucket/imagenet",
                   "--data_dir", "gs://bucket/tensorflow_datasets"]),
      ("missing", ["prepare", "imagenet2012", "--manual_dir", "gs://bucket/none",
                   "--data_dir", "gs://bucket/tfds2"]),
      ("train", ["train", f"--config={QUICK}", "--workdir=gs://no-such-bucket/run"]),
    ]  # fmt: skip
    proc = subprocess.run(cli_chain.command(steps, keep_going=True), cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    outs, errs = cli_chain.split(proc.stdout), cli_chain.split(proc.stderr)
    found = {n: (errs[n][0], outs.get(n, (None, ""))[1] + errs[n][1]) for n in errs}
    names = objects.list_names(server.url, "bucket", "tensorflow_datasets/imagenet2012/")
  return found, cwd, names


def test_prepare_reads_tars_from_a_bucket_and_writes_tfrecords_there(ran):
  found, cwd, names = ran
  rc, out = found["prepare"]
  assert rc == 0, out[-3000:]
  assert "train 14, validation 4 examples" in out, out[-3000:]
  assert "use it with --config.data.data_dir=gs://bucket/tensorflow_datasets" in out
  records = [n for n in names if ".tfrecord" in n]
  assert any("train.tfrecord" in n for n in records) and any("validation" in n for n in records)
  assert any(n.endswith("dataset_info.json") for n in names)
  assert os.listdir(cwd) == []  # nothing local: no `gs:` folder, no downloads dir


def test_prepare_missing_tars_in_a_bucket_is_one_error(ran):
  rc, out = ran[0]["missing"]
  assert rc == 2, out[-3000:]
  assert "ILSVRC2012_img_train.tar is missing: no file gs://bucket/none/" in out
  assert "Traceback" not in out


def test_train_into_a_missing_bucket_fails_fast_and_clearly(ran):
  """TensorFlow's makedirs would retry under a missing bucket forever: one error instead."""
  (rc, out), cwd = ran[0]["train"], ran[1]
  assert rc not in (0, None), out[-3000:]
  assert "bucket gs://no-such-bucket does not exist" in out, out[-3000:]
  assert "gcloud storage buckets create gs://no-such-bucket" in out
  assert os.listdir(cwd) == []
