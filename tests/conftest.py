"""Test-wide settings: private temp dirs and a cheaper PRNG for compile-heavy model inits.

XLA:CPU compiles threefry-based inits of a ResNet several times slower than "rbg"; the tests
compare runs against each other, never against fixed random values, so the generator is free.
Subprocesses inherit both settings through the environment.
"""

import os
import tempfile

os.environ.setdefault("JAX_DEFAULT_PRNG_IMPL", "rbg")
_TMP = tempfile.mkdtemp(prefix="lr2vq-tests-")
os.environ["TMPDIR"] = _TMP
tempfile.tempdir = _TMP

import jax  # noqa: E402

jax.config.update("jax_default_prng_impl", os.environ["JAX_DEFAULT_PRNG_IMPL"])
