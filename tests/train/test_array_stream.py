"""The NumPy digits stream equals the tf.data stream batch for batch, and TensorFlow stays unloaded."""

import subprocess
import sys

import numpy as np
import pytest

from lr2vq_jax.train import array_stream, stateless_random
from lr2vq_jax.train.datasets import default_data_config


# TensorFlow is loaded by the tests that compare against it, not when the module is collected:
# every pytest-xdist worker collects every module, and only one of them runs these tests.
@pytest.fixture(scope="module")
def tf():
  return pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def tf_datasets():
  return pytest.importorskip("lr2vq_jax.train.tf_datasets")


def _streams(tf_datasets, *, split, global_batch, pc=1, p=0, seed=0, start_step=0, num_batches=3):
  cfg = default_data_config("digits")
  kw = dict(
    training=split == cfg.train_split and start_step >= 0,
    global_batch=global_batch,
    local_batch=global_batch // pc,
    p=p,
    seed=seed,
    start_step=max(start_step, 0),
  )
  ours = array_stream.batches(cfg, split, num_batches=num_batches, **kw)
  theirs = tf_datasets.batches(cfg, split, pc=pc, num_batches=num_batches, **kw)
  return list(ours), list(theirs)


def _assert_identical(ours, theirs):
  assert len(ours) == len(theirs) > 0
  for a, b in zip(ours, theirs, strict=True):
    assert a.keys() == b.keys()
    for k in a:
      assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize(
  "global_batch,pc,p,seed,start_step",
  [
    (64, 1, 0, 0, 0),  # the default stream, first batches
    (64, 1, 0, 3, 37),  # resumed mid-stream, crossing the epoch 1 -> 2 boundary, another seed
    (104, 2, 1, 0, 11),  # the second of two processes, its batch crossing an epoch
    (96, 3, 2, 2**31 + 7, 123_456),  # a large seed and a position far into the stream
  ],
)
def test_train_stream_matches_tf_data(tf_datasets, global_batch, pc, p, seed, start_step):
  _assert_identical(
    *_streams(
      tf_datasets,
      split="train",
      global_batch=global_batch,
      pc=pc,
      p=p,
      seed=seed,
      start_step=start_step,
    )
  )


@pytest.mark.parametrize("split,global_batch,pc,p", [("test", 64, 1, 0), ("validation", 50, 2, 1)])
def test_eval_pass_matches_tf_data_with_padding(tf_datasets, split, global_batch, pc, p):
  ours, theirs = _streams(
    tf_datasets, split=split, global_batch=global_batch, pc=pc, p=p, start_step=-1, num_batches=None
  )
  _assert_identical(ours, theirs)
  assert not ours[-1]["mask"].all()  # the padded last batch is compared too


def test_primitives_match_tensorflow_on_random_inputs(tf):
  rng = np.random.default_rng(0)
  pos = np.concatenate([np.arange(500), rng.integers(0, 2**62, 500)]).astype(np.int64)
  for seed in (0, 5, -3, 2**40 + 1):
    fold = stateless_random.fold_in_first(np.int64(seed), np.int64(0xA06))
    want = tf.random.experimental.stateless_fold_in(
      tf.constant([seed, 0xA06], tf.int64), tf.constant(7, tf.int64)
    )
    assert int(fold) == int(want[0])
    draws = stateless_random.uniform_int32(fold, pos, 3, 1000)
    crop_seeds = tf.data.Dataset.from_tensor_slices(pos).map(lambda s, f=fold: tf.stack([f, s]))
    want = crop_seeds.map(lambda s: tf.random.stateless_uniform([3], s, 0, 1000, tf.int32))
    want = next(iter(want.batch(len(pos)))).numpy()
    np.testing.assert_array_equal(np.stack(draws, 1), want)
  for max_index in (1, 2, 1211, 65535, 65536, 2**20 + 3):
    index = np.unique(rng.integers(0, max_index + 1, 400)).astype(np.int64)
    got = stateless_random.index_shuffle(index, (12345, 6), max_index)
    want = tf.random.experimental.index_shuffle(index, [12345, 6], max_index)
    np.testing.assert_array_equal(got, want.numpy())


def test_digits_run_reads_without_tensorflow():
  code = (
    "import sys\n"
    "from lr2vq_jax.train import input_pipeline as ip\n"
    "cfg = ip.default_data_config('digits')\n"
    "next(ip.build_input(cfg, split='train')); list(ip.build_input(cfg, split='test'))\n"
    "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'\n"
  )
  subprocess.run([sys.executable, "-c", code], check=True)
