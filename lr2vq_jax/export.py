"""The shipped artifact: a JSON manifest plus one `.npz` of plain arrays (never pickle).

    <dir>/manifest.json   format version, per layer shape/k/m/d̃/bits/dtype, sha256 of every array
    <dir>/arrays.npz      bit-packed codes, fp16 codebooks (C·P, or C and P), fp32 leftovers
                          (uncompressed kernels, biases, BatchNorm folded to scale and shift)

`export` reads quantize- or frozen-stage variables; `load(dir).decode()` gives variables for the
*float* model whose logits equal the quantize stage's hard evaluation ("what you evaluate is
what you ship").
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from lr2vq_jax import paths
from lr2vq_jax.core import codec, recorded, subvectors
from lr2vq_jax.core.kernel import QUANT, QuantConfig, frozen_tables, hard_codes, projection_as
from lr2vq_jax.core.rules import Rule, as_rules, resolve

FORMAT = "lr2vq-artifact"
FORMAT_VERSION = 2  # 2: manifest_sha256 (a digest of the manifest itself)
MANIFEST = "manifest.json"
ARRAYS = "arrays.npz"


class ArtifactError(ValueError):
  """A file that is not a valid artifact: the message says what is wrong and where."""


def _sha256(a: np.ndarray) -> str:
  return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def manifest_digest(manifest: Mapping[str, Any]) -> str:
  """sha256 of the manifest's canonical JSON without its own `manifest_sha256` field."""
  body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
  text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
  return hashlib.sha256(text.encode()).hexdigest()


def _entry(arrays: dict, name: str, value: np.ndarray) -> dict:
  arrays[name] = value
  return {
    "key": name,
    "dtype": value.dtype.name,
    "shape": list(value.shape),
    "sha256": _sha256(value),
  }


def _quantized_layers(flat_params: dict) -> list[tuple[str, ...]]:
  return sorted({k[:-1] for k in flat_params if k[-1] == "codebook"})


def _bn_layers(flat_params: dict, flat_stats: dict) -> list[tuple[str, ...]]:
  return sorted(
    k[:-1]
    for k in flat_params
    if k[-1] == "scale" and k[:-1] + ("bias",) in flat_params and k[:-1] + ("mean",) in flat_stats
  )


def export(
  variables: Mapping[str, Any],
  rules: Sequence[Rule],
  path: str | os.PathLike,
  *,
  config: QuantConfig | None = None,
  bn_epsilon: float = 1e-5,
  metadata: Mapping[str, Any] | None = None,
) -> dict:
  """Writes the artifact of quantize- or frozen-stage `variables` to directory `path`.

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
  _check_stage(params)
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
  paths.makedirs(path)  # local or gs://; each file is written whole or not at all, manifest last
  paths.write_bytes(paths.join(path, ARRAYS), blob)
  paths.write_bytes(paths.join(path, MANIFEST), json.dumps(manifest, indent=1).encode())
  return manifest


QUANTIZED_LEAVES = ("z", "projection", "codebook")  # a quantized layer's params, never shipped


def _check_stage(params: dict) -> None:
  """ArtifactError unless `params` (flat) hold quantize- or frozen-stage layers."""
  if any(k[-1] == "z" and k[:-1] + ("codebook",) not in params for k in params):
    raise ArtifactError(
      "export needs quantize- or frozen-stage variables; got low-rank layers "
      "(run lq.convert.lowrank_to_quantize, then train the quantize stage)"
    )
  if not _quantized_layers(params):
    raise ArtifactError(
      "export needs quantize- or frozen-stage variables; got float-stage ones (no codebook): "
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
  stage = "quantize" if layer + ("z",) in params else "frozen"
  layer_quant = {k[-1]: v for k, v in quant.items() if k[:-1] == layer}
  settings = recorded.resolve(layer_quant, config, stage, f"export, layer {name!r}")
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


@dataclasses.dataclass
class Artifact:
  """A loaded, verified artifact: its manifest and arrays (plain numpy)."""

  manifest: dict
  arrays: dict[str, np.ndarray]

  @property
  def num_bytes(self) -> int:
    return int(self.manifest["payload_bytes"]["total"])

  def decode(self) -> dict:
    """Variables ({"params", "batch_stats"}) for the float model: kernels rebuilt from codes."""
    try:
      return self._decode()
    except (ValueError, TypeError, KeyError, IndexError) as e:
      raise ArtifactError(f"artifact does not decode: {type(e).__name__}: {e}") from None

  def _decode(self) -> dict:
    params, stats = {}, {}
    for name, entry in self.manifest["layers"].items():
      key = tuple(name.split("/"))
      codes = codec.unpack_codes(self._get(entry["arrays"]["codes"]), entry["n"], entry["k"])
      if "table" in entry["arrays"]:
        rows = self._get(entry["arrays"]["table"]).astype(np.float32)[codes]
      else:
        c = self._get(entry["arrays"]["codebook"]).astype(np.float32)
        p = self._get(entry["arrays"]["projection"]).astype(np.float32)
        rows = np.asarray(jnp.take(jnp.asarray(c), codes, axis=0) @ jnp.asarray(p))
      kernel = subvectors.from_subvectors(jnp.asarray(rows), tuple(entry["view_shape"]))
      params[key + ("kernel",)] = np.asarray(kernel).reshape(entry["shape"])
    eps = np.float32(self.manifest["bn_epsilon"])
    for name, entry in self.manifest["float"].items():
      if name.startswith("bn:"):
        key = tuple(name[3:].split("/"))
        scale = self._get(entry["scale"])
        params[key + ("scale",)] = scale
        params[key + ("bias",)] = self._get(entry["shift"])
        stats[key + ("mean",)] = np.zeros_like(scale)
        stats[key + ("var",)] = np.full_like(scale, np.float32(1.0) - eps)
      else:
        params[tuple(name.split("/"))] = self._get(entry)
    out = {"params": traverse_util.unflatten_dict(params)}
    if stats:
      out["batch_stats"] = traverse_util.unflatten_dict(stats)
    return out

  def _get(self, entry: dict) -> np.ndarray:
    return self.arrays[entry["key"]]


def load(path: str | os.PathLike) -> Artifact:
  """Reads and verifies an artifact directory; any inconsistency raises `ArtifactError`.

  Checked: the manifest's format, version and own digest, its structure, the npz's size and
  sha256, every array's presence, dtype, shape and sha256, no array the manifest does not name,
  and each layer's geometry. Arrays are read with `allow_pickle=False`: object arrays are refused.
  """
  manifest_path, arrays_path = paths.join(path, MANIFEST), paths.join(path, ARRAYS)
  for p in (manifest_path, arrays_path):
    if not paths.resolve(p).is_file():
      raise ArtifactError(f"{p}: missing; an artifact directory holds {MANIFEST} and {ARRAYS}")
  try:
    manifest = json.loads(paths.resolve(manifest_path).read_bytes().decode("utf-8"))
  except (UnicodeDecodeError, ValueError, RecursionError) as e:
    raise ArtifactError(f"{manifest_path}: not valid JSON ({e})") from None
  if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
    raise ArtifactError(f"{manifest_path}: not an {FORMAT} manifest")
  if manifest.get("format_version") != FORMAT_VERSION:
    raise ArtifactError(
      f"{manifest_path}: format_version {manifest.get('format_version')!r}, this lr2vq_jax reads "
      f"version {FORMAT_VERSION}; re-export with a matching lr2vq_jax"
    )
  if manifest.get("manifest_sha256") != manifest_digest(manifest):
    raise ArtifactError(f"{manifest_path}: fails its manifest_sha256 check (altered or damaged)")
  try:
    entries = _check_structure(manifest)
  except (KeyError, TypeError, ValueError, AttributeError) as e:
    raise ArtifactError(f"{manifest_path}: malformed ({type(e).__name__}: {e})") from None
  blob = paths.resolve(arrays_path).read_bytes()
  if len(blob) != manifest["arrays_bytes"] or (
    hashlib.sha256(blob).hexdigest() != manifest["arrays_sha256"]
  ):
    raise ArtifactError(
      f"{arrays_path}: size or sha256 differs from the manifest (truncated or altered)"
    )
  if not blob.startswith(b"PK\x03\x04") and blob != b"PK\x05\x06" + bytes(18):
    raise ArtifactError(f"{arrays_path}: not an .npz (zip) file")
  try:
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
      arrays = {name: npz[name] for name in npz.files}
  except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
    raise ArtifactError(f"{arrays_path}: holds object arrays or is unreadable ({e})") from None
  for entry in entries:
    _check_entry(arrays, entry, arrays_path)
  extra = sorted(set(arrays) - {e["key"] for e in entries})
  if extra:
    raise ArtifactError(f"{arrays_path}: arrays the manifest does not name: {extra[:5]}")
  for name, layer in manifest["layers"].items():
    _check_layer(name, layer, arrays, manifest_path)
  return Artifact(manifest, arrays)


def _check_structure(manifest: dict) -> list[dict]:
  """Types of every field `load` and `decode` read; the array entries, in manifest order."""
  for field, kind in (
    ("layers", dict), ("float", dict), ("payload_bytes", dict), ("metadata", dict),
    ("arrays_bytes", int), ("arrays_sha256", str), ("bn_epsilon", float | int),
  ):  # fmt: skip
    if not isinstance(manifest.get(field), kind) or isinstance(manifest[field], bool):
      raise TypeError(f"field {field!r} missing or not {kind}")
  if not isinstance(manifest["payload_bytes"].get("total"), int):
    raise TypeError("payload_bytes.total is not an integer")
  for name, layer in manifest["layers"].items():
    if not isinstance(layer, dict) or not isinstance(layer.get("arrays"), dict):
      raise TypeError(f"layer {name!r} is not a mapping with arrays")
    for field in ("n", "k", "m", "d", "bits"):
      if (
        not isinstance(layer.get(field), int) or isinstance(layer[field], bool) or layer[field] < 1
      ):
        raise ValueError(f"layer {name!r}: {field} is not a positive integer")
    for field in ("shape", "view_shape"):
      shape = layer.get(field)
      if not isinstance(shape, list) or not all(isinstance(s, int) and s > 0 for s in shape):
        raise ValueError(f"layer {name!r}: {field} is not a list of positive integers")
    parts = set(layer["arrays"])
    if parts not in ({"codes", "table"}, {"codes", "codebook", "projection"}):
      raise ValueError(f"layer {name!r}: arrays {sorted(parts)}")
  for name, entry in manifest["float"].items():
    if not isinstance(entry, dict):
      raise TypeError(f"float entry {name!r} is not a mapping")
    if name.startswith("bn:") and set(entry) != {"scale", "shift"}:
      raise ValueError(f"float entry {name!r} needs scale and shift")
  entries = list(_manifest_arrays(manifest))
  for entry in entries:
    if not isinstance(entry, dict):
      raise TypeError(f"array entry {entry!r} is not a mapping")
    for field in ("key", "dtype", "sha256"):
      if not isinstance(entry.get(field), str):
        raise TypeError(f"array entry {field!r} is not a string")
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
      raise ValueError(f"array {entry['key']!r}: shape is not a list of sizes")
  return entries


def _check_layer(name: str, layer: dict, arrays: dict, where: str) -> None:
  """Codes, tables and kernel shapes agree with n, k, m, d̃ and bits."""
  n, k, m, d = layer["n"], layer["k"], layer["m"], layer["d"]
  want = {"table": (k, m), "codebook": (k, d), "projection": (d, m)}
  problems = []
  if layer["bits"] != codec.bits_per_code(k):
    problems.append(f"bits {layer['bits']} for k={k}")
  codes = arrays[layer["arrays"]["codes"]["key"]]
  if codes.dtype != np.uint8 or codes.shape != (codec.packed_size(n, k),):
    problems.append(f"codes {codes.dtype}{list(codes.shape)} for n={n}")
  for part, shape in want.items():
    if part in layer["arrays"] and arrays[layer["arrays"][part]["key"]].shape != shape:
      problems.append(f"{part} shape is not {list(shape)}")
  size = math.prod(layer["view_shape"])
  if size != n * m or math.prod(layer["shape"]) != size:
    problems.append(f"n·m={n * m} but shape {layer['shape']}, view_shape {layer['view_shape']}")
  if problems:
    raise ArtifactError(f"{where}: layer {name!r} is inconsistent: {'; '.join(problems)}")


def _manifest_arrays(manifest: dict):
  for layer in manifest["layers"].values():
    yield from layer["arrays"].values()
  for entry in manifest["float"].values():
    yield from (entry.values() if "key" not in entry else [entry])


def _check_entry(arrays: dict, entry: dict, where: str) -> None:
  value = arrays.get(entry["key"])
  if value is None:
    raise ArtifactError(f"{where}: array {entry['key']!r} named in the manifest is missing")
  if value.dtype.name != entry["dtype"] or list(value.shape) != entry["shape"]:
    raise ArtifactError(
      f"{where}: array {entry['key']!r} is {value.dtype.name}{list(value.shape)}, "
      f"the manifest says {entry['dtype']}{entry['shape']}"
    )
  if _sha256(value) != entry["sha256"]:
    raise ArtifactError(f"{where}: array {entry['key']!r} fails its sha256 check")
