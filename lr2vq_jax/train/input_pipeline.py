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
(`array_sources`), the ImageNet source (`imagenet_source`), per-example preprocessing
(`preprocessing`) and the tf.data pipelines (`tf_datasets`). Their public names are re-exported
here. TensorFlow loads on the first `build_input`, not on import: what reads no data stays light.
The embedded digits never load it: `array_stream` yields the tf.data stream's batches in NumPy.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import jax
import ml_collections
import numpy as np

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
  "eval_batches",
  "default_data_config",
  "imagenet_status",
  "load_digits",
]

Batch = dict[str, np.ndarray]
# Evaluation passes of in-memory splits up to this size (float32 images) are built once per process
# and replayed: a stage's final evaluation and its artifact's test and validation passes (and the
# next stages') then read the same batches without rebuilding a tf.data pipeline each time.
EVAL_CACHE_BYTES = 64 << 20
_EVAL_PASSES: dict[tuple, tuple[Batch, ...]] = {}


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
    import tensorflow_datasets as tfds

    builder = tfds.builder(cfg.name, data_dir=cfg.data_dir)
    builder.download_and_prepare()
    counts = [num_examples(builder, sp) for sp in splits]
  return DataInfo(cfg.name, NUM_CLASSES[cfg.name], shape, *counts)


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
  if cfg.name == "digits":  # the same batches in NumPy: no TensorFlow import
    from lr2vq_jax.train import array_stream

    return array_stream.batches(cfg, name, num_batches=num_batches, **kw)
  from lr2vq_jax.train import tf_datasets  # TensorFlow loads here, when data is first read

  return tf_datasets.batches(cfg, name, pc=pc, num_batches=num_batches, **kw)


def eval_batches(cfg: ml_collections.ConfigDict, split: str) -> Iterable[Batch]:
  """One evaluation pass of `split` ("eval" or "test"), the batches `build_input` yields.

  A small in-memory split (digits; at most `EVAL_CACHE_BYTES` of images) is read once per process
  and replayed (read-only arrays); ImageNet and larger splits stream each time.
  """
  if split not in ("eval", "test"):
    raise ValueError(f"split must be 'eval' or 'test', got {split!r}")
  if cfg.name == "imagenet2012":
    return build_input(cfg, split=split)
  name = cfg.eval_split if split == "eval" else cfg.test_split
  size = len(arrays(cfg, name)[1]) * cfg.image_size**2 * CHANNELS[cfg.name] * 4
  if size > EVAL_CACHE_BYTES:
    return build_input(cfg, split=split)
  key = (cfg.to_json(), split, jax.process_index(), jax.process_count())
  if key not in _EVAL_PASSES:
    _EVAL_PASSES[key] = tuple(_read_only(b) for b in build_input(cfg, split=split))
  return _EVAL_PASSES[key]


def _read_only(batch: Batch) -> Batch:
  for value in batch.values():
    value.setflags(write=False)
  return batch
