"""Input pipeline: embedded digits (splits, determinism, resume, per-process slices), mocked tfds."""

import hashlib
import os
import tempfile

import numpy as np
import pytest

ip = pytest.importorskip("lr2vq_jax.train.input_pipeline")
array_sources = pytest.importorskip("lr2vq_jax.train.array_sources")
tfds = pytest.importorskip("tensorflow_datasets")


@pytest.fixture(scope="module", autouse=True)
def _own_tmpdir(tmp_path_factory):
  """tfds mock data leaves tmp* folders behind: keep them in pytest's tmp dir."""
  path = str(tmp_path_factory.mktemp("tfds_tmp"))
  old_env, old_tempdir = os.environ.get("TMPDIR"), tempfile.tempdir
  os.environ["TMPDIR"], tempfile.tempdir = path, path
  yield
  tempfile.tempdir = old_tempdir
  if old_env is None:
    os.environ.pop("TMPDIR", None)
  else:
    os.environ["TMPDIR"] = old_env


def _digits(**overrides):
  cfg = ip.default_data_config("digits")
  cfg.update(overrides)
  return cfg


def _take(it, n):
  return [next(it) for _ in range(n)]


def _assert_batches_equal(a, b):
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_digits_npz_contents_and_splits():
  d = ip.load_digits()
  assert d["images"].shape == (1797, 8, 8) and d["images"].dtype == np.uint8
  assert d["labels"].shape == (1797,) and d["labels"].dtype == np.uint8
  assert d["images"].max() == 16 and d["labels"].max() == 9
  tr, va, te = d["train_idx"], d["val_idx"], d["test_idx"]
  assert (len(tr), len(va), len(te)) == (1212, 135, 450)
  assert (
    len(np.intersect1d(tr, va)) == len(np.intersect1d(tr, te)) == len(np.intersect1d(va, te)) == 0
  )
  np.testing.assert_array_equal(np.sort(np.concatenate([tr, va, te])), np.arange(1797))
  freq = np.bincount(d["labels"], minlength=10) / 1797
  for idx in (tr, va, te):  # stratified: per-class counts within one example of proportional
    counts = np.bincount(d["labels"][idx], minlength=10)
    assert np.all(np.abs(counts - freq * len(idx)) <= 1.0 + 1e-9)


def test_digits_batches_shapes_and_eval_mask():
  cfg = _digits()
  info = ip.dataset_info(cfg)
  assert (info.num_train_examples, info.num_eval_examples, info.num_test_examples) == (
    1212,
    135,
    450,
  )
  assert info.image_shape == (8, 8, 1) and info.num_classes == 10
  (b,) = _take(
    ip.build_input(cfg, split="train", batch_size=32, process_index=0, process_count=1), 1
  )
  assert b["image"].shape == (32, 8, 8, 1) and b["image"].dtype == np.float32
  assert b["label"].shape == (32,) and b["label"].dtype == np.int32
  assert 0.0 <= b["image"].min() and b["image"].max() <= 1.0
  batches = list(ip.build_input(cfg, split="eval", batch_size=64, process_index=0, process_count=1))
  assert len(batches) == 3 and all(x["image"].shape == (64, 8, 8, 1) for x in batches)
  mask = np.concatenate([x["mask"] for x in batches])
  assert mask.dtype == bool and mask.sum() == 135 and mask[:135].all()
  d = ip.load_digits()
  labels = np.concatenate([x["label"] for x in batches])[:135]
  np.testing.assert_array_equal(labels, d["labels"][d["val_idx"]])
  images = np.concatenate([x["image"] for x in batches])[:135, ..., 0]
  np.testing.assert_array_equal(images, d["images"][d["val_idx"]] / np.float32(16))


def test_digits_train_is_deterministic_and_resumable():
  cfg = _digits()
  kw = dict(split="train", batch_size=64, process_index=0, process_count=1)
  first = _take(ip.build_input(cfg, **kw), 22)  # 1212/64 = 18.9 steps per epoch: crosses an epoch
  again = _take(ip.build_input(cfg, **kw), 22)
  for a, b in zip(first, again, strict=True):
    _assert_batches_equal(a, b)
  for s in (1, 19, 21):
    (resumed,) = _take(ip.build_input(cfg, start_step=s, **kw), 1)
    _assert_batches_equal(resumed, first[s])
  (other,) = _take(ip.build_input(cfg, seed=1, **kw), 1)
  assert not np.array_equal(other["label"], first[0]["label"])
  # One epoch visits every training example exactly once.
  seen = np.concatenate([b["label"] for b in first])[:1212]
  d = ip.load_digits()
  np.testing.assert_array_equal(np.bincount(seen), np.bincount(d["labels"][d["train_idx"]]))


def test_train_stream_ends_after_num_batches():
  """A stage's loop asks for the steps it has left: the same batches, then the stream ends."""
  kw = dict(split="train", batch_size=64, process_index=0, process_count=1, start_step=17)
  full = _take(ip.build_input(_digits(), **kw), 3)
  bounded = list(ip.build_input(_digits(), num_batches=3, **kw))
  assert len(bounded) == 3
  for a, b in zip(full, bounded, strict=True):
    _assert_batches_equal(a, b)


def test_digits_train_batches_are_pinned():
  """The data order and augmentation of a seed are part of a run: a re-run or a resumed run of an
  older checkpoint must see the same batches. Reference taken from the pipeline before it was
  split into modules; the ops are integer (Philox, index_shuffle) and /16 is exact, so any CPU
  gives these bytes."""
  kw = dict(split="train", batch_size=64, process_index=0, process_count=1)
  batches = _take(ip.build_input(_digits(), **kw), 20)
  assert batches[0]["label"][:16].tolist() == [8, 4, 9, 1, 2, 0, 2, 8, 6, 8, 9, 5, 2, 1, 7, 5]
  digest = hashlib.sha256()
  for b in batches:
    digest.update(b["image"].tobytes())
    digest.update(b["label"].tobytes())
  assert digest.hexdigest() == "2b6db9a099ae11c822df3d82bbac70d06c818585af79156ede8b097f78573ac1"


@pytest.mark.parametrize("split,step", [("train", 0), ("train", 20), ("eval", 0), ("test", 0)])
def test_digits_process_slices_partition_the_global_batch(split, step):
  cfg = _digits()
  kw = dict(split=split, batch_size=64, start_step=step)
  (full,) = _take(ip.build_input(cfg, process_index=0, process_count=1, **kw), 1)
  for count in (2, 4):
    parts = [
      next(ip.build_input(cfg, process_index=p, process_count=count, **kw)) for p in range(count)
    ]
    assert all(len(x["label"]) == 64 // count for x in parts)
    merged = {k: np.concatenate([x[k] for x in parts]) for k in full}
    _assert_batches_equal(merged, full)


def test_eval_batch_counts_agree_across_processes():
  cfg = _digits()
  lengths = [
    len(list(ip.build_input(cfg, split="test", batch_size=48, process_index=p, process_count=3)))
    for p in range(3)
  ]
  assert lengths == [10, 10, 10]  # ceil(450 / 48)


def test_bad_arguments():
  cfg = _digits()
  with pytest.raises(ValueError, match="divisible"):
    ip.build_input(cfg, split="train", batch_size=10, process_index=0, process_count=3)
  with pytest.raises(ValueError, match="split must be"):
    ip.build_input(cfg, split="validation", process_index=0, process_count=1)
  with pytest.raises(ValueError, match="digits split"):
    ip.build_input(_digits(train_split="train[:50%]"), split="train", process_count=1)
  with pytest.raises(ValueError, match="image_size"):
    ip.dataset_info(_digits(image_size=16))
  with pytest.raises(ValueError, match="unknown dataset"):
    ip.default_data_config("mnist")


def test_cifar10_mocked(tmp_path):
  array_sources.tfds_arrays.cache_clear()
  cfg = ip.default_data_config("cifar10")
  cfg.data_dir = str(tmp_path)
  with tfds.testing.mock_data(num_examples=20):
    kw = dict(batch_size=8, process_index=0, process_count=1)
    train = _take(ip.build_input(cfg, split="train", **kw), 4)
    assert train[0]["image"].shape == (8, 32, 32, 3) and train[0]["image"].dtype == np.float32
    assert train[0]["label"].dtype == np.int32
    (resumed,) = _take(ip.build_input(cfg, split="train", start_step=3, **kw), 1)
    _assert_batches_equal(resumed, train[3])
    evals = list(ip.build_input(cfg, split="test", **kw))
    assert len(evals) == 3 and sum(x["mask"].sum() for x in evals) == 20
    info = ip.dataset_info(cfg)
  assert info.image_shape == (32, 32, 3) and info.num_classes == 10
  array_sources.tfds_arrays.cache_clear()


@pytest.mark.parametrize("size", [224, 40])
def test_imagenet_mocked_resizes(tmp_path, size):
  cfg = ip.default_data_config("imagenet2012")
  cfg.update(data_dir=str(tmp_path), image_size=size, shuffle_buffer=16)
  with tfds.testing.mock_data(num_examples=12):  # random small image sizes
    kw = dict(batch_size=4, process_index=0, process_count=1)
    train = _take(ip.build_input(cfg, split="train", **kw), 4)
    assert train[0]["image"].shape == (4, size, size, 3) and train[0]["image"].dtype == np.float32
    assert train[0]["label"].dtype == np.int32 and np.isfinite(train[0]["image"]).all()
    (resumed,) = _take(ip.build_input(cfg, split="train", start_step=3, **kw), 1)
    _assert_batches_equal(resumed, train[3])  # step 3 lies in the second epoch
    evals = list(ip.build_input(cfg, split="eval", batch_size=8, process_index=0, process_count=1))
    assert [x["image"].shape for x in evals] == [(8, size, size, 3)] * 2
    assert sum(x["mask"].sum() for x in evals) == 12
    info = ip.dataset_info(cfg)
  assert info.image_shape == (size, size, 3) and info.num_classes == 1000


def test_imagenet_missing_manual_dir_error(tmp_path):
  cfg = ip.default_data_config("imagenet2012")
  cfg.data_dir = str(tmp_path / "tfds")
  with pytest.raises(ip.ImageNetNotPreparedError) as err:
    ip.build_input(cfg, split="train", process_index=0, process_count=1)
  msg = str(err.value)
  manual = os.path.join(str(tmp_path / "tfds"), "downloads", "manual")
  for needle in (
    os.path.join(manual, "ILSVRC2012_img_train.tar"),
    os.path.join(manual, "ILSVRC2012_img_val.tar"),
    f"lr2vq prepare imagenet2012 --manual_dir {manual} --data_dir {tmp_path / 'tfds'}",
    "config.data.data_dir",
    "config.data.manual_dir",
  ):
    assert needle in msg
  # Archives present but several processes: refuse to prepare, say why.
  archives = tmp_path / "archives"
  archives.mkdir()
  for s in ("train", "val"):
    (archives / f"ILSVRC2012_img_{s}.tar").touch()
  cfg.manual_dir = str(archives)
  with pytest.raises(ip.ImageNetNotPreparedError, match="preparing is off"):
    ip.dataset_info(cfg, process_count=2)
