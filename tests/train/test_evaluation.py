"""Evaluation passes: a small split read once and replayed, one compiled step per float model."""

import jax
import numpy as np
import pytest

ip = pytest.importorskip("lr2vq_jax.train.input_pipeline")
from lr2vq_jax import presets  # noqa: E402
from lr2vq_jax.models import create_model  # noqa: E402
from lr2vq_jax.nn import quantize_model  # noqa: E402
from lr2vq_jax.train import evaluation, partitioning  # noqa: E402


def _digits():
  cfg = ip.default_data_config("digits")
  cfg.eval_batch_size = 128
  return cfg


def _assert_same_batches(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b, strict=True):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_eval_batches_replay_the_build_input_pass(monkeypatch):
  cfg = _digits()
  for split in ("eval", "test"):
    streamed = list(ip.build_input(cfg, split=split))
    cached = ip.eval_batches(cfg, split)
    _assert_same_batches(streamed, list(cached))
    assert ip.eval_batches(cfg, split) is cached  # built once per process, replayed
    assert not cached[0]["image"].flags.writeable  # nobody can change what the next pass reads
  other = _digits()
  other.eval_batch_size = 64  # another config: its own pass
  assert [len(ip.eval_batches(c, "test")) for c in (cfg, other)] == [4, 8]  # 450 test digits
  monkeypatch.setattr(ip, "EVAL_CACHE_BYTES", 0)  # a split over the cap streams every time
  fresh = _digits()
  fresh.seed = 7
  streaming = ip.eval_batches(fresh, "test")
  assert not isinstance(streaming, tuple)
  _assert_same_batches(list(streaming), list(ip.build_input(fresh, split="test")))
  with pytest.raises(ValueError, match="'eval' or 'test'"):
    ip.eval_batches(cfg, "train")


def test_float_mode_model_evaluates_as_its_float_model_with_one_compiled_step():
  float_model = create_model("digits_cnn", num_classes=10)
  model = quantize_model(float_model, presets.digits_small_blocks, "float")
  variables = jax.jit(lambda k: model.init(k, np.zeros((1, 8, 8, 1), np.float32), train=False))(
    jax.random.key(0)
  )
  mesh = partitioning.make_mesh()
  data = lambda: ip.eval_batches(_digits(), "test")  # noqa: E731
  evaluation._jitted_eval_step.cache_clear()
  on_device = evaluation.evaluate(model, variables, data, mesh)
  host = evaluation.evaluate(float_model, partitioning.to_host(variables), data, mesh)
  assert on_device == host  # the same numbers, to the bit
  info = evaluation._jitted_eval_step.cache_info()
  assert (info.misses, info.hits) == (1, 1)  # one jitted step for both
  assert 0 < on_device["top1"] <= 100 and np.isfinite(on_device["loss"])
