"""The tf.data pipelines behind `input_pipeline.build_input`: the in-memory and ImageNet streams.

TensorFlow is imported here and only here (with `preprocessing`), when a run first reads data:
commands that read none (export, report, plan without data) never load it. Digits runs read
`array_stream` instead, the same batches in NumPy; `_array_dataset` still defines them (CIFAR-10's
stream, and the digits reference that tests/train/test_array_stream.py compares with).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from lr2vq_jax.train.array_sources import arrays
from lr2vq_jax.train.datasets import shuffle_seed
from lr2vq_jax.train.imagenet_source import imagenet_builder, num_examples
from lr2vq_jax.train.preprocessing import (
  augment_seed,
  imagenet_eval,
  imagenet_train,
  preprocess_array,
)


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
      key = tf.stack([tf.constant(shuffle_seed(seed), tf.int64), epoch])
      idx = tf.random.experimental.index_shuffle(within, key, tf.constant(n - 1, tf.int64))
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
  epoch_seed = shuffle_seed(seed)
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


def batches(
  cfg, name: str, *, pc: int, num_batches: int | None, **kw
) -> Iterator[dict[str, np.ndarray]]:
  """This process's numpy batches of split `name` (`build_input` checked the arguments)."""
  if cfg.name == "imagenet2012":
    ds = _imagenet_dataset(cfg, name, pc=pc, **kw)
  else:
    ds = _array_dataset(cfg, name, **kw)
  ds = ds.batch(kw["local_batch"], drop_remainder=True)
  if num_batches is not None:
    ds = ds.take(num_batches)
  options = tf.data.Options()
  options.deterministic = True
  ds = ds.with_options(options).prefetch(cfg.prefetch)
  return iter(tfds.as_numpy(ds))
