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
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from lr2vq_jax.core import codec, subvectors
from lr2vq_jax.core.rules import Rule, resolve
from lr2vq_jax.nn.kernel import QUANT, QuantConfig, frozen_tables, hard_tables

FORMAT = "lr2vq-artifact"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ARRAYS = "arrays.npz"


class ArtifactError(ValueError):
  """A file that is not a valid artifact: the message says what is wrong and where."""


def _sha256(a: np.ndarray) -> str:
  return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


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

  Returns the manifest. `config.store` picks the codebook layout ("codebook": C·P as k×m fp16,
  the PQF convention; "factored": C k×d̃ and P d̃×m fp16). `metadata` (JSON) is kept as is,
  e.g. the model name and input shape that `lr2vq eval` needs.
  """
  config = config or QuantConfig()
  params = traverse_util.flatten_dict(dict(variables["params"]))
  stats = traverse_util.flatten_dict(dict(variables.get("batch_stats", {})))
  quant = traverse_util.flatten_dict(dict(variables.get(QUANT, {})))
  if any(k[-1] == "z" and k[:-1] + ("codebook",) not in params for k in params):
    raise ArtifactError("export needs quantize- or frozen-stage variables; found low-rank layers")
  arrays: dict[str, np.ndarray] = {}
  layers, consumed = {}, set()
  for layer in _quantized_layers(params):
    name = "/".join(layer)
    rule = resolve(rules, name)
    if rule is None or rule.skip:
      raise ArtifactError(f"quantized layer {name!r} matches no rule in {list(rules)}")
    codebook, projection = params[layer + ("codebook",)], params[layer + ("projection",)]
    if layer + ("z",) in params:
      codes, tables = hard_tables(
        params[layer + ("z",)], codebook, projection, quant[layer + ("tau",)], config
      )
    else:
      codes, tables = quant[layer + ("codes",)], frozen_tables(codebook, projection, config.store)
    k, d, m = codebook.shape[0], codebook.shape[1], projection.shape[1]
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
      "store": config.store,
      "arrays": {"codes": _entry(arrays, f"{name}/codes", codec.pack_codes(codes, int(k)))},
    }
    names = ("table",) if config.store == "codebook" else ("codebook", "projection")
    for part, table in zip(names, tables, strict=True):
      entry["arrays"][part] = _entry(arrays, f"{name}/{part}", np.asarray(table, np.float16))
    layers[name] = entry
    consumed.update(layer + (leaf,) for leaf in ("z", "projection", "codebook"))

  dense: dict[str, dict] = {}
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

  payload = _payload(layers, arrays, dense)
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
    "payload_bytes": payload,
    "arrays_sha256": hashlib.sha256(blob).hexdigest(),
    "arrays_bytes": len(blob),
  }
  os.makedirs(path, exist_ok=True)
  _atomic_write(os.path.join(path, ARRAYS), blob)
  _atomic_write(os.path.join(path, MANIFEST), json.dumps(manifest, indent=1).encode())
  return manifest


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


def _atomic_write(path: str, blob: bytes) -> None:
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "wb") as f:
    f.write(blob)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


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
  """Reads and verifies an artifact directory; any inconsistency raises `ArtifactError`."""
  manifest_path, arrays_path = os.path.join(path, MANIFEST), os.path.join(path, ARRAYS)
  for p in (manifest_path, arrays_path):
    if not os.path.isfile(p):
      raise ArtifactError(f"{p}: missing; an artifact directory holds {MANIFEST} and {ARRAYS}")
  try:
    with open(manifest_path, "rb") as f:
      manifest = json.loads(f.read().decode("utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ArtifactError(f"{manifest_path}: not valid JSON ({e})") from None
  if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
    raise ArtifactError(f"{manifest_path}: not an {FORMAT} manifest")
  if manifest.get("format_version") != FORMAT_VERSION:
    raise ArtifactError(
      f"{manifest_path}: format_version {manifest.get('format_version')!r}, this lr2vq_jax reads "
      f"version {FORMAT_VERSION}; re-export with a matching lr2vq_jax"
    )
  with open(arrays_path, "rb") as f:
    blob = f.read()
  if len(blob) != manifest.get("arrays_bytes") or (
    hashlib.sha256(blob).hexdigest() != manifest.get("arrays_sha256")
  ):
    raise ArtifactError(
      f"{arrays_path}: size or sha256 differs from the manifest (truncated or altered)"
    )
  try:
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
      arrays = {name: npz[name] for name in npz.files}
  except ValueError as e:
    raise ArtifactError(f"{arrays_path}: holds object arrays or is unreadable ({e})") from None
  for entry in _manifest_arrays(manifest):
    _check_entry(arrays, entry, arrays_path)
  return Artifact(manifest, arrays)


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
