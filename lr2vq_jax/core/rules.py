"""Compression rules: regex on a layer's module path -> (k, m, d̃) or skip. First match wins.

A layer's path is its module path joined by "/" (e.g. "conv1", "layer1_0/conv1", "fc"), matched
with `re.search`, so anchor patterns ("^conv1$") when a bare name would also match deeper layers.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from lr2vq_jax.core import codec, subvectors
from lr2vq_jax.core.codec import MAX_K


@dataclasses.dataclass(frozen=True)
class Rule:
  """Compress layers whose path matches `pattern` with k centroids of subvector length m and d̃ = d.

  `d=None` means d̃ = m (plain product quantization, no low rank). `skip=True` keeps matching layers
  in float (and takes no k/m/d). Validated on construction; d ≤ m is checked again per layer.
  """

  pattern: str
  k: int | None = None
  m: int | None = None
  d: int | None = None
  skip: bool = False

  def __post_init__(self):
    if not isinstance(self.pattern, str):
      raise TypeError(f"Rule pattern must be a str, got {type(self.pattern).__name__}")
    try:
      re.compile(self.pattern)
    except re.error as e:
      raise ValueError(f"Rule pattern {self.pattern!r} is not a valid regex: {e}") from None
    if self.skip:
      if (self.k, self.m, self.d) != (None, None, None):
        raise ValueError(f"{self!r}: a skip rule takes no k, m or d")
      return
    if self.k is None or self.m is None:
      raise ValueError(f"{self!r}: k and m are required unless skip=True")
    for name in ("k", "m", "d"):
      value = getattr(self, name)
      if value is not None and (isinstance(value, bool) or int(value) != value):
        raise ValueError(f"{self!r}: {name} must be an integer, got {value!r}")
    if not 2 <= self.k <= MAX_K:
      raise ValueError(f"{self!r}: k must be in [2, {MAX_K}]")
    if self.m < 1:
      raise ValueError(f"{self!r}: m must be >= 1")
    if self.d is not None and not 1 <= self.d <= self.m:
      raise ValueError(f"{self!r}: d must be between 1 and m={self.m}")

  def matches(self, path: str) -> bool:
    return re.search(self.pattern, path) is not None

  def __repr__(self) -> str:
    if self.skip:
      return f"Rule({self.pattern!r}, skip)"
    d = "" if self.d is None else f", d={self.d}"
    return f"Rule({self.pattern!r}, k={self.k}, m={self.m}{d})"


def as_rules(rules: Rule | Sequence[Rule]) -> tuple[Rule, ...]:
  """A tuple of rules from a sequence of them or a single `Rule`; TypeError on anything else."""
  rules = (rules,) if isinstance(rules, Rule) else tuple(rules)
  for rule in rules:
    if not isinstance(rule, Rule):
      raise TypeError(f"rules must be Rule instances, got {rule!r}")
  return rules


def vanilla(rules: Rule | Sequence[Rule]) -> tuple[Rule, ...]:
  """The same rules with d̃ = m: no low-rank representation (PQ and vanilla DKM)."""
  return tuple(dataclasses.replace(r, d=None) for r in as_rules(rules))


def parse_rules(spec: str | Sequence[str]) -> tuple[Rule, ...]:
  """Rules from text, as a config field or the command line holds them: "PATTERN:k=K,m=M[,d=D]"
  or "PATTERN:skip", several joined by ";" (or given as a list). ValueError names a bad one."""
  items = spec.split(";") if isinstance(spec, str) else list(spec)
  rules = []
  for item in (i.strip() for i in items):
    if not item:
      continue
    pattern, sep, fields = item.rpartition(":")
    if not sep or not pattern:
      raise ValueError(f"rule {item!r}: write PATTERN:k=K,m=M[,d=D] or PATTERN:skip")
    if fields.strip() == "skip":
      rules.append(Rule(pattern, skip=True))
      continue
    try:
      kv = dict(f.split("=") for f in fields.split(","))
      values = {name.strip(): int(v) for name, v in kv.items()}
    except ValueError:
      raise ValueError(f"rule {item!r}: fields must be k=K,m=M[,d=D] integers") from None
    if not set(values) <= {"k", "m", "d"}:
      raise ValueError(f"rule {item!r}: unknown fields {sorted(set(values) - {'k', 'm', 'd'})}")
    rules.append(Rule(pattern, **values))
  if not rules:
    raise ValueError(f"rules {spec!r}: no rule given")
  return tuple(rules)


def resolve(rules: Sequence[Rule], path: str) -> Rule | None:
  """The first rule whose pattern `re.search`es `path`, or None."""
  for rule in rules:
    if rule.matches(path):
      return rule
  return None


@dataclasses.dataclass(frozen=True)
class LayerPlan:
  """How one kernel is compressed: n subvectors of length m, k centroids (after clamp), d̃ = d.

  `view_shape` is what is cut into subvectors: the kernel shape itself for convs (HWIO) and
  2-D dense kernels, (prod in, prod out) for a DenseGeneral kernel with several in/out axes.
  """

  path: str
  shape: tuple[int, ...]
  n: int
  k: int
  m: int
  d: int
  rule_index: int
  view_shape: tuple[int, ...] | None = None

  def __post_init__(self):
    if self.view_shape is None:
      object.__setattr__(self, "view_shape", self.shape)

  @property
  def bits_per_code(self) -> int:
    return codec.bits_per_code(self.k)

  @property
  def code_bits(self) -> int:
    return self.n * self.bits_per_code

  def to_rows(self, kernel):
    """The kernel's subvectors X (n, m) in PQF order (NumPy in, NumPy out)."""
    if isinstance(kernel, np.ndarray):
      return subvectors.to_subvectors(kernel.reshape(self.view_shape), self.m)
    return _rows(kernel, tuple(self.view_shape), self.m)

  def to_kernel(self, rows):
    """Inverse of `to_rows`."""
    return subvectors.from_subvectors(rows, self.view_shape).reshape(self.shape)


@functools.partial(jax.jit, static_argnames=("view_shape", "m"))
def _rows(kernel: jax.Array, view_shape: tuple[int, ...], m: int) -> jax.Array:
  """`LayerPlan.to_rows` of a jax kernel: one program per layer shape (a conversion calls it
  eagerly per layer), not three one-op ones; a reshuffle, so the values are the same."""
  return subvectors.to_subvectors(kernel.reshape(view_shape), m)


def k_cell(requested: int, used: int) -> str:
  """A table's k: "64", or "1024→64" where the clamp lowered the requested k."""
  return str(used) if requested == used else f"{requested}→{used}"


def k_notes(layers: Sequence[tuple[str, int, int]]) -> list[str]:
  """Lines announcing clamped and non-power-of-two k for (path, requested k, used k) triples."""
  notes = []
  clamped: dict[tuple[int, int], list[str]] = {}
  for path, requested, used in layers:
    if requested != used:
      clamped.setdefault((requested, used), []).append(path)
  for (requested, used), paths in clamped.items():
    more = f" (+{len(paths) - 3} more)" if len(paths) > 3 else ""
    notes.append(
      f"note: k={requested} clamped to {used} on {', '.join(paths[:3])}{more} "
      "(k ≤ 2^floor(log2(n/4)), the PQF/BGD rule: at least 4 subvectors per centroid)"
    )
  for k in sorted({used for _, _, used in layers if used & (used - 1)}):
    bits = codec.bits_per_code(k)
    notes.append(
      f"note: k={k} is not a power of two: codes still take {bits} bits, "
      f"{(1 << bits) - k} of {1 << bits} code values unused"
    )
  return notes


def params_collection(params: Mapping) -> Mapping:
  """Accept either a params tree or a variables dict: {'params': ..., 'batch_stats': ...}."""
  inner = params.get("params") if isinstance(params, Mapping) else None
  return inner if isinstance(inner, Mapping) else params


def iter_leaves(
  tree: Mapping, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], Any]]:
  """(keys, leaf) for every leaf of a nested mapping, in insertion order."""
  for key, value in tree.items():
    keys = (*prefix, str(key))
    if isinstance(value, Mapping):
      yield from iter_leaves(value, keys)
    else:
      yield keys, value


def kernels_by_path(params: Mapping) -> dict[str, Any]:
  """{layer path: its `kernel` leaf} of a params tree or variables dict, in the tree's order."""
  return {
    "/".join(keys[:-1]): leaf
    for keys, leaf in iter_leaves(params_collection(params))
    if keys[-1] == "kernel"
  }


def iter_layers(params: Mapping) -> Iterator[tuple[str, tuple[int, ...]]]:
  """(path, kernel shape) of every dict holding a `kernel` leaf with ndim >= 2."""
  for keys, leaf in iter_leaves(params_collection(params)):
    shape = tuple(int(s) for s in getattr(leaf, "shape", ()))
    if keys[-1] == "kernel" and len(shape) >= 2:
      yield "/".join(keys[:-1]), shape


def plan_layer(
  path: str,
  shape: Sequence[int],
  rule: Rule,
  rule_index: int = 0,
  *,
  n_out_dims: int | None = None,
) -> LayerPlan:
  """The LayerPlan of one kernel under a non-skip rule; errors name the layer and the rule.

  `n_out_dims` > 1 marks a DenseGeneral kernel (*in, *out) viewed as (prod in, prod out).
  """
  shape = tuple(int(s) for s in shape)
  view_shape = shape
  if n_out_dims is not None and len(shape) != 2:
    split = len(shape) - n_out_dims
    view_shape = (math.prod(shape[:split]), math.prod(shape[split:]))
  m = int(rule.m)
  d = m if rule.d is None else int(rule.d)
  if not 1 <= d <= m:
    raise ValueError(f"layer {path!r}, {rule!r}: d={d} must be between 1 and m={m}")
  try:
    n = subvectors.num_subvectors(view_shape, m)
    k = subvectors.clamp_k(int(rule.k), n)
  except ValueError as e:
    raise type(e)(f"layer {path!r}, {rule!r}: {e}") from None
  return LayerPlan(path, shape, n, k, m, d, rule_index, view_shape)


def plan_layers(params: Mapping, rules: Sequence[Rule]) -> dict[str, LayerPlan]:
  """LayerPlan per compressed kernel (skip/unmatched layers are absent), from arrays or shapes.

  `params` is a nested dict of arrays or jax.ShapeDtypeStruct (or a variables dict, whose
  'params' is used). Raises ValueError naming any rule that matches no layer at all.
  """
  rules = as_rules(rules)
  layers = list(iter_layers(params))
  for rule in rules:
    if not any(rule.matches(path) for path, _ in layers):
      sample = ", ".join(path for path, _ in layers[:6])
      raise ValueError(
        f"{rule!r} matches no layer (layer paths look like: {sample}{', ...' if len(layers) > 6 else ''})"
      )
  plans = {}
  for path, shape in layers:
    rule = resolve(rules, path)
    if rule is None or rule.skip:
      continue
    plans[path] = plan_layer(path, shape, rule, rules.index(rule))
  return plans
