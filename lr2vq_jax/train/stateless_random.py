"""TensorFlow's stateless random primitives on CPU, in NumPy and vectorized, bit for bit.

The digits stream (`array_stream`) draws its shuffle and crops with these instead of TensorFlow's
ops, so a digits run never imports TensorFlow, yet reads exactly the batches tf.data produced:
Philox-4x32-10 with TF's seed scrambling (`StatelessRandomGetKeyCounter`), the int64 draw behind
`tf.random.experimental.stateless_fold_in`, the int32 draw behind `tf.image.stateless_random_crop`
and the Simon-cipher permutation behind `tf.random.experimental.index_shuffle`.
"""

from __future__ import annotations

import math

import numpy as np

_U32 = np.uint64(0xFFFFFFFF)
_MUL = (np.uint64(0xD2511F53), np.uint64(0xCD9E8D57))
_WEYL = (np.uint32(0x9E3779B9), np.uint32(0xBB67AE85))
_SCRAMBLE_KEY = (0x3EC8F720, 0x02461E29)  # TF's fixed key for turning a seed into key + counter
_INDEX_SHUFFLE_PAD = 498247692  # the first of the three key words TF's python wrapper prepends
_TABLE_BITS = 20  # index_shuffle tabulates blocks up to 2**20 values (8 MiB)


def philox(counter: tuple, key: tuple) -> tuple[np.ndarray, ...]:
  """Philox-4x32 with 10 rounds: 4 counter words and 2 key words (uint32 arrays) -> 4 words."""
  c0, c1, c2, c3 = (np.asarray(c, np.uint32) for c in counter)
  k0, k1 = (np.asarray(k, np.uint32) for k in key)
  with np.errstate(over="ignore"):  # the key words wrap around 2**32 by design
    return _philox_rounds(c0, c1, c2, c3, k0, k1)


def _philox_rounds(c0, c1, c2, c3, k0, k1) -> tuple[np.ndarray, ...]:
  for r in range(10):
    p0, p1 = _MUL[0] * c0.astype(np.uint64), _MUL[1] * c2.astype(np.uint64)
    hi0, lo0 = (p0 >> np.uint64(32)).astype(np.uint32), (p0 & _U32).astype(np.uint32)
    hi1, lo1 = (p1 >> np.uint64(32)).astype(np.uint32), (p1 & _U32).astype(np.uint32)
    c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    if r < 9:
      k0, k1 = k0 + _WEYL[0], k1 + _WEYL[1]
  return c0, c1, c2, c3


def _words(x) -> tuple[np.ndarray, np.ndarray]:
  """(low, high) uint32 words of int64 values (two's complement, as TF reads a seed)."""
  u = np.asarray(x, np.int64).astype(np.uint64)
  return (u & _U32).astype(np.uint32), (u >> np.uint64(32)).astype(np.uint32)


def _first_draw(seed0, seed1) -> tuple[np.ndarray, ...]:
  """The first Philox block of the stream TF's default CPU algorithm derives from seed [s0, s1]."""
  a, b = _words(seed0)
  c, d = _words(seed1)
  zero = np.zeros(np.broadcast(a, c).shape, np.uint32)
  mix = philox((a, b, c, d), (zero + _SCRAMBLE_KEY[0], zero + _SCRAMBLE_KEY[1]))
  return philox((zero, zero, mix[2], mix[3]), (mix[0], mix[1]))


def fold_in_first(seed0, seed1) -> np.ndarray:
  """First word of `stateless_fold_in([s0, s1], data)` (int64; the second word is `data`)."""
  w = _first_draw(seed0, seed1)
  return ((w[1].astype(np.uint64) << np.uint64(32)) | w[0].astype(np.uint64)).view(np.int64)


def uniform_int32(seed0, seed1, count: int, maxval: int) -> list[np.ndarray]:
  """`stateless_random_uniform([count], seed, minval=0, maxval, int32)` as `count` arrays (<= 4)."""
  if not 0 < count <= 4:
    raise ValueError(f"count must be in 1..4, got {count}")
  w = _first_draw(seed0, seed1)
  return [(w[i] % np.uint32(maxval)).astype(np.int32) for i in range(count)]


def _simon_round_keys(key: tuple[int, int, int], half: int, rounds: int) -> list[int]:
  mask = (1 << half) - 1
  rk = [k & mask for k in key]
  z, c = 0x7369F885192C0EF5 & mask, 0xFFFFFFFC & mask

  def rotr(x: int, r: int) -> int:
    return ((x >> r) | (x << (half - r))) & mask

  for i in range(3, rounds):
    rk.append(c ^ (z & 1) ^ rk[i - 3] ^ rotr(rk[i - 1], 3) ^ rotr(rk[i - 1], 4))
    z >>= 1
  return rk


def _simon_encrypt(v: np.ndarray, round_keys: list[int], half: int) -> np.ndarray:
  h, mask = np.uint64(half), np.uint64((1 << half) - 1)

  def rotl(x: np.ndarray, r: int) -> np.ndarray:
    return ((x << np.uint64(r)) | (x >> np.uint64(half - r))) & mask

  def f(x: np.ndarray) -> np.ndarray:
    return (rotl(x, 1) & rotl(x, 8)) ^ rotl(x, 2)

  left, right = (v >> h) & mask, v & mask
  for i in range(0, len(round_keys), 2):
    left = left ^ f(right) ^ np.uint64(round_keys[i])
    right = right ^ f(left) ^ np.uint64(round_keys[i + 1])
  return (left << h) | right


def index_shuffle(index: np.ndarray, seed: tuple[int, int], max_index: int) -> np.ndarray:
  """`tf.random.experimental.index_shuffle(index, seed, max_index)` (rounds 4) for int64 `index`.

  A Simon cipher on the smallest even block (>= 16 bits) holding `max_index`, cycle-walked until the
  value is <= max_index: a permutation of [0, max_index] per (seed, max_index)."""
  index = np.asarray(index, np.int64).astype(np.uint64)
  if max_index == 0:
    return np.zeros(index.shape, np.int64)
  bits = math.ceil(math.log2(max_index))
  bits = max(bits + bits % 2, 16)
  key = (_INDEX_SHUFFLE_PAD, seed[0] & 0xFFFFFFFF, seed[1] & 0xFFFFFFFF)
  round_keys = _simon_round_keys(key, bits // 2, 4)
  if bits <= _TABLE_BITS:  # encrypt the whole block once: the walk is then table look-ups
    table = _simon_encrypt(np.arange(1 << bits, dtype=np.uint64), round_keys, bits // 2)
    step = table.__getitem__
  else:

    def step(v: np.ndarray) -> np.ndarray:
      return _simon_encrypt(v, round_keys, bits // 2)

  out = step(index)
  over = out > np.uint64(max_index)
  while over.any():  # cycle-walk the values outside [0, max_index] back into it
    out[over] = step(out[over])
    over = out > np.uint64(max_index)
  return out.astype(np.int64)
