"""`lr2vq prepare imagenet2012`: one clear error per bad archive or too little disk, checked before
anything is written; on good archives (the tiny official-layout ImageNet) tfds's real builder."""

import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from lr2vq_jax import cli
from lr2vq_jax.train import prepare
from tests.support.tiny_imagenet import CMYK, PNG, write_tiny_imagenet


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> Path:
  manual = tmp_path_factory.mktemp("manual")
  write_tiny_imagenet(manual)
  return manual


def _copy(archives: Path, tmp_path: Path) -> Path:
  manual = tmp_path / "manual"
  shutil.copytree(archives, manual)
  return manual


def _prepare_fails(capsys, manual: Path, data_dir: Path, message: str) -> None:
  argv = ["prepare", "imagenet2012", "--manual_dir", str(manual), "--data_dir", str(data_dir)]
  assert cli.main(argv) == 2
  err = capsys.readouterr().err.splitlines()
  assert len(err) == 2 and message in err[0] and err[1].startswith("hint: "), err
  assert not data_dir.exists()  # checked before anything is written


def _truncate(path: Path, size: int) -> None:
  with open(path, "r+b") as f:
    f.truncate(size)


def test_missing_archive(archives, tmp_path, capsys):
  manual = _copy(archives, tmp_path)
  (manual / "ILSVRC2012_img_val.tar").unlink()
  _prepare_fails(capsys, manual, tmp_path / "tfds", "ILSVRC2012_img_val.tar is missing")


def test_partial_archives(archives, tmp_path, capsys):
  manual = _copy(archives, tmp_path)
  train = manual / "ILSVRC2012_img_train.tar"
  _truncate(train, train.stat().st_size // 2)  # a download cut inside a member
  _prepare_fails(capsys, manual, tmp_path / "tfds", "ILSVRC2012_img_train.tar is partial")
  manual = _copy(archives, tmp_path / "b")
  val = manual / "ILSVRC2012_img_val.tar"
  with tarfile.open(val) as tar:
    last = tar.getmembers()[-1]
  _truncate(val, last.offset_data + -(-last.size // 512) * 512)  # cut at a member boundary
  _prepare_fails(capsys, manual, tmp_path / "tfds", "no end-of-archive")


def test_corrupt_archives(archives, tmp_path, capsys):
  manual = _copy(archives, tmp_path)
  (manual / "ILSVRC2012_img_train.tar").write_bytes(np.random.default_rng(0).bytes(50_000))
  _prepare_fails(capsys, manual, tmp_path / "tfds", "is corrupt: not a readable tar")
  manual = _copy(archives, tmp_path / "b")  # a synset member that is not a tar
  with tarfile.open(manual / "ILSVRC2012_img_train.tar", "w") as tar:
    jpeg = manual / "n01440764.tar"
    jpeg.write_bytes(b"\xff\xd8" + bytes(2000))
    tar.add(jpeg, arcname="n01440764.tar")
  _prepare_fails(capsys, manual, tmp_path / "tfds", "its member n01440764.tar is not a tar")
  manual = _copy(archives, tmp_path / "c")  # validation images tfds would mislabel
  with tarfile.open(manual / "ILSVRC2012_img_val.tar", "w") as tar:
    img = manual / "x.JPEG"
    img.write_bytes(b"\xff\xd8" + bytes(100))
    tar.add(img, arcname="ILSVRC2012_val_00000007.JPEG")
  _prepare_fails(capsys, manual, tmp_path / "tfds", "must be numbered 1..1")


def test_too_little_disk(archives, tmp_path, capsys, monkeypatch):
  usage = shutil.disk_usage(tmp_path)
  need = prepare.required_bytes(
    [prepare.check_archive(str(archives / n), k) for k, n in (("train", prepare.TRAIN_TAR),
                                                             ("val", prepare.VAL_TAR))]
  )  # fmt: skip
  monkeypatch.setattr(prepare, "DISK_SLACK", usage.free - need + prepare.DISK_SLACK + 1)
  _prepare_fails(capsys, archives, tmp_path / "tfds", "not enough free disk under")


def test_prepare_builds_the_real_tfds_dataset(archives, tmp_path, capsys):
  import tensorflow as tf
  import tensorflow_datasets as tfds

  data_dir = tmp_path / "tfds"
  argv = ["prepare", "imagenet2012", "--manual_dir", str(archives), "--data_dir", str(data_dir)]
  assert cli.main(argv) == 0
  out = capsys.readouterr().out
  assert "archives ok: 4 synsets" in out and "train 14, validation 4 examples" in out
  builder = tfds.builder("imagenet2012", data_dir=str(data_dir))
  assert builder.is_prepared()
  records = sum(f.stat().st_size for f in Path(builder.data_dir).glob("*.tfrecord*"))
  archive_bytes = sum(f.stat().st_size for f in archives.iterdir())
  assert records <= prepare.DISK_FACTOR * archive_bytes  # the disk check's assumption
  ds = builder.as_dataset(split="train", decoders={"image": tfds.decode.SkipDecoding()})
  seen = {}
  for ex in tfds.as_numpy(ds):
    jpeg = ex["image"]
    assert jpeg[:2] == b"\xff\xd8"  # every record is a JPEG (the PNG re-encoded by tfds)
    image = tf.io.decode_jpeg(jpeg).numpy()
    assert image.ndim == 3 and image.shape[2] == 3  # the CMYK one converted to RGB
    seen[ex["file_name"].decode()] = image.shape
  assert CMYK[1] in seen and PNG[1] in seen and len(seen) == 14
  assert len({s[:2] for s in seen.values()}) >= 5  # realistic sizes and aspect ratios
  assert cli.main(argv) == 0  # a second run is a no-op
  assert "already prepared" in capsys.readouterr().out
  assert os.listdir(data_dir / "imagenet2012") == ["5.1.0"]
