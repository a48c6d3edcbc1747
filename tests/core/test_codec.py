"""Encoding against a codebook and exact bit packing of codes."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lr2vq_jax.core.codec import bits_per_code, decode, encode, pack_codes, unpack_codes
from lr2vq_jax.core.distances import sq_distances


def test_encode_is_nearest_and_decode_gathers():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(301, 4)).astype(np.float32)
  cb = rng.normal(size=(17, 4)).astype(np.float32)
  codes = encode(x, cb, chunk_size=50)
  assert codes.dtype == jnp.int32 and codes.shape == (301,)
  np.testing.assert_array_equal(codes, np.asarray(sq_distances(x, cb)).argmin(1))
  np.testing.assert_array_equal(decode(codes, cb), cb[np.asarray(codes)])
  np.testing.assert_array_equal(encode(cb, cb), np.arange(17))


@pytest.mark.parametrize(
  ("k", "bits"), [(1, 1), (2, 1), (3, 2), (4, 2), (5, 3), (256, 8), (257, 9)]
)
def test_bits_per_code(k, bits):
  assert bits_per_code(k) == bits


@pytest.mark.parametrize("k", [2, 3, 16, 255, 256, 257, 1024, 65536])
@pytest.mark.parametrize("n", [0, 1, 7, 1001])
def test_round_trip_bit_exact(k, n):
  rng = np.random.default_rng(k + n)
  codes = rng.integers(0, k, size=n)
  if n:
    codes[0], codes[-1] = k - 1, 0  # extremes
  packed = pack_codes(codes, k)
  assert packed.dtype == np.uint8
  assert packed.size == math.ceil(n * math.ceil(math.log2(k)) / 8)
  out = unpack_codes(packed, n, k)
  assert out.dtype == np.int32
  np.testing.assert_array_equal(out, codes)


def test_bit_order_is_little_endian():
  # k = 8 (3 bits): codes 1, 2, 7 -> stream bits 100 010 111 -> byte0 = 0b11010001, byte1 = 0b1.
  np.testing.assert_array_equal(pack_codes(np.array([1, 2, 7]), 8), [0b11010001, 0b1])
  np.testing.assert_array_equal(pack_codes(np.array([0x1234]), 65536), [0x34, 0x12])


def test_invalid_inputs_raise():
  with pytest.raises(ValueError, match="out of range"):
    pack_codes(np.array([0, 3]), 3)
  with pytest.raises(ValueError, match="out of range"):
    pack_codes(np.array([-1]), 4)
  with pytest.raises(ValueError, match="integer dtype"):
    pack_codes(np.array([0.0, 1.0]), 4)
  for bad_k in (1, 65537, 2.5):
    with pytest.raises(ValueError, match="k must be"):
      pack_codes(np.array([0]), bad_k)
  packed = pack_codes(np.array([1, 2]), 3)
  with pytest.raises(ValueError, match="bytes"):
    unpack_codes(packed, 5, 3)
  with pytest.raises(ValueError, match="out of range"):
    unpack_codes(np.array([0b11], np.uint8), 1, 3)  # code 3 with k = 3
  with pytest.raises(ValueError, match="padding"):
    unpack_codes(np.array([0b100], np.uint8), 1, 4)


@settings(max_examples=60, deadline=None)
@given(
  k=st.integers(2, 65536),
  shape=st.lists(st.integers(0, 9), min_size=1, max_size=3),
  seed=st.integers(0, 2**32 - 1),
)
def test_pack_unpack_property(k, shape, seed):
  rng = np.random.default_rng(seed)
  codes = rng.integers(0, k, size=shape, dtype=np.int64).astype(np.uint32 if k > 2 else np.int8)
  n = codes.size
  packed = pack_codes(codes, k)
  assert packed.shape == (-(-n * bits_per_code(k) // 8),)
  out = unpack_codes(packed, n, k)
  assert out.shape == (n,)
  np.testing.assert_array_equal(out, codes.reshape(-1))


@settings(max_examples=40, deadline=None)
@given(bits=st.integers(1, 16), data=st.data())
def test_packed_size_is_tight_property(bits, data):
  k = data.draw(st.integers(2 ** (bits - 1) + 1, 2**bits)) if bits > 1 else 2
  n = data.draw(st.integers(0, 200))
  packed = pack_codes(np.full(n, k - 1), k)
  assert bits_per_code(k) == bits
  assert packed.size * 8 - n * bits in range(8)  # fewer than 8 padding bits
