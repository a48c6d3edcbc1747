"""The NNX Variable types of LR²VQ state that is not trained by gradients.

`QuantState` holds τ, the frozen codes and the recorded settings; its linen collection name is
`quant`, so the linen ↔ NNX bridge and the export see the same layout. An optimizer built with
`nnx.Optimizer(model, tx, wrt=nnx.Param)` and `nnx.grad` (Param by default) never touch it.
`DkmState` is the state training DKM carries between calls (`QuantConfig.dkm_refresh` lists,
`QuantConfig.dkm_warm` offset; linen collection `dkm_lists`): written by the kernel's training
forward pass, never trained. `Losses` is what the quantize mode sows (β·commitment) and `nnx.capture(model, Losses)` returns.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx import variablelib

from lr2vq_jax.core.kernel import DKM_LISTS, LOSSES, QUANT


def _register(name: str, typ: type) -> type:
  """`nnx.register_variable_name`, idempotent for our own type (re-imports, reloads)."""
  known = variablelib.VariableTypeCache.get(name)
  if known is None or known.__qualname__ == typ.__qualname__:
    nnx.register_variable_name(name, typ, overwrite=True)
  return typ


class QuantState(nnx.Variable):
  """Non-trainable LR²VQ state: τ, frozen codes, recorded settings (linen collection `quant`)."""


class DkmState(nnx.Variable):
  """Training DKM's carried state: candidate lists, call counter, warm offset (`dkm_lists`)."""


class Losses(nnx.Intermediate):
  """Auxiliary losses a quantized kernel sows in training (β·commitment)."""


_register(QUANT, QuantState)
_register(LOSSES, Losses)
_register(DKM_LISTS, DkmState)


def sum_losses(captured) -> jax.Array:
  """The sum of every term in a State returned by `nnx.capture(model, Losses)`; 0.0 if empty."""
  leaves = jax.tree.leaves(captured)
  return sum((jnp.sum(x).astype(jnp.float32) for x in leaves), jnp.zeros((), jnp.float32))
