"""Subvectors in PyTorch/PQF order: NumPy OIHW reference, exact round trips, errors, clamp."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lr2vq_jax.core.subvectors import (
  SubvectorError,
  clamp_k,
  from_subvectors,
  num_subvectors,
  row_length,
  to_subvectors,
)


@pytest.mark.parametrize("m", [1, 3, 9, 18, 36])
def test_conv_order_matches_pytorch_oihw(m):
  rng = np.random.default_rng(0)
  oihw = rng.normal(size=(8, 4, 3, 3)).astype(np.float32)  # PyTorch Conv2d weight
  reference = oihw.reshape(8, -1).reshape(-1, m)  # PQF: reshape(c_out, -1) then (-1, m)
  hwio = oihw.transpose(2, 3, 1, 0)  # the same weight as a Flax kernel
  np.testing.assert_array_equal(to_subvectors(hwio, m), reference)
  np.testing.assert_array_equal(np.asarray(to_subvectors(jnp.asarray(hwio), m)), reference)


def test_first_subvector_is_one_3x3_kernel():
  oihw = np.arange(2 * 3 * 3 * 3, dtype=np.float32).reshape(2, 3, 3, 3)
  x = to_subvectors(oihw.transpose(2, 3, 1, 0), 9)
  np.testing.assert_array_equal(x[0], oihw[0, 0].reshape(-1))  # output 0, input 0
  np.testing.assert_array_equal(x[1], oihw[0, 1].reshape(-1))  # output 0, input 1
  np.testing.assert_array_equal(x[3], oihw[1, 0].reshape(-1))  # output 1, input 0


def test_dense_order_matches_pytorch_linear():
  rng = np.random.default_rng(1)
  weight = rng.normal(size=(10, 12)).astype(np.float32)  # PyTorch Linear (out, in)
  np.testing.assert_array_equal(to_subvectors(weight.T, 4), weight.reshape(-1, 4))


def test_numpy_in_numpy_out_jax_in_jax_out():
  k = np.ones((3, 3, 2, 4), np.float32)
  assert isinstance(to_subvectors(k, 9), np.ndarray)
  assert isinstance(to_subvectors(jnp.asarray(k), 9), jnp.ndarray)
  assert isinstance(from_subvectors(to_subvectors(k, 9), k.shape), np.ndarray)


@st.composite
def kernel_and_m(draw):
  spatial = draw(st.lists(st.integers(1, 3), min_size=0, max_size=2))
  cin, cout = draw(st.integers(1, 6)), draw(st.integers(1, 5))
  shape = (*spatial, cin, cout)
  length = row_length(shape)
  m = draw(st.sampled_from([q for q in range(1, length + 1) if length % q == 0]))
  return shape, m


@settings(max_examples=60, deadline=None)
@given(kernel_and_m(), st.integers(0, 2**31 - 1))
def test_round_trip_and_shapes(shape_m, seed):
  shape, m = shape_m
  w = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
  x = to_subvectors(w, m)
  n = num_subvectors(shape, m)
  assert x.shape == (n, m)
  assert n * m == w.size
  np.testing.assert_array_equal(from_subvectors(x, shape), w)
  # The torch view: each output channel is a contiguous run of row_length / m subvectors.
  torch_rows = np.moveaxis(w, -1, 0)
  torch_rows = np.moveaxis(torch_rows, -1, 1).reshape(shape[-1], -1)
  np.testing.assert_array_equal(x.reshape(shape[-1], -1), torch_rows)


def test_jax_round_trip_exact():
  w = jnp.asarray(np.random.default_rng(2).normal(size=(3, 3, 16, 8)), jnp.float32)
  np.testing.assert_array_equal(from_subvectors(to_subvectors(w, 18), w.shape), w)


def test_row_length_and_count():
  assert row_length((3, 3, 64, 128)) == 576
  assert row_length((512, 1000)) == 512
  assert num_subvectors((3, 3, 64, 128), 18) == 128 * 32
  assert num_subvectors((512, 1000), 4) == 128000


def test_m_not_dividing_row_length_is_a_clear_error():
  with pytest.raises(SubvectorError) as info:
    to_subvectors(np.zeros((3, 3, 5, 8), np.float32), 4)
  msg = str(info.value)
  for part in ["(3, 3, 5, 8)", "45", "m=4", "1, 3, 5, 9, 15, 45"]:
    assert part in msg
  assert isinstance(info.value, ValueError)
  with pytest.raises(SubvectorError):
    num_subvectors((7,), 1)
  with pytest.raises(SubvectorError):
    from_subvectors(np.zeros((10, 4)), (3, 3, 2, 2))


@pytest.mark.parametrize(
  "k, n, expected",
  [(256, 2048, 256), (256, 1024, 256), (256, 1023, 128), (256, 512, 128), (2048, 128000, 2048),
   (256, 8, 2), (256, 11, 2), (256, 12, 2), (256, 16, 4), (3, 1000, 3)],
)  # fmt: skip
def test_clamp_k(k, n, expected):
  assert clamp_k(k, n) == expected


@given(st.integers(2, 65536), st.integers(8, 10**7))
def test_clamp_k_property(k, n):
  c = clamp_k(k, n)
  assert 2 <= c <= k
  assert c == k or (c & (c - 1) == 0 and 4 * c <= n < 8 * c)


def test_clamp_k_rejects_tiny_layers():
  with pytest.raises(ValueError, match="n=7"):
    clamp_k(256, 7)
