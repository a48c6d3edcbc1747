"""The datasets this trainer reads: their tables (classes, channels, native sizes) and data config.

No TensorFlow here, so configs, validation and reports can read these without loading it.
"""

from __future__ import annotations

import dataclasses

import ml_collections
from ml_collections import config_dict

NUM_CLASSES = {"digits": 10, "cifar10": 10, "imagenet2012": 1000}  # also the dataset names
NATIVE_IMAGE_SIZE = {"digits": 8, "cifar10": 32}  # fixed sizes; imagenet2012 resizes
CHANNELS = {"digits": 1, "cifar10": 3, "imagenet2012": 3}
# Every stream's per-example augmentation seed is stateless_fold_in([seed, AUGMENT_SALT], position);
# one source for the tf.data streams (preprocessing) and the NumPy digits stream (array_stream).
AUGMENT_SALT = 0xA06


def shuffle_seed(seed: int) -> int:
  """First word of a training stream's shuffle seed for run seed `seed` (the second: the epoch)."""
  return seed * 1_000_003 + 0x5EED


def default_data_config(name: str = "digits") -> ml_collections.ConfigDict:
  """Data config with defaults for `name` in {"digits", "cifar10", "imagenet2012"}.

  Fields:
    name: dataset name.
    data_dir: tfds data directory (None: $TFDS_DATA_DIR or ~/tensorflow_datasets); unused by digits.
    manual_dir: imagenet2012 only, folder holding ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar
      (None: <data_dir>/downloads/manual).
    prepare_if_missing: imagenet2012 only, build the tfds dataset from manual_dir when it is not
      prepared yet (single-process runs only; takes hours). Otherwise a clear error is raised.
    image_size: output height and width (digits 8 and cifar10 32 are native; imagenet resizes).
    batch_size / eval_batch_size: GLOBAL batch sizes, divisible by the process count.
    train_split / eval_split / test_split: split names. Digits has fixed stratified index splits
      "train" (1,212), "validation" (135, 10% of train+val), "test" (450), joinable with "+".
      tfds datasets take any tfds split string (e.g. "train[:90%]").
    shuffle_buffer: imagenet2012 only (the in-memory sets use exact full permutations).
    cache: imagenet2012 only, cache the undecoded records in memory (needs ~150 GB for train).
    prefetch: batches to prefetch (-1: autotune).
    seed: data seed (order and augmentation).
  """
  cfg = ml_collections.ConfigDict()
  cfg.name = name
  cfg.data_dir = config_dict.placeholder(str)  # None, and --config.data.data_dir=DIR works
  cfg.manual_dir = config_dict.placeholder(str)
  cfg.prepare_if_missing = True
  cfg.shuffle_buffer = 16 * 1024
  cfg.cache = False
  cfg.prefetch = -1
  cfg.seed = 0
  if name == "digits":
    cfg.image_size, cfg.batch_size, cfg.eval_batch_size = NATIVE_IMAGE_SIZE[name], 128, 256
    cfg.train_split, cfg.eval_split, cfg.test_split = "train", "validation", "test"
  elif name == "cifar10":
    cfg.image_size, cfg.batch_size, cfg.eval_batch_size = NATIVE_IMAGE_SIZE[name], 128, 500
    cfg.train_split, cfg.eval_split, cfg.test_split = "train[:90%]", "train[90%:]", "test"
  elif name == "imagenet2012":
    # The paper reports ImageNet validation accuracy; use "train[:99%]"/"train[99%:]" to tune.
    cfg.image_size, cfg.batch_size, cfg.eval_batch_size = 224, 256, 250
    cfg.train_split, cfg.eval_split, cfg.test_split = "train", "validation", "validation"
  else:
    raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(NUM_CLASSES)}")
  return cfg


def check_image_size(cfg: ml_collections.ConfigDict) -> None:
  """Digits and CIFAR-10 come at one size only: refuse any other `image_size`."""
  native = NATIVE_IMAGE_SIZE.get(cfg.name)
  if native is not None and cfg.image_size != native:
    raise ValueError(f"{cfg.name} images are {native}x{native}; got image_size={cfg.image_size}")


@dataclasses.dataclass(frozen=True)
class DataInfo:
  """Static facts the train loop needs (example counts are over all processes)."""

  name: str
  num_classes: int
  image_shape: tuple[int, int, int]
  num_train_examples: int
  num_eval_examples: int
  num_test_examples: int
