"""The in-memory sources: the embedded digits and small tfds datasets (CIFAR-10) as numpy arrays."""

from __future__ import annotations

import functools
import importlib.resources

import ml_collections
import numpy as np

DIGITS_SPLITS = {"train": "train_idx", "validation": "val_idx", "test": "test_idx"}


def load_digits() -> dict[str, np.ndarray]:
  """The embedded digits npz: images (1797, 8, 8) uint8 in 0..16, labels, and split indices."""
  ref = importlib.resources.files("lr2vq_jax").joinpath("data/digits.npz")
  with importlib.resources.as_file(ref) as path, np.load(path, allow_pickle=False) as npz:
    return {k: npz[k] for k in npz.files}


def digits_split(split: str) -> tuple[np.ndarray, np.ndarray]:
  """(images (N, 8, 8, 1) uint8, labels int32) of "train", "validation", "test" joined by "+"."""
  data = load_digits()
  parts = split.split("+")
  if any(p not in DIGITS_SPLITS for p in parts):
    raise ValueError(f"digits split {split!r}: use 'train', 'validation', 'test' joined by '+'")
  idx = np.sort(np.concatenate([data[DIGITS_SPLITS[p]] for p in parts]))
  return data["images"][idx][..., None], data["labels"][idx].astype(np.int32)


@functools.lru_cache(maxsize=4)
def tfds_arrays(name: str, split: str, data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
  """A whole tfds split in memory (downloaded and prepared first when it is not yet)."""
  import tensorflow_datasets as tfds  # not needed by the embedded digits

  builder = tfds.builder(name, data_dir=data_dir)
  builder.download_and_prepare()  # a no-op when prepared; CIFAR-10 is a 160 MB download
  chunks = list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False).batch(4096)))
  images = np.concatenate([c["image"] for c in chunks])
  labels = np.concatenate([c["label"] for c in chunks]).astype(np.int32)
  return images, labels


def arrays(cfg: ml_collections.ConfigDict, split: str) -> tuple[np.ndarray, np.ndarray]:
  """(images, labels) of split `split` of the in-memory dataset `cfg.name`."""
  if cfg.name == "digits":
    return digits_split(split)
  return tfds_arrays(cfg.name, split, cfg.data_dir)
