"""Where imagenet2012 comes from: the "is it prepared" probe, the builder, and the one clear error
(with the steps to fix it) when it can be neither read nor prepared here."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import ml_collections

from lr2vq_jax import paths


class ImageNetNotPreparedError(FileNotFoundError):
  """Raised when imagenet2012 is neither prepared nor preparable from the manual directory."""


@dataclasses.dataclass(frozen=True)
class ImageNetStatus:
  """Where imagenet2012 stands under a data_dir: readable now, or where its archives should be."""

  builder: Any
  ready: bool  # prepared, or served by tfds.testing.mock_data (tests)
  root: str  # the tfds data_dir root
  manual: str  # folder of the manual download
  tars: tuple[str, ...]  # ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar under `manual`
  have_tars: bool


def imagenet_status(data_dir: str | None, manual_dir: str | None) -> ImageNetStatus:
  """Probes imagenet2012 without building it: the one check the trainer and validation share."""
  import tensorflow_datasets as tfds  # loaded by imagenet2012 runs only

  builder = tfds.builder("imagenet2012", data_dir=data_dir)
  ready = builder.is_prepared()
  if not ready:
    try:  # tfds.testing.mock_data serves data for an unprepared builder.
      builder.as_dataset(split="validation")
      ready = True
    except AssertionError:
      pass
  root = os.fspath(builder.data_dir_root)
  manual = manual_dir or paths.join(root, "downloads", "manual")
  tars = tuple(paths.join(manual, f"ILSVRC2012_img_{s}.tar") for s in ("train", "val"))
  have_tars = not ready and all(paths.resolve(t).is_file() for t in tars)
  return ImageNetStatus(builder, ready, root, manual, tars, have_tars)


def imagenet_builder(cfg: ml_collections.ConfigDict, process_count: int) -> Any:
  """The imagenet2012 tfds builder, prepared from the archives first when allowed (hours)."""
  status = imagenet_status(cfg.data_dir, cfg.manual_dir)
  if status.ready:
    return status.builder
  root, manual, tars, have_tars = status.root, status.manual, status.tars, status.have_tars
  if have_tars and cfg.prepare_if_missing and process_count == 1:
    from lr2vq_jax.train import prepare  # hours: the checks and build of `lr2vq prepare`

    try:
      prepare.prepare_imagenet(manual, root)
    except prepare.PrepareError as e:
      raise ImageNetNotPreparedError(f"{e} ({e.hint})") from e
    import tensorflow_datasets as tfds

    return tfds.builder("imagenet2012", data_dir=cfg.data_dir)
  if have_tars:
    why = (
      f"The archives are in {manual!r}, but preparing is off here (needs prepare_if_missing=True,"
      f" now {cfg.prepare_if_missing}, and a single process, now {process_count})."
    )
  else:
    why = f"The manual download is missing from manual_dir={manual!r}."
  raise ImageNetNotPreparedError(
    f"imagenet2012 is not prepared under data_dir={root!r}. {why} To fix:\n"
    "1. Download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from https://image-net.org"
    " (login required) and put them at\n   " + "\n   ".join(tars) + "\n"
    "2. Build the dataset once (hours, ~150 GB), from one process:\n"
    f"   lr2vq prepare imagenet2012 --manual_dir {manual} --data_dir {root}\n"
    "3. Point the run at it: set config.data.data_dir (and config.data.manual_dir if the archives"
    " are elsewhere), or $TFDS_DATA_DIR."
  )


def num_examples(builder: Any, split: str) -> int:
  """Examples in a tfds split (counted when the builder has no split metadata, as mocks do)."""
  try:
    return builder.info.splits[split].num_examples
  except KeyError:  # mocked data has no split metadata
    return int(builder.as_dataset(split=split).cardinality())
