"""Writing the shipped artifact (`lr2vq_jax.artifact` holds the format and reads it back).

`export` reads quantize- or frozen-mode variables: per quantized layer the hard codes (computed
from Z in the quantize mode, as its evaluation does, or the frozen ones) bit-packed, and the fp16
tables; everything else as fp32 with BatchNorm folded. `load(dir).decode()` gives variables for
the *float* model whose logits equal the quantize mode's hard evaluation ("what you evaluate is
what you ship").
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from flax import traverse_util

from lr2vq_jax import paths
from lr2vq_jax.artifact import (  # noqa: F401  (the format's names, importable from here too)
  ARRAYS,
  FORMAT,
  FORMAT_VERSION,
  MANIFEST,
  Artifact,
  ArtifactError,
  array_sha256,
  load,
  manifest_digest,
)
from lr2vq_jax.core import codec, recorded
from lr2vq_jax.core.kernel import (
  DKM_LISTS,
  QUANT,
  QuantConfig,
  frozen_tables,
  hard_codes,
  projection_as,
  warm_start,
)
from lr2vq_jax.core.mode import Mode
from lr2vq_jax.core.rules import Rule, as_rules, resolve

QUANTIZED_LEAVES = ("z", "projection", "codebook")  # a quantized layer's params, never shipped


def export(
  variables: Mapping[str, Any],
  rules: Sequence[Rule],
  path: str | os.PathLike,
  *,
  config: QuantConfig | None = None,
  bn_epsilon: float = 1e-5,
  metadata: Mapping[str, Any] | None = None,
) -> dict:
  """Writes the artifact of quantize- or frozen-mode `variables` to directory `path`.

  Returns the manifest. Projection mode, store ("codebook": C·P as k×m fp16, the PQF
  convention; "factored": C k×d̃ and P d̃×m fp16), DKM iterations and τ are read from the
  variables, so the artifact decodes to the model that was evaluated; `config` is optional and
  an explicit field that disagrees with the variables is an error. `metadata` (JSON) is kept as
  is, e.g. the model name and input shape that `lr2vq eval` needs.
  """
  rules = as_rules(rules)
  params = traverse_util.flatten_dict(dict(variables["params"]))
  stats = traverse_util.flatten_dict(dict(variables.get("batch_stats", {})))
  quant = traverse_util.flatten_dict(dict(variables.get(QUANT, {})))
  params = _warm_codebooks(params, variables)
  _check_mode(params)
  arrays: dict[str, np.ndarray] = {}
  layers = {
    "/".join(layer): _layer_entry(arrays, layer, params, quant, rules, config)
    for layer in _quantized_layers(params)
  }
  consumed = {layer + (leaf,) for layer in _quantized_layers(params) for leaf in QUANTIZED_LEAVES}
  dense = _dense_entries(arrays, params, stats, consumed, bn_epsilon)
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  blob = buffer.getvalue()
  manifest = _manifest(layers, dense, arrays, blob, bn_epsilon, metadata)
  _write(path, manifest, blob)
  return manifest


def _manifest(layers, dense, arrays, blob: bytes, bn_epsilon: float, metadata) -> dict:
  """The manifest of the layers' and dense entries, the npz `blob`'s digest, and its own."""
  manifest = {
    "format": FORMAT,
    "format_version": FORMAT_VERSION,
    "bn_epsilon": bn_epsilon,
    "metadata": dict(metadata or {}),
    "layers": layers,
    "float": dense,
    "payload_bytes": _payload(layers, arrays, dense),
    "arrays_sha256": hashlib.sha256(blob).hexdigest(),
    "arrays_bytes": len(blob),
  }
  manifest["manifest_sha256"] = manifest_digest(manifest)
  return manifest


def _write(path, manifest: dict, blob: bytes) -> None:
  """Local or gs://; each file is written whole or not at all, the manifest last."""
  paths.makedirs(path)
  paths.write_bytes(paths.join(path, ARRAYS), blob)
  paths.write_bytes(paths.join(path, MANIFEST), json.dumps(manifest, indent=1).encode())


def _entry(arrays: dict, name: str, value: np.ndarray) -> dict:
  arrays[name] = value
  return {
    "key": name,
    "dtype": value.dtype.name,
    "shape": list(value.shape),
    "sha256": array_sha256(value),
  }


def _quantized_layers(flat_params: dict) -> list[tuple[str, ...]]:
  return sorted({k[:-1] for k in flat_params if k[-1] == "codebook"})


def _bn_layers(flat_params: dict, flat_stats: dict) -> list[tuple[str, ...]]:
  return sorted(
    k[:-1]
    for k in flat_params
    if k[-1] == "scale" and k[:-1] + ("bias",) in flat_params and k[:-1] + ("mean",) in flat_stats
  )


def _warm_codebooks(params: dict, variables: Mapping[str, Any]) -> dict:
  """`params` (flat) with each codebook moved by its layer's carried warm-start offset, if any:
  the centroids training started from (`kernel.warm_start`), as evaluation and freezing use."""
  carried = traverse_util.flatten_dict(dict(variables.get(DKM_LISTS, {})))
  out = dict(params)
  for key, offset in carried.items():
    if key[-1] == "offset" and key[:-1] + ("codebook",) in out:
      out[key[:-1] + ("codebook",)] = warm_start(out[key[:-1] + ("codebook",)], offset)
  return out


def _check_mode(params: dict) -> None:
  """ArtifactError unless `params` (flat) hold quantize- or frozen-mode layers."""
  if any(k[-1] == "z" and k[:-1] + ("codebook",) not in params for k in params):
    raise ArtifactError(
      "export needs quantize- or frozen-mode variables; got low-rank layers "
      "(run lq.convert.lowrank_to_quantize, then train the quantize mode)"
    )
  if not _quantized_layers(params):
    raise ArtifactError(
      "export needs quantize- or frozen-mode variables; got float-mode ones (no codebook): "
      "run lq.convert.float_to_lowrank and lq.convert.lowrank_to_quantize first"
    )


def _layer_codes(layer, params: dict, layer_quant: dict, settings: dict, chunk_size: int):
  """(codes, C, effective P) of one layer: computed from Z (quantize) or as frozen."""
  codebook, projection = params[layer + ("codebook",)], params[layer + ("projection",)]
  if layer + ("z",) in params:
    return hard_codes(
      params[layer + ("z",)], codebook, projection, layer_quant["tau"],
      settings=settings, chunk_size=chunk_size,
    )  # fmt: skip
  return layer_quant["codes"], codebook, projection_as(projection, settings["projection"])


def _layer_entry(arrays: dict, layer, params: dict, quant: dict, rules, config) -> dict:
  """One quantized layer's manifest entry; its packed codes and fp16 tables go into `arrays`."""
  name = "/".join(layer)
  rule = resolve(rules, name)
  if rule is None or rule.skip:
    raise ArtifactError(f"quantized layer {name!r} matches no rule in {list(rules)}")
  mode = Mode.QUANTIZE if layer + ("z",) in params else Mode.FROZEN
  layer_quant = {k[-1]: v for k, v in quant.items() if k[:-1] == layer}
  settings = recorded.resolve(layer_quant, config, mode, f"export, layer {name!r}")
  chunk_size = (config or QuantConfig()).chunk_size
  codes, c, p = _layer_codes(layer, params, layer_quant, settings, chunk_size)
  codebook, store = params[layer + ("codebook",)], settings["store"]
  k, d, m = codebook.shape[0], codebook.shape[1], p.shape[1]
  codes = np.asarray(codes)
  entry = {
    "rule": rule.pattern,
    "shape": [int(s) for s in np.asarray(quant[layer + ("shape",)])],
    "view_shape": [int(s) for s in np.asarray(quant[layer + ("view_shape",)])],
    "n": int(codes.shape[0]),
    "k": int(k),
    "m": int(m),
    "d": int(d),
    "bits": codec.bits_per_code(int(k)),
    "dtype": str(np.asarray(codebook).dtype),
    "store": store,
    "projection": settings["projection"],
    "arrays": {"codes": _entry(arrays, f"{name}/codes", codec.pack_codes(codes, int(k)))},
  }
  names = ("table",) if store == "codebook" else ("codebook", "projection")
  for part, table in zip(names, frozen_tables(c, p, store), strict=True):
    entry["arrays"][part] = _entry(arrays, f"{name}/{part}", np.asarray(table, np.float16))
  return entry


def _dense_entries(arrays: dict, params, stats, consumed: set, bn_epsilon: float) -> dict:
  """Manifest entries of what ships as fp32: BatchNorm folded to scale/shift, every other
  param not in `consumed` as is; the arrays go into `arrays`."""
  dense: dict[str, dict] = {}
  consumed = set(consumed)
  for layer in _bn_layers(params, stats):
    name = "/".join(layer)
    scale = np.asarray(params[layer + ("scale",)], np.float32)
    var, mean = np.asarray(stats[layer + ("var",)]), np.asarray(stats[layer + ("mean",)])
    folded = scale / np.sqrt(var.astype(np.float32) + np.float32(bn_epsilon))
    shift = np.asarray(params[layer + ("bias",)], np.float32) - mean.astype(np.float32) * folded
    dense[f"bn:{name}"] = {
      "scale": _entry(arrays, f"{name}/bn_scale", folded.astype(np.float32)),
      "shift": _entry(arrays, f"{name}/bn_shift", shift.astype(np.float32)),
    }
    consumed.update({layer + ("scale",), layer + ("bias",)})
  for key, value in sorted(params.items()):
    if key not in consumed:
      dense["/".join(key)] = _entry(arrays, "/".join(key), np.asarray(value, np.float32))
  return dense


def _payload(layers: dict, arrays: dict, dense: dict) -> dict:
  """Bytes of codes, codebooks and everything else, as the accounting counts them."""
  codes = sum(arrays[e["arrays"]["codes"]["key"]].nbytes for e in layers.values())
  tables = sum(
    arrays[a["key"]].nbytes for e in layers.values() for p, a in e["arrays"].items() if p != "codes"
  )
  other = 0
  for entry in dense.values():
    parts = entry.values() if "key" not in entry else [entry]
    other += sum(arrays[a["key"]].nbytes for a in parts)
  return {"codes": codes, "codebooks": tables, "other": other, "total": codes + tables + other}
