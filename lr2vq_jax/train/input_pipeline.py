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

The pieces: dataset tables and the data config (`datasets`), the in-memory sources
(`array_sources`), the ImageNet source (`imagenet_source`) and per-example preprocessing
(`preprocessing`). Their public names are re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import jax
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from lr2vq_jax.train.array_sources import arrays, digits_split, load_digits
from lr2vq_jax.train.datasets import (
  CHANNELS,
  NATIVE_IMAGE_SIZE,
  NUM_CLASSES,
  DataInfo,
  check_image_size,
  default_data_config,
)
from lr2vq_jax.train.imagenet_source import (
  ImageNetNotPreparedError,
  ImageNetStatus,
  imagenet_builder,
  imagenet_status,
  num_examples,
)
from lr2vq_jax.train.preprocessing import (
  augment_seed,
  imagenet_eval,
  imagenet_train,
  preprocess_array,
)

__all__ = [
  "CHANNELS",
  "NATIVE_IMAGE_SIZE",
  "NUM_CLASSES",
  "Batch",
  "DataInfo",
  "ImageNetNotPreparedError",
  "ImageNetStatus",
  "build_input",
  "dataset_info",
  "default_data_config",
  "imagenet_status",
  "load_digits",
]

Batch = dict[str, np.ndarray]
_SHUFFLE_SALT = 0x5EED


def dataset_info(cfg: ml_collections.ConfigDict, *, process_count: int | None = None) -> DataInfo:
  """Example counts, classes and image shape for `cfg` (prepares/validates imagenet2012)."""
  check_image_size(cfg)
  s = cfg.image_size
  shape = (s, s, CHANNELS[cfg.name])
  splits = (cfg.train_split, cfg.eval_split, cfg.test_split)
  if cfg.name == "imagenet2012":
    builder = imagenet_builder(cfg, process_count or jax.process_count())
    counts = [num_examples(builder, sp) for sp in splits]
  elif cfg.name == "digits":
    counts = [len(digits_split(sp)[1]) for sp in splits]
  else:
    builder = tfds.builder(cfg.name, data_dir=cfg.data_dir)
    builder.download_and_prepare()
    counts = [num_examples(builder, sp) for sp in splits]
  return DataInfo(cfg.name, NUM_CLASSES[cfg.name], shape, *counts)


def _global_positions(step: tf.Tensor, global_batch: int, local_batch: int, p: int) -> tf.Tensor:
  return step * global_batch + p * local_batch + tf.range(local_batch, dtype=tf.int64)


def _array_dataset(cfg, split, *, training, global_batch, local_batch, p, seed, start_step):
  images_np, labels_np = arrays(cfg, split)
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
      image = preprocess_array(cfg, tf.gather(images, idx), augment_seed(seed, pos))
      return {"image": image, "label": tf.gather(labels, idx)}
    valid = pos < n
    idx = tf.where(valid, pos, 0)
    image = preprocess_array(cfg, tf.gather(images, idx), None)
    label = tf.where(valid, tf.gather(labels, idx), 0)
    return {"image": image * tf.cast(valid, tf.float32), "label": label, "mask": valid}

  return positions.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _imagenet_dataset(cfg, split, *, training, global_batch, local_batch, p, pc, seed, start_step):
  builder = imagenet_builder(cfg, pc)
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
    num = math.ceil(num_examples(builder, split) / global_batch) * local_batch
    ds = base.map(
      lambda ex: {
        "image": imagenet_eval(ex["image"], size),
        "label": ex["label"],
        "mask": True,
      },
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
    image = imagenet_train(ex["image"], size, augment_seed(seed, pos))
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
  num_batches: int | None = None,
) -> Iterator[Batch]:
  """Numpy batches {"image": f32 NHWC, "label": i32[, "mask": bool]} of this process's slice.

  `split` is "train" (cfg.train_split: shuffled, augmented, infinite, starting at `start_step`),
  "eval" (cfg.eval_split) or "test" (cfg.test_split): one padded pass with a mask. `batch_size` is
  global (default cfg.batch_size / cfg.eval_batch_size); each process gets batch_size/process_count.
  `num_batches` ends the stream after that many batches: a stage's loop passes the steps it has
  left, so nothing is read, decoded or prefetched past its last step.
  """
  if split not in ("train", "eval", "test"):
    raise ValueError(f"split must be 'train', 'eval' or 'test', got {split!r}")
  training = split == "train"
  check_image_size(cfg)
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
  if num_batches is not None:
    ds = ds.take(num_batches)
  options = tf.data.Options()
  options.deterministic = True
  ds = ds.with_options(options).prefetch(cfg.prefetch)
  return iter(tfds.as_numpy(ds))
