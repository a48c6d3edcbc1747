"""The embedded digits stream in NumPy: exactly the batches of the tf.data stream, without TensorFlow.

Training position `pos` reads example `index_shuffle(pos % N, [shuffle_seed(seed), pos // N], N - 1)`
(`datasets`), padded by 1 px and cropped back to 8x8 at the offset `stateless_random_crop` draws
from `stateless_fold_in([seed, AUGMENT_SALT], pos)`, then /16; evaluation is one pass with a
zero-padded, masked tail. `stateless_random` reproduces TensorFlow's ops bit for bit, so reading digits neither imports
TensorFlow nor runs a tf.data pipeline (nor does a digits training run: `event_writer` writes the
TensorBoard events without it), and its batches, hence its numbers, are those `tf_datasets` yields
(tests/train/test_array_stream.py compares them).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterator

import numpy as np

from lr2vq_jax.train import stateless_random
from lr2vq_jax.train.array_sources import digits_split
from lr2vq_jax.train.datasets import AUGMENT_SALT, shuffle_seed

_INT32_MAX = 2**31 - 1
_SHIFT = 1  # digits augmentation: +-1 px shifts (pad 1, crop back)


@functools.lru_cache(maxsize=4)
def _permutation(seed: int, epoch: int, n: int) -> np.ndarray:
  """Epoch `epoch`'s order of the n examples, computed once for the ~n / batch steps reading it."""
  key = (shuffle_seed(seed), epoch)
  perm = stateless_random.index_shuffle(np.arange(n, dtype=np.int64), key, n - 1)
  perm.setflags(write=False)  # shared by the cache
  return perm


def _shuffled(within: np.ndarray, epoch: np.ndarray, seed: int, n: int) -> np.ndarray:
  """The examples at (epoch, index within it): a batch may span epochs."""
  idx = np.empty_like(within)
  for e in np.unique(epoch):
    sel = epoch == e
    idx[sel] = _permutation(seed, int(e), n)[within[sel]]
  return idx


def _shifted(padded: np.ndarray, idx: np.ndarray, pos: np.ndarray, seed: int) -> np.ndarray:
  """Crops of `padded[idx]` back to the unpadded size, at `stateless_random_crop`'s offsets."""
  fold = stateless_random.fold_in_first(np.int64(seed), np.int64(AUGMENT_SALT))
  limit = 2 * _SHIFT + 1
  dy, dx = stateless_random.uniform_int32(fold, pos, 2, _INT32_MAX)
  h, w = padded.shape[1] - 2 * _SHIFT, padded.shape[2] - 2 * _SHIFT
  rows = (dy % limit)[:, None, None] + np.arange(h)[None, :, None]
  cols = (dx % limit)[:, None, None] + np.arange(w)[None, None, :]
  return padded[idx[:, None, None], rows, cols]


def _train_batches(images, labels, *, global_batch, local_batch, p, seed, start_step):
  n = len(labels)
  pad = ((0, 0), (_SHIFT, _SHIFT), (_SHIFT, _SHIFT), (0, 0))
  padded = np.pad(images, pad)
  for step in itertools.count(start_step):
    pos = step * global_batch + p * local_batch + np.arange(local_batch, dtype=np.int64)
    idx = _shuffled(pos % n, pos // n, seed, n)
    image = _shifted(padded, idx, pos, seed).astype(np.float32) / np.float32(16.0)
    yield {"image": image, "label": labels[idx]}


def _eval_batches(images, labels, *, global_batch, local_batch, p):
  n = len(labels)
  for step in range(math.ceil(n / global_batch)):
    pos = step * global_batch + p * local_batch + np.arange(local_batch, dtype=np.int64)
    mask = pos < n
    idx = np.where(mask, pos, 0)
    image = images[idx].astype(np.float32) / np.float32(16.0)
    image = image * mask.astype(np.float32)[:, None, None, None]
    yield {"image": image, "label": np.where(mask, labels[idx], 0), "mask": mask}


def batches(
  cfg, name: str, *, num_batches: int | None, training: bool, seed: int, start_step: int, **kw
) -> Iterator[dict[str, np.ndarray]]:
  """This process's numpy batches of digits split `name` (`build_input` checked the arguments)."""
  if cfg.name != "digits":
    raise ValueError(f"the NumPy stream reads the embedded digits only, not {cfg.name!r}")
  images, labels = digits_split(name)
  if len(labels) == 0:
    raise ValueError(f"split {name!r} of {cfg.name} is empty")
  if training:
    stream = _train_batches(images, labels, seed=seed, start_step=start_step, **kw)
  else:
    stream = _eval_batches(images, labels, **kw)
  return _generator(itertools.islice(stream, num_batches))


def _generator(stream: Iterator) -> Iterator:
  """A generator (with `close`, which the trainer calls), like the tf.data stream's iterator."""
  yield from stream
