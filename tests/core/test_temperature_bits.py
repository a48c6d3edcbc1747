"""τ computed with fewer eager programs keeps the bits of the op-by-op formula, eager and jitted."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lr2vq_jax.core import codec
from lr2vq_jax.core.kernel import temperature


def _op_by_op(z, codebook, alpha):
  z, codebook = z.astype(jnp.float32), codebook.astype(jnp.float32)
  codes = codec.encode(z, codebook)
  err = jnp.sum((z - codebook[codes]) ** 2, axis=-1)
  return jnp.maximum(alpha * jnp.mean(err), 1e-12)


def test_temperature_has_the_bits_of_the_op_by_op_formula():
  # data where jitting the whole formula as one program changes τ's last bit (its reductions,
  # fused with their operands, sum in another order): 0.01617671 for the eager 0.016176712
  rng = np.random.default_rng(1)
  z = jnp.asarray(rng.normal(size=(512, 9)).astype(np.float32) * 0.3)
  c = jnp.asarray(rng.normal(size=(32, 9)).astype(np.float32) * 0.3)
  for alpha in (0.03, 1e-12):
    want = np.asarray(_op_by_op(z, c, alpha))
    assert np.asarray(temperature(z, c, alpha)).tobytes() == want.tobytes()
  jitted = jax.jit(temperature, static_argnums=2)(z, c, 0.03)
  assert (
    np.asarray(jitted).tobytes()
    == np.asarray(jax.jit(_op_by_op, static_argnums=2)(z, c, 0.03)).tobytes()
  )
