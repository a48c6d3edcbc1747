"""The shipped artifact's format, and reading it back: a JSON manifest plus one `.npz` of plain
arrays (never pickle).

    <dir>/manifest.json   format version, per layer shape/k/m/d̃/bits/dtype, sha256 of every array
    <dir>/arrays.npz      bit-packed codes, fp16 codebooks (C·P, or C and P), fp32 leftovers
                          (uncompressed kernels, biases, BatchNorm folded to scale and shift)

`load(dir)` verifies every byte against the manifest; `.decode()` gives variables for the *float*
model whose logits equal the quantize mode's hard evaluation. `lr2vq_jax.export` writes it.
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
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from lr2vq_jax import paths
from lr2vq_jax.core import codec, subvectors

FORMAT = "lr2vq-artifact"
FORMAT_VERSION = 2  # 2: manifest_sha256 (a digest of the manifest itself)
MANIFEST = "manifest.json"
ARRAYS = "arrays.npz"


class ArtifactError(ValueError):
  """A file that is not a valid artifact: the message says what is wrong and where."""


def array_sha256(a: np.ndarray) -> str:
  """sha256 of an array's C-order bytes (what the manifest records per array)."""
  return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def manifest_digest(manifest: Mapping[str, Any]) -> str:
  """sha256 of the manifest's canonical JSON without its own `manifest_sha256` field."""
  body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
  text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
  return hashlib.sha256(text.encode()).hexdigest()


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
        rows = np.asarray(_factored_rows(c, codes, p))
      # a gather and a reshuffle of host arrays: NumPy, exact (no eager one-op XLA programs)
      kernel = subvectors.from_subvectors(rows, tuple(entry["view_shape"]))
      params[key + ("kernel",)] = np.ascontiguousarray(kernel).reshape(entry["shape"])
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


@jax.jit
def _factored_rows(c: jax.Array, codes: jax.Array, p: jax.Array) -> jax.Array:
  """C[a]·P of a "factored" layer in float32, the product as XLA computes it (as evaluation
  does): one program per layer shape."""
  return jnp.take(c, codes, axis=0) @ p


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
  manifest = _read_manifest(manifest_path)
  try:
    entries = _check_structure(manifest)
  except (KeyError, TypeError, ValueError, AttributeError) as e:
    raise ArtifactError(f"{manifest_path}: malformed ({type(e).__name__}: {e})") from None
  arrays = _read_arrays(arrays_path, manifest)
  for entry in entries:
    _check_entry(arrays, entry, arrays_path)
  extra = sorted(set(arrays) - {e["key"] for e in entries})
  if extra:
    raise ArtifactError(f"{arrays_path}: arrays the manifest does not name: {extra[:5]}")
  for name, layer in manifest["layers"].items():
    _check_layer(name, layer, arrays, manifest_path)
  return Artifact(manifest, arrays)


def _read_manifest(manifest_path: str) -> dict:
  """The manifest, checked for format, version and its own digest."""
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
  return manifest


def _read_arrays(arrays_path: str, manifest: dict) -> dict[str, np.ndarray]:
  """The npz's arrays, once its size and sha256 match the manifest (no pickle)."""
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
      return {name: npz[name] for name in npz.files}
  except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
    raise ArtifactError(f"{arrays_path}: holds object arrays or is unreadable ({e})") from None


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
  if array_sha256(value) != entry["sha256"]:
    raise ArtifactError(f"{where}: array {entry['key']!r} fails its sha256 check")
