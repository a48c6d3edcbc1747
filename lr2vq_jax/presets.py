"""The paper's four compression regimes (PQF/BGD "small" and "large" blocks) as rule tuples.

First conv kept in fp32; 3×3 convs m = 9 (small) / 18 (large); 1×1 convs (downsample, and the
ResNet-50 bottleneck conv1/conv3) m = 4, except ResNet-50 large m = 8; fc m = 4 with k = 2048
(ResNet-18) / 1024 (ResNet-50); k = 256 elsewhere. d = None (d̃ = m): the PQF-convention sizes do not
depend on d̃, so set it per experiment, e.g. `dataclasses.replace(rule, d=...)` or `with_d`.
"""

from __future__ import annotations

import dataclasses

from lr2vq_jax.core.rules import Rule

_FIRST = Rule(r"^conv1$", skip=True)


def _resnet18(m3x3: int) -> tuple[Rule, ...]:
  return (
    _FIRST,
    Rule(r"^layer\d+_\d+/conv[12]$", k=256, m=m3x3),
    Rule(r"^layer\d+_\d+/downsample_conv$", k=256, m=4),
    Rule(r"^fc$", k=2048, m=4),
  )


def _resnet50(m3x3: int, m1x1: int) -> tuple[Rule, ...]:
  return (
    _FIRST,
    Rule(r"^layer\d+_\d+/conv2$", k=256, m=m3x3),
    Rule(r"^layer\d+_\d+/(conv1|conv3|downsample_conv)$", k=256, m=m1x1),
    Rule(r"^fc$", k=1024, m=4),
  )


resnet18_small_blocks = _resnet18(9)
resnet18_large_blocks = _resnet18(18)
resnet50_small_blocks = _resnet50(9, 4)
resnet50_large_blocks = _resnet50(18, 8)

# The embedded default (DigitsCNN on the 8×8 digits): conv2 and conv3 hold 98% of the weights;
# k = 16 separates the methods (at k = 64 even plain PQ is within a point of float).
digits_small_blocks = (Rule(r"^conv[23]$", k=16, m=9),)
digits_large_blocks = (Rule(r"^conv[23]$", k=16, m=18),)

PRESETS: dict[str, tuple[Rule, ...]] = {
  "resnet18_small_blocks": resnet18_small_blocks,
  "resnet18_large_blocks": resnet18_large_blocks,
  "resnet50_small_blocks": resnet50_small_blocks,
  "resnet50_large_blocks": resnet50_large_blocks,
  "digits_small_blocks": digits_small_blocks,
  "digits_large_blocks": digits_large_blocks,
}


def get_preset(name: str) -> tuple[Rule, ...]:
  """The rules of preset `name`; KeyError listing the known names otherwise."""
  try:
    return PRESETS[name]
  except KeyError:
    raise KeyError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}") from None


def with_d(rules: tuple[Rule, ...], d: int | float) -> tuple[Rule, ...]:
  """`rules` with d̃ set on every non-skip rule: an int d̃, or a float fraction of m (rounded, ≥ 1)."""
  out = []
  for r in rules:
    if r.skip:
      out.append(r)
      continue
    dd = d if isinstance(d, int) else max(1, round(d * r.m))
    out.append(dataclasses.replace(r, d=min(dd, r.m)))
  return tuple(out)
