"""Quantize an unedited NNX model by rules on module paths: one `layer.kernel` swap per layer.

A layer is any `nnx.Linear`, `LinearGeneral`, `Conv` or `Einsum` (or a subclass: their call code
reads `self.kernel[...]`); its path is its attribute path joined by "/" (`blocks/0/mlp`), matched
by the rules with `re.search`, first match wins, a rule that selects no layer is an error. NNX paths
are attribute paths, linen paths scope names (`blocks_0`): write rules for the front end in use.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

from flax import nnx

from lr2vq_jax.core.accounting import table_bytes
from lr2vq_jax.core.rules import LayerPlan, Rule, as_rules, k_cell, k_notes, plan_layer, resolve
from lr2vq_jax.nnx.kernel import QuantizedKernel

LAYER_TYPES = (nnx.Linear, nnx.LinearGeneral, nnx.Conv, nnx.Einsum)


def path_name(path: tuple) -> str:
  """A module path as rules see it: attribute names and list indices joined by '/'."""
  return "/".join(map(str, path))


def _einsum_out_dims(layer: nnx.Einsum) -> int:
  """Output axes of an Einsum kernel whose contracted axes come first; ValueError otherwise."""
  spec = getattr(layer, "einsum_str", None)
  where = f"{type(layer).__name__}(einsum_str={spec!r})"
  if not spec or "..." in spec.split("->")[0].split(",")[1]:
    raise ValueError(f"{where}: quantizing needs a fixed einsum_str without '...' in the kernel")
  lhs, out = spec.split("->")
  inputs, kernel = lhs.split(",")
  contracted = [a for a in kernel if a in inputs and a not in out]
  free = [a for a in kernel if a in out and a not in inputs]
  if kernel != "".join(contracted + free):
    raise ValueError(
      f"{where}: the kernel's axes must be the contracted ones first, then output ones "
      f"(like 'bd,dh->bh'); got kernel axes {kernel!r} (contracted {contracted}, output {free}). "
      "Write the einsum with the contracted kernel axes leading, or leave this layer float "
      "(a skip rule)"
    )
  return len(free)


def n_out_dims(layer: nnx.Module) -> int | None:
  """Output axes of a dense kernel (subvectors over prod(in) × prod(out)); None for convs."""
  if isinstance(layer, nnx.Conv):
    return None
  if isinstance(layer, nnx.LinearGeneral):
    if layer.batch_axis:
      raise ValueError(f"{type(layer).__name__}: quantizing kernels with batch_axis is unsupported")
    return len(layer.out_features)
  if isinstance(layer, nnx.Einsum):
    return _einsum_out_dims(layer)
  return 1


def iter_layers(model: nnx.Module) -> Iterator[tuple[str, nnx.Module]]:
  """(path, layer) of every quantizable layer, float or already quantized."""
  for path, module in nnx.iter_modules(model):
    if isinstance(module, LAYER_TYPES) and hasattr(module, "kernel"):
      yield path_name(path), module


def matched_layers(
  model: nnx.Module, rules: tuple[Rule, ...]
) -> list[tuple[str, nnx.Module, Rule]]:
  """(path, layer, rule or None) of every layer; ValueError for a rule that selects none."""
  found = [(path, layer, resolve(rules, path)) for path, layer in iter_layers(model)]
  used = {id(rule) for _, _, rule in found if rule is not None}
  unused = [r for r in rules if id(r) not in used]
  if unused:
    paths = [p for p, _, _ in found]
    raise ValueError(f"rule {unused[0]!r} matches no layer; layers are: {paths}")
  return found


def layer_plan(path: str, layer: nnx.Module, rule: Rule, rules: Sequence[Rule]) -> LayerPlan:
  """The geometry of one layer's kernel under `rule` (shape only: works on abstract models)."""
  kernel = layer.kernel
  if isinstance(kernel, QuantizedKernel):
    return kernel.plan
  index = list(rules).index(rule)
  return plan_layer(path, tuple(kernel.shape), rule, index, n_out_dims=n_out_dims(layer))


def plan_model(model: nnx.Module, rules: Rule | Sequence[Rule]) -> dict[str, LayerPlan]:
  """Geometry of every layer the rules compress; no example inputs (kernel shapes suffice, so an
  `nnx.eval_shape` model works). A rule that matches no layer is an error."""
  rules = as_rules(rules)
  return {
    path: layer_plan(path, layer, rule, rules)
    for path, layer, rule in matched_layers(model, rules)
    if rule is not None and not rule.skip
  }


def describe(model: nnx.Module, rules: Rule | Sequence[Rule]) -> str:
  """A table of every linear layer: rule, n, k (requested→used where clamped), m, d̃, bits per
  code and payload bytes (packed codes + fp16 k×m codebook, or the fp32 kernel if left float)."""
  rules = as_rules(rules)
  rows = [("layer", "rule", "shape", "n", "k", "m", "d", "bits", "bytes")]
  total, ks = 0, []
  for path, layer, rule in matched_layers(model, rules):
    shape = tuple(layer.kernel.shape)
    if rule is None or rule.skip:
      nbytes = 4 * math.prod(shape)
      label = "float" if rule is None else f"{rule.pattern} (skip)"
      rows.append((path, label, str(shape), "-", "-", "-", "-", "32", str(nbytes)))
    else:
      plan = layer_plan(path, layer, rule, rules)
      nbytes = -(-plan.code_bits // 8) + table_bytes(plan.k, plan.m, plan.d, "codebook")
      ks.append((path, rule.k, plan.k))
      cells = (plan.n, k_cell(rule.k, plan.k), plan.m, plan.d, plan.bits_per_code, nbytes)
      rows.append((path, rule.pattern, str(shape), *map(str, cells)))
    total += nbytes
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
  lines.insert(1, "-" * len(lines[0]))
  lines += k_notes(ks)
  lines.append(
    f"total {total} bytes (kernels only; biases and norms not included); bits: per code "
    "(ceil(log2 k)), 32 for a float kernel's weights"
  )
  return "\n".join(lines)
