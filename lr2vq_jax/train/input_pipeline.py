"""Deterministic, resumable, per-process input pipelines (tf.data) for digits, CIFAR-10 and ImageNet.

Every batch is a pure function of (seed, step, process layout). The training stream repeats forever
and can start at any step; evaluation is one pass padded to full batches with a boolean `mask`.

* `digits` (embedded) and `cifar10` are held in memory: the global example at stream position `pos`
  is `perm(seed, pos // N)[pos % N]` (`tf.random.experimental.index_shuffle`), and the global batch of
  step `s` is positions `[s*B, (s+1)*B)`, of which process `p` takes `[s*B + p*b, s*B + (p+1)*b)`
  with `b = B / process_count`. Resuming costs nothing, and the processes' batches together equal
  the one-process batch exactly.
* `imagenet2012` streams this process's shard (`tfds.split_for_jax_process`), shuffled per epoch
  with a buffer seeded by (seed, epoch). Resuming at `start_step` opens the right epoch directly but
  reads (not decodes) up to one epoch of records to skip within it: worst case ~1.28M/num_processes
  records, a few minutes from fast storage. The data order depends on the process count.

Augmentation uses stateless ops seeded by (seed, global example position), so it is reproducible.
ImageNet resizing is bilinear with antialiasing, close to torchvision's PIL transforms that the
PyTorch baselines (and converted torchvision weights) were trained and evaluated with.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import math
import os
from collections.abc import Iterator
from typing import Any

import jax
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from ml_collections import config_dict

from lr2vq_jax import paths

try:  # keep TensorFlow off the accelerators: JAX owns them
  tf.config.set_visible_devices([], "GPU")
except RuntimeError:  # TF already initialised its devices (someone imported it first)
  pass

Batch = dict[str, np.ndarray]

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
CIFAR10_MEAN = (0.4914 * 255, 0.4822 * 255, 0.4465 * 255)
CIFAR10_STD = (0.2470 * 255, 0.2435 * 255, 0.2616 * 255)
NUM_CLASSES = {"digits": 10, "cifar10": 10, "imagenet2012": 1000}  # also the dataset names
NATIVE_IMAGE_SIZE = {"digits": 8, "cifar10": 32}  # fixed sizes; imagenet2012 resizes
CHANNELS = {"digits": 1, "cifar10": 3, "imagenet2012": 3}
_SHUFFLE_SALT, _AUGMENT_SALT = 0x5EED, 0xA06


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


@dataclasses.dataclass(frozen=True)
class DataInfo:
  """Static facts the train loop needs (example counts are over all processes)."""

  name: str
  num_classes: int
  image_shape: tuple[int, int, int]
  num_train_examples: int
  num_eval_examples: int
  num_test_examples: int


class ImageNetNotPreparedError(FileNotFoundError):
  """Raised when imagenet2012 is neither prepared nor preparable from the manual directory."""


# ----------------------------------------------------------------------------- sources


def load_digits() -> dict[str, np.ndarray]:
  """The embedded digits npz: images (1797, 8, 8) uint8 in 0..16, labels, and split indices."""
  ref = importlib.resources.files("lr2vq_jax").joinpath("data/digits.npz")
  with importlib.resources.as_file(ref) as path, np.load(path, allow_pickle=False) as npz:
    return {k: npz[k] for k in npz.files}


def _digits_split(split: str) -> tuple[np.ndarray, np.ndarray]:
  data = load_digits()
  keys = {"train": "train_idx", "validation": "val_idx", "test": "test_idx"}
  parts = split.split("+")
  if any(p not in keys for p in parts):
    raise ValueError(f"digits split {split!r}: use 'train', 'validation', 'test' joined by '+'")
  idx = np.sort(np.concatenate([data[keys[p]] for p in parts]))
  return data["images"][idx][..., None], data["labels"][idx].astype(np.int32)


@functools.lru_cache(maxsize=4)
def _tfds_arrays(name: str, split: str, data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
  builder = tfds.builder(name, data_dir=data_dir)
  builder.download_and_prepare()  # a no-op when prepared; CIFAR-10 is a 160 MB download
  chunks = list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False).batch(4096)))
  images = np.concatenate([c["image"] for c in chunks])
  labels = np.concatenate([c["label"] for c in chunks]).astype(np.int32)
  return images, labels


def _arrays(cfg: ml_collections.ConfigDict, split: str) -> tuple[np.ndarray, np.ndarray]:
  if cfg.name == "digits":
    return _digits_split(split)
  return _tfds_arrays(cfg.name, split, cfg.data_dir)


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


def _imagenet_builder(cfg: ml_collections.ConfigDict, process_count: int) -> Any:
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


def _check_image_size(cfg: ml_collections.ConfigDict) -> None:
  native = NATIVE_IMAGE_SIZE.get(cfg.name)
  if native is not None and cfg.image_size != native:
    raise ValueError(f"{cfg.name} images are {native}x{native}; got image_size={cfg.image_size}")


def _num_examples(builder: Any, split: str) -> int:
  try:
    return builder.info.splits[split].num_examples
  except KeyError:  # mocked data has no split metadata
    return int(builder.as_dataset(split=split).cardinality())


def dataset_info(cfg: ml_collections.ConfigDict, *, process_count: int | None = None) -> DataInfo:
  """Example counts, classes and image shape for `cfg` (prepares/validates imagenet2012)."""
  _check_image_size(cfg)
  s = cfg.image_size
  shape = (s, s, CHANNELS[cfg.name])
  if cfg.name == "imagenet2012":
    builder = _imagenet_builder(cfg, process_count or jax.process_count())
    counts = [
      _num_examples(builder, sp) for sp in (cfg.train_split, cfg.eval_split, cfg.test_split)
    ]
  elif cfg.name == "digits":
    counts = [len(_digits_split(sp)[1]) for sp in (cfg.train_split, cfg.eval_split, cfg.test_split)]
  else:
    builder = tfds.builder(cfg.name, data_dir=cfg.data_dir)
    builder.download_and_prepare()
    counts = [
      _num_examples(builder, sp) for sp in (cfg.train_split, cfg.eval_split, cfg.test_split)
    ]
  return DataInfo(cfg.name, NUM_CLASSES[cfg.name], shape, *counts)


# ----------------------------------------------------------------------------- preprocessing


def _normalize(image: tf.Tensor, mean, std) -> tf.Tensor:
  return (tf.cast(image, tf.float32) - tf.constant(mean)) / tf.constant(std)


def _preprocess_array(cfg, image: tf.Tensor, seed: tf.Tensor | None) -> tf.Tensor:
  """Digits: ±1 px shifts, /16. CIFAR-10: 4-px pad + random crop + flip, normalised."""
  shape = tf.shape(image)
  if cfg.name == "digits":
    if seed is not None:
      padded = tf.pad(image, [[1, 1], [1, 1], [0, 0]])
      image = tf.image.stateless_random_crop(padded, shape, seed=seed)
    return tf.cast(image, tf.float32) / 16.0
  if seed is not None:
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    padded = tf.pad(image, [[4, 4], [4, 4], [0, 0]])
    image = tf.image.stateless_random_crop(padded, shape, seed=crop_seed)
    image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
  return _normalize(image, CIFAR10_MEAN, CIFAR10_STD)


def _imagenet_train(jpeg: tf.Tensor, size: int, seed: tf.Tensor) -> tf.Tensor:
  """Inception crop (8-100% area, aspect 3/4-4/3), fused with JPEG decoding, then flip."""
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  shape = tf.image.extract_jpeg_shape(jpeg)
  begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
    shape,
    bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32, [1, 1, 4]),
    seed=crop_seed,
    min_object_covered=0.1,
    aspect_ratio_range=(3 / 4, 4 / 3),
    area_range=(0.08, 1.0),
    max_attempts=10,
    use_image_if_no_bounding_boxes=True,
  )
  window = tf.stack([begin[0], begin[1], crop_size[0], crop_size[1]])
  image = tf.image.decode_and_crop_jpeg(jpeg, window, channels=3)
  image = tf.image.resize(image, (size, size), method="bilinear", antialias=True)
  image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
  return _normalize(tf.clip_by_value(image, 0.0, 255.0), IMAGENET_MEAN, IMAGENET_STD)


def _imagenet_eval(jpeg: tf.Tensor, size: int) -> tf.Tensor:
  """Resize the shorter side to 256/224 * size, then centre-crop size x size."""
  image = tf.image.decode_jpeg(jpeg, channels=3)
  hw = tf.cast(tf.shape(image)[:2], tf.float32)
  short = float(round(256 * size / 224))
  new_hw = tf.cast(tf.math.round(hw * short / tf.reduce_min(hw)), tf.int32)
  new_hw = tf.maximum(new_hw, size)
  image = tf.image.resize(image, new_hw, method="bilinear", antialias=True)
  top, left = (new_hw[0] - size) // 2, (new_hw[1] - size) // 2
  image = tf.image.crop_to_bounding_box(image, top, left, size, size)
  return _normalize(tf.clip_by_value(image, 0.0, 255.0), IMAGENET_MEAN, IMAGENET_STD)


def _augment_seed(seed: int, pos: tf.Tensor) -> tf.Tensor:
  base = tf.constant([seed, _AUGMENT_SALT], tf.int64)
  return tf.random.experimental.stateless_fold_in(base, tf.cast(pos, tf.int64))


# ----------------------------------------------------------------------------- pipelines


def _global_positions(step: tf.Tensor, global_batch: int, local_batch: int, p: int) -> tf.Tensor:
  return step * global_batch + p * local_batch + tf.range(local_batch, dtype=tf.int64)


def _array_dataset(cfg, split, *, training, global_batch, local_batch, p, seed, start_step):
  images_np, labels_np = _arrays(cfg, split)
  n = len(labels_np)
  if n == 0:
    raise ValueError(f"split {split!r} of {cfg.name} is empty")
  images, labels = tf.constant(images_np), tf.constant(labels_np)
  if training:
    steps = tf.data.Dataset.counter(start_step)
  else:
    steps = tf.data.Dataset.range(math.ceil(n / global_batch))
  positions = steps.map(lambda s: _global_positions(s, global_batch, local_batch, p)).unbatch()

  def example(pos):
    if training:
      epoch, within = pos // n, pos % n
      shuffle_seed = tf.stack([tf.constant(seed, tf.int64) * 1_000_003 + _SHUFFLE_SALT, epoch])
      idx = tf.random.experimental.index_shuffle(within, shuffle_seed, tf.constant(n - 1, tf.int64))
      image = _preprocess_array(cfg, tf.gather(images, idx), _augment_seed(seed, pos))
      return {"image": image, "label": tf.gather(labels, idx)}
    valid = pos < n
    idx = tf.where(valid, pos, 0)
    image = _preprocess_array(cfg, tf.gather(images, idx), None)
    label = tf.where(valid, tf.gather(labels, idx), 0)
    return {"image": image * tf.cast(valid, tf.float32), "label": label, "mask": valid}

  return positions.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _imagenet_dataset(cfg, split, *, training, global_batch, local_batch, p, pc, seed, start_step):
  builder = _imagenet_builder(cfg, pc)
  sub = tfds.split_for_jax_process(
    split, process_index=p, process_count=pc, drop_remainder=training
  )
  read_config = tfds.ReadConfig(try_autocache=False, skip_prefetch=True)
  base = builder.as_dataset(
    split=sub,
    shuffle_files=False,
    decoders={"image": tfds.decode.SkipDecoding()},
    read_config=read_config,
  )
  base = base.map(lambda ex: {"image": ex["image"], "label": tf.cast(ex["label"], tf.int32)})
  if cfg.cache:
    base = base.cache()
  size = cfg.image_size
  if not training:
    padding = {"image": tf.zeros((size, size, 3)), "label": tf.constant(0), "mask": False}
    num = math.ceil(_num_examples(builder, split) / global_batch) * local_batch
    ds = base.map(
      lambda ex: {"image": _imagenet_eval(ex["image"], size), "label": ex["label"], "mask": True},
      num_parallel_calls=tf.data.AUTOTUNE,
    )
    return ds.concatenate(tf.data.Dataset.from_tensors(padding).repeat()).take(num)
  n_local = int(base.cardinality())
  if n_local < local_batch:
    raise ValueError(f"{split!r} has {n_local} examples on this process, < batch {local_batch}")
  first = start_step * local_batch
  epoch_seed = seed * 1_000_003 + _SHUFFLE_SALT
  epochs = tf.data.Dataset.counter(first // n_local).flat_map(
    lambda e: base.shuffle(
      cfg.shuffle_buffer, seed=epoch_seed + e * 7919, reshuffle_each_iteration=False
    )
  )
  ds = epochs.skip(first % n_local).enumerate(first)

  def example(t, ex):
    pos = (t // local_batch) * global_batch + p * local_batch + t % local_batch
    image = _imagenet_train(ex["image"], size, _augment_seed(seed, pos))
    return {"image": image, "label": ex["label"]}

  return ds.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def build_input(
  cfg: ml_collections.ConfigDict,
  *,
  split: str,
  batch_size: int | None = None,
  process_index: int | None = None,
  process_count: int | None = None,
  seed: int | None = None,
  start_step: int = 0,
) -> Iterator[Batch]:
  """Numpy batches {"image": f32 NHWC, "label": i32[, "mask": bool]} of this process's slice.

  `split` is "train" (cfg.train_split: shuffled, augmented, infinite, starting at `start_step`),
  "eval" (cfg.eval_split) or "test" (cfg.test_split): one padded pass with a mask. `batch_size` is
  global (default cfg.batch_size / cfg.eval_batch_size); each process gets batch_size/process_count.
  """
  if split not in ("train", "eval", "test"):
    raise ValueError(f"split must be 'train', 'eval' or 'test', got {split!r}")
  training = split == "train"
  _check_image_size(cfg)
  p = jax.process_index() if process_index is None else process_index
  pc = jax.process_count() if process_count is None else process_count
  global_batch = batch_size or (cfg.batch_size if training else cfg.eval_batch_size)
  if global_batch % pc:
    raise ValueError(f"global batch {global_batch} is not divisible by {pc} processes")
  kw = dict(
    training=training,
    global_batch=global_batch,
    local_batch=global_batch // pc,
    p=p,
    seed=cfg.seed if seed is None else seed,
    start_step=start_step,
  )
  name = {"train": cfg.train_split, "eval": cfg.eval_split, "test": cfg.test_split}[split]
  if cfg.name == "imagenet2012":
    ds = _imagenet_dataset(cfg, name, pc=pc, **kw)
  else:
    ds = _array_dataset(cfg, name, **kw)
  ds = ds.batch(global_batch // pc, drop_remainder=True)
  options = tf.data.Options()
  options.deterministic = True
  ds = ds.with_options(options).prefetch(cfg.prefetch)
  return iter(tfds.as_numpy(ds))
