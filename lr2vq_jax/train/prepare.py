"""`lr2vq prepare`: build a tfds dataset once, before training (imagenet2012 from its two tars).

ImageNet is checked before anything is written: both official archives present, complete (every
member's data inside the file, the end-of-archive marker after the last one, the published byte
count when it holds all 1,000 synsets) and well formed (train: one `nXXXXXXXX.tar` per known
synset, each starting with a valid tar header; val: `ILSVRC2012_val_%08d.JPEG` numbered from 1, as
tfds labels them by position), and enough free disk under data_dir. Then tfds's builder API (no
apache_beam, no downloads) streams the tars into TFRecords, with a progress bar per split; tfds
writes into a temporary folder and renames it at the end, so a failed build leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import tarfile
import time
from collections.abc import Callable

from lr2vq_jax import paths

TRAIN_TAR, VAL_TAR = "ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"
NUM_SYNSETS, NUM_VAL = 1000, 50_000
# Free space asked for, as a multiple of the archives: the TFRecords hold the same JPEG bytes
# (tfds re-encodes only the 22 CMYK and 1 PNG files) and tfds's shuffler deletes each temporary
# bucket once it is written out, so the peak is the records plus one bucket; the tiny test set's
# records are 0.87x its archives (tar headers and padding dropped) — 1.1x + 1 GiB is a margin.
DISK_FACTOR, DISK_SLACK = 1.1, 1 << 30
_SYNSET = re.compile(r"^n\d{8}\.tar$")
_VAL_NAME = re.compile(r"^ILSVRC2012_val_(\d{8})\.JPEG$")
_REDOWNLOAD = "download it again (image-net.org) and check its size and sha256"


class PrepareError(Exception):
  """A preparation that cannot start or failed: one line of message, one line of hint."""

  def __init__(self, message: str, hint: str):
    super().__init__(message)
    self.hint = hint


@dataclasses.dataclass(frozen=True)
class Archive:
  """One checked tar: its path, byte size and member count."""

  path: str
  size: int
  members: int


def _tfds_file(relative: str) -> str:
  import tensorflow_datasets as tfds

  return os.fspath(tfds.core.tfds_path(relative))


def official_sizes() -> dict[str, int]:
  """Byte counts of the two archives as published (tfds's imagenet2012 checksums file)."""
  sizes = {}
  with open(_tfds_file("datasets/imagenet2012/checksums.tsv"), encoding="utf-8") as f:
    for line in f:
      url, size, _ = line.split()
      sizes[url.rsplit("/", 1)[-1]] = int(size)
  return sizes


def _synsets() -> set[str]:
  with open(_tfds_file("datasets/imagenet2012/labels.txt"), encoding="utf-8") as f:
    return {line.strip() for line in f if line.strip()}


def _members(path: str) -> list[tarfile.TarInfo]:
  """The members of a tar from their headers alone; partial or corrupt tars are PrepareErrors."""
  size = paths.resolve(path).stat().length
  hint = _REDOWNLOAD
  try:
    with paths.resolve(path).open("rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
      members = tar.getmembers()
  except (tarfile.TarError, EOFError, OSError) as e:
    if "unexpected end of data" in str(e):  # tarfile's word for a member cut short
      raise PrepareError(
        f"{path} is partial: it ends inside a member ({size:,} bytes)", hint
      ) from None
    raise PrepareError(f"{path} is corrupt: not a readable tar ({e})", hint) from None
  if not members:
    raise PrepareError(f"{path} is corrupt: a tar with no files", hint)
  last = max(members, key=lambda m: m.offset_data)
  end = last.offset_data + last.size
  if end > size:
    raise PrepareError(
      f"{path} is partial: {last.name} needs bytes up to {end:,} but the file has {size:,}", hint
    )
  with paths.resolve(path).open("rb") as f:  # a tar ends with zero blocks after its last member
    f.seek(-(-end // 512) * 512)
    marker = f.read(1024)
  if len(marker) < 512 or marker.strip(b"\0"):
    raise PrepareError(f"{path} is partial: it stops after {last.name} (no end-of-archive)", hint)
  return members


def _check_train(path: str, members: list[tarfile.TarInfo]) -> None:
  """One `n########.tar` per known synset, each starting with a valid tar header."""
  synsets = _synsets()
  bad = [m.name for m in members if not (_SYNSET.match(m.name) and m.name[:-4] in synsets)]
  if bad:
    raise PrepareError(
      f"{path} is corrupt: {bad[0]!r} is not a synset tar n########.tar", _REDOWNLOAD
    )
  with paths.resolve(path).open("rb") as f:
    for m in members:
      f.seek(m.offset_data)
      try:
        tarfile.TarInfo.frombuf(f.read(512), tarfile.ENCODING, "surrogateescape")
      except tarfile.HeaderError as e:
        raise PrepareError(
          f"{path} is corrupt: its member {m.name} is not a tar ({e})", _REDOWNLOAD
        ) from None


def _check_val(path: str, members: list[tarfile.TarInfo]) -> None:
  """`ILSVRC2012_val_%08d.JPEG` numbered 1..N (tfds labels them by position in its list)."""
  numbers = []
  for m in members:
    match = _VAL_NAME.match(m.name)
    if not match:
      raise PrepareError(
        f"{path} is corrupt: {m.name!r} is not ILSVRC2012_val_########.JPEG", _REDOWNLOAD
      )
    numbers.append(int(match.group(1)))
  if sorted(numbers) != list(range(1, len(numbers) + 1)):
    raise PrepareError(
      f"{path}: validation images must be numbered 1..{len(numbers)} (tfds labels them by "
      "position in the official list)",
      _REDOWNLOAD,
    )


def check_archive(path: str, kind: str) -> Archive:
  """Missing, partial or corrupt `kind` ("train" or "val") archive → PrepareError."""
  name = paths.resolve(path).name
  if not paths.resolve(path).is_file():
    raise PrepareError(
      f"{name} is missing: no file {path}",
      "download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar (image-net.org, login "
      "required) into one folder and pass it as --manual_dir",
    )
  members = _members(path)
  size = paths.resolve(path).stat().length
  (_check_train if kind == "train" else _check_val)(path, members)
  full = len(members) == (NUM_SYNSETS if kind == "train" else NUM_VAL)
  official = official_sizes()[name]
  if full and size != official:
    raise PrepareError(f"{path} is {size:,} bytes, the published archive {official:,}", _REDOWNLOAD)
  return Archive(path, size, len(members))


def required_bytes(archives: list[Archive]) -> int:
  return int(DISK_FACTOR * sum(a.size for a in archives)) + DISK_SLACK


def check_free_disk(data_dir: str, need: int) -> None:
  """Too little free space under data_dir (or its nearest existing parent) → PrepareError.
  A bucket (gs://) has no free-space figure: nothing to check."""
  if paths.is_remote(data_dir):
    return
  free = shutil.disk_usage(paths.existing_ancestor(data_dir)).free
  if free < need:
    raise PrepareError(
      f"not enough free disk under {data_dir}: {free / 2**30:.1f} GiB free, "
      f"{need / 2**30:.1f} GiB needed ({DISK_FACTOR}x the archives + 1 GiB)",
      "free space there or pass another --data_dir",
    )


def prepare_imagenet(manual_dir: str, data_dir: str, log: Callable[[str], None] = print) -> dict:
  """Checks the archives and the disk, then builds tfds imagenet2012 under data_dir.

  Returns {"data_dir", "version", "splits": {split: examples}, "seconds"}; a no-op when prepared.
  """
  import tensorflow_datasets as tfds
  from absl import logging as absl_logging

  verbosity = absl_logging.get_verbosity()
  absl_logging.set_verbosity(absl_logging.ERROR)  # tfds warns of a not-yet-prepared folder
  try:
    builder = tfds.builder("imagenet2012", data_dir=data_dir)
    prepared = builder.is_prepared()
  finally:
    absl_logging.set_verbosity(verbosity)
  if prepared:
    log(f"imagenet2012 {builder.version} is already prepared in {builder.data_dir}")
    return _summary(builder, 0.0)
  archives = []
  for kind, tar in (("train", TRAIN_TAR), ("val", VAL_TAR)):
    log(f"checking {paths.join(manual_dir, tar)} ...")
    archives.append(check_archive(paths.join(manual_dir, tar), kind))
  train, val = archives
  notes = []
  if train.members < NUM_SYNSETS or val.members < NUM_VAL:
    notes.append(" (a subset of the official 1,000 synsets / 50,000 images)")
  log(
    f"archives ok: {train.members} synsets ({train.size / 2**30:.2f} GiB), {val.members} "
    f"validation images ({val.size / 2**30:.2f} GiB){''.join(notes)}"
  )
  check_free_disk(data_dir, required_bytes(archives))
  log(f"building imagenet2012 {builder.version} into {builder.data_dir} (TFRecords, no downloads)")
  tfds.display_progress_bar(True)
  config = tfds.download.DownloadConfig(
    manual_dir=manual_dir, compute_stats=tfds.download.ComputeStatsMode.SKIP
  )
  start = time.monotonic()
  try:
    builder.download_and_prepare(download_config=config)
  except Exception as e:  # noqa: BLE001 - a bad JPEG or nested tar deep in a 147 GB archive
    raise PrepareError(
      f"building imagenet2012 failed: {type(e).__name__}: {' '.join(str(e).split())[:300]}",
      "an archive is probably damaged (check its sha256); nothing was kept under data_dir "
      "(rerun with --verbose for the traceback)",
    ) from e
  summary = _summary(builder, time.monotonic() - start)
  counts = ", ".join(f"{k} {v:,}" for k, v in summary["splits"].items())
  log(f"done in {summary['seconds']:.0f} s: {counts} examples in {builder.data_dir}")
  return summary


def _summary(builder, seconds: float) -> dict:
  splits = {name: info.num_examples for name, info in builder.info.splits.items()}
  return {
    "data_dir": os.fspath(builder.data_dir),
    "version": str(builder.version),
    "splits": splits,
    "seconds": seconds,
  }


def prepare_download(name: str, data_dir: str, log: Callable[[str], None] = print) -> dict:
  """Datasets tfds downloads itself (cifar10): download and prepare under data_dir."""
  import tensorflow_datasets as tfds

  builder = tfds.builder(name, data_dir=data_dir)
  log(f"preparing {name} {builder.version} in {builder.data_dir} (downloads from its source)")
  start = time.monotonic()
  builder.download_and_prepare()
  return _summary(builder, time.monotonic() - start)
