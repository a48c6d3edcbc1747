"""Drop-in replacements for flax.linen Dense, DenseGeneral and Conv with LR²VQ kernels.

Each layer takes the same constructor arguments and call semantics as its flax.linen parent,
plus `rule` (k, m, d̃), `mode` (a `Mode` or its name) and `train`. Only the kernel changes: it is
computed from the mode's variables (see `kernel.py`); bias, strides, padding, dilation and groups
are flax's own. With `mode="float"` or `rule=None` the layer is exactly its flax.linen parent.
(`stage`, the field's former name, is still readable, with a DeprecationWarning.)
"""

from __future__ import annotations

import flax.linen as nn

from lr2vq_jax.core.mode import Mode, deprecated_stage
from lr2vq_jax.core.rules import Rule
from lr2vq_jax.nn.kernel import QuantConfig, quantized_kernel


def n_out_dims(mdl: nn.Module) -> int | None:
  """Output axes of a dense kernel (its subvector view is prod(in) × prod(out)); None for convs."""
  if isinstance(mdl, nn.Conv):
    return None
  if isinstance(mdl, nn.DenseGeneral):
    if mdl.batch_dims:
      raise ValueError(f"{type(mdl).__name__}: quantizing kernels with batch_dims is unsupported")
    return len(mdl.features) if isinstance(mdl.features, tuple | list) else 1
  return 1


class _QuantizedKernelMixin:
  """Overrides `param("kernel", ...)` to return the LR²VQ kernel of the layer's mode."""

  @property
  def stage(self) -> Mode:
    """Deprecated: the layer's `mode`."""
    return deprecated_stage(self)

  def param(self, name, init_fn, *init_args, unbox=True, **init_kwargs):
    if name != "kernel" or self.rule is None or self.rule.skip or self.mode == Mode.FLOAT:
      return super().param(name, init_fn, *init_args, unbox=unbox, **init_kwargs)
    shape = init_args[0]
    param_dtype = init_args[1] if len(init_args) > 1 else self.param_dtype
    return quantized_kernel(
      self,
      init_fn=init_fn,
      shape=shape,
      param_dtype=param_dtype,
      rule=self.rule,
      mode=self.mode,
      train=self.train,
      config=self.quant,
      n_out_dims=n_out_dims(self),
    )


class Dense(_QuantizedKernelMixin, nn.Dense):
  """`flax.linen.Dense` whose kernel is LR²VQ-quantized according to `rule` and `mode`."""

  rule: Rule | None = None
  mode: Mode | str = Mode.FLOAT
  train: bool = False
  quant: QuantConfig = QuantConfig()


class DenseGeneral(_QuantizedKernelMixin, nn.DenseGeneral):
  """`flax.linen.DenseGeneral` (no batch_dims) with an LR²VQ kernel; subvectors over prod(in)."""

  rule: Rule | None = None
  mode: Mode | str = Mode.FLOAT
  train: bool = False
  quant: QuantConfig = QuantConfig()


class Conv(_QuantizedKernelMixin, nn.Conv):
  """`flax.linen.Conv` whose kernel is LR²VQ-quantized; subvectors in PyTorch OIHW order."""

  rule: Rule | None = None
  mode: Mode | str = Mode.FLOAT
  train: bool = False
  quant: QuantConfig = QuantConfig()
