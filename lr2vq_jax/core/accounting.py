"""Model size in the PQF/BGD convention (as PQF and BGD count it), from parameter shapes alone.

Compressed layer: n·ceil(log2 k) code bits plus an fp16 table, either the k×m codebook C·P
(store="codebook", the PQF-convention figure that reproduces the published sizes) or C (k×d̃) and
P (d̃×m) separately (store="factored"). Every other parameter (first conv, biases, BatchNorm scale
and bias, i.e. BN folded to two fp32 vectors) counts 32 bits. BN running statistics are buffers and
are not counted: pass the params collection (or a variables dict, of which only 'params' is read).
Uncompressed = every parameter at 32 bits. MiB = 2^20 bytes.

Code bytes, two views: each layer row reports the exact bit count `code_bits` and the packed file
size `code_bytes` = ceil(code_bits / 8) (what `codec.pack_codes` writes); the model totals use
exact bits / 8, as PQF does, so they may be below the sum of the rows by < 1 byte per layer.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence

from lr2vq_jax.core.rules import (
  LayerPlan,
  Rule,
  as_rules,
  iter_leaves,
  k_cell,
  k_notes,
  params_collection,
  plan_layers,
)

STORES = ("codebook", "factored")
MIB = 2**20


@dataclasses.dataclass(frozen=True)
class LayerSize:
  """One compressed layer: shape, plan (n, k after clamp, m, d̃) and its bits/bytes."""

  path: str
  shape: tuple[int, ...]
  n: int
  k: int
  m: int
  d: int
  bits: int  # per code, ceil(log2 k)
  code_bits: int  # n · bits, exact
  code_bytes: int  # ceil(code_bits / 8), packed
  codebook_bytes: int  # fp16: 2·k·m (codebook) or 2·(k·d̃ + d̃·m) (factored)
  requested_k: int | None = None  # the rule's k, when the clamp lowered it to `k`

  @property
  def num_params(self) -> int:
    return math.prod(self.shape)

  @property
  def total_bytes(self) -> int:
    """Packed codes plus fp16 table(s): the bytes this layer's payload takes in a file."""
    return self.code_bytes + self.codebook_bytes


@dataclasses.dataclass(frozen=True)
class SizeReport:
  """Per-layer rows and model totals (bytes; totals use exact code bits / 8, see module doc)."""

  layers: tuple[LayerSize, ...]
  float_layers: tuple[tuple[str, tuple[int, ...]], ...]  # kernels kept at fp32 (path, shape)
  store: str
  num_params: int
  other_params: int  # parameters kept at fp32 (uncompressed kernels, biases, BN)
  uncompressed_bytes: float
  code_bytes: float
  codebook_bytes: float
  other_bytes: float

  @property
  def compressed_bytes(self) -> float:
    return self.code_bytes + self.codebook_bytes + self.other_bytes

  @property
  def uncompressed_mib(self) -> float:
    return self.uncompressed_bytes / MIB

  @property
  def compressed_mib(self) -> float:
    return self.compressed_bytes / MIB

  @property
  def ratio(self) -> float:
    return self.uncompressed_bytes / self.compressed_bytes

  def totals_line(self) -> str:
    return (
      f"uncompressed {self.uncompressed_mib:.2f} MiB, compressed {self.compressed_mib:.3f} MiB, "
      f"ratio {self.ratio:.1f}×"
    )

  def table(self) -> str:
    """Printable per-layer table and the totals line."""
    head = (
      f"{'layer':<28} {'shape':<18} {'n':>8} {'k':>9} {'m':>3} {'d':>3} {'bits':>4} {'bytes':>10}"
    )
    lines = [head, "-" * len(head)]
    rows = [(r.path, r) for r in self.layers] + [(p, s) for p, s in self.float_layers]
    for path, r in sorted(rows, key=lambda row: _natural_key(row[0])):
      if isinstance(r, LayerSize):
        shape = "x".join(map(str, r.shape))
        k = k_cell(r.requested_k or r.k, r.k)
        lines.append(
          f"{path:<28} {shape:<18} {r.n:>8} {k:>9} {r.m:>3} {r.d:>3} {r.bits:>4} {r.total_bytes:>10}"
        )
      else:
        shape = "x".join(map(str, r))
        fp32 = f"{'fp32':>8} {'':>9} {'':>3} {'':>3} {32:>4}"
        lines.append(f"{path:<28} {shape:<18} {fp32} {4 * math.prod(r):>10}")
    lines.append("-" * len(head))
    lines.append(
      f"codes {self.code_bytes / MIB:.3f} MiB, codebooks ({self.store}, fp16) "
      f"{self.codebook_bytes / MIB:.3f} MiB, other fp32 ({self.other_params} params) "
      f"{self.other_bytes / MIB:.3f} MiB"
    )
    lines += k_notes([(r.path, r.requested_k or r.k, r.k) for r in self.layers])
    lines.append("bits: per code, ceil(log2 k) (32: a float kernel's weights)")
    lines.append(self.totals_line())
    return "\n".join(lines)

  def __str__(self) -> str:
    return self.table()


def _natural_key(path: str) -> list:
  return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path)]


def table_bytes(k: int, m: int, d: int, store: str) -> int:
  """fp16 bytes of a layer's decode table(s): C·P (k×m) or C (k×d̃) + P (d̃×m)."""
  if store == "codebook":
    return 2 * k * m
  if store == "factored":
    return 2 * (k * d + d * m)
  raise ValueError(f"store={store!r}: expected one of {STORES}")


def size_report(params: Mapping, rules: Sequence[Rule], *, store: str = "codebook") -> SizeReport:
  """Size of `params` (arrays or jax.ShapeDtypeStruct) compressed by `rules`, PQF/BGD convention."""
  if store not in STORES:
    raise ValueError(f"store={store!r}: expected one of {STORES}")
  rules = as_rules(rules)
  plans = plan_layers(params, rules)
  num_params = 0
  float_layers = []
  for keys, leaf in iter_leaves(params_collection(params)):
    shape = tuple(int(s) for s in getattr(leaf, "shape", ()))
    num_params += math.prod(shape)
    path = "/".join(keys[:-1])
    if keys[-1] == "kernel" and len(shape) >= 2 and path not in plans:
      float_layers.append((path, shape))
  rows = []
  for p in plans.values():
    code_bits = p.code_bits
    rows.append(
      LayerSize(
        p.path, p.shape, p.n, p.k, p.m, p.d, p.bits_per_code, code_bits, -(-code_bits // 8),
        table_bytes(p.k, p.m, p.d, store), rules[p.rule_index].k,
      )
    )  # fmt: skip
  compressed_params = sum(r.num_params for r in rows)
  other = num_params - compressed_params
  return SizeReport(
    layers=tuple(rows),
    float_layers=tuple(float_layers),
    store=store,
    num_params=num_params,
    other_params=other,
    uncompressed_bytes=4.0 * num_params,
    code_bytes=sum(r.code_bits for r in rows) / 8,
    codebook_bytes=float(sum(r.codebook_bytes for r in rows)),
    other_bytes=4.0 * other,
  )


def describe_table(layers: Sequence[tuple[str, Rule | None, tuple, LayerPlan | None]]) -> str:
  """The `describe` table of both front ends, from (path, matched rule, kernel shape, plan or
  None) per linear layer: rule, n, k (requested→used where clamped), m, d̃, bits per code and the
  layer's payload bytes (packed codes + fp16 k×m codebook, or the fp32 kernel if left float)."""
  rows = [("layer", "rule", "shape", "n", "k", "m", "d", "bits", "bytes")]
  total, ks = 0, []
  for path, rule, shape, plan in layers:
    if plan is None:
      nbytes = 4 * math.prod(shape)
      label = "float" if rule is None else f"{rule.pattern} (skip)"
      rows.append((path, label, str(shape), "-", "-", "-", "-", "32", str(nbytes)))
    else:
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
