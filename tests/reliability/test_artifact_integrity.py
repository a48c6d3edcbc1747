"""Artifacts that are truncated, altered, of another version, inconsistent or pickled: ArtifactError.

Every defect is rejected by `lq.load` (or `Artifact.decode`) with `ArtifactError` and never any
other exception; pickle is never loaded. Includes hypothesis fuzzing over bytes and manifest fields.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import pathlib
import pickle
import re
import shutil

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lr2vq_jax as lq
from lr2vq_jax import convert
from lr2vq_jax.export import ARRAYS, MANIFEST, ArtifactError, manifest_digest
from tests.support.plain_net import RULES, PlainNet, X

PACKAGE = pathlib.Path(lq.__file__).parent
FUZZ = settings(
  max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
  """A small real artifact (PlainNet, two quantized layers, BatchNorm, float leftovers)."""
  path = tmp_path_factory.mktemp("artifact") / "good"
  plan = lq.nn.plan_model(PlainNet(), RULES, X)
  float_vars = PlainNet().init(jax.random.key(0), X, train=False)
  lowrank = convert.float_to_lowrank(float_vars, RULES, plan=plan)
  # kmeans_iters as the other PlainNet tests (tests/test_export.py, tests/nn/test_recorded.py,
  # tests/nn/test_transform.py): their compiled k-means per layer shape is reused.
  variables = convert.lowrank_to_quantize(lowrank, RULES, key=jax.random.key(1), kmeans_iters=3)
  lq.export(variables, RULES, path, metadata={"model": "plain"})
  return path


def _copy(artifact, tmp_path, name="a") -> pathlib.Path:
  dst = tmp_path / name
  shutil.rmtree(dst, ignore_errors=True)
  shutil.copytree(artifact, dst)
  return dst


def _manifest(path) -> dict:
  return json.loads((path / MANIFEST).read_text())


def _write_manifest(path, manifest: dict, *, sign: bool = True) -> None:
  if sign:
    manifest["manifest_sha256"] = manifest_digest(manifest)
  (path / MANIFEST).write_text(json.dumps(manifest, indent=1))


def _write_arrays(path, arrays: dict, manifest: dict) -> None:
  """Rewrites the npz and makes the manifest's file size and sha agree with it (re-signed)."""
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  blob = buffer.getvalue()
  (path / ARRAYS).write_bytes(blob)
  manifest.update(arrays_bytes=len(blob), arrays_sha256=hashlib.sha256(blob).hexdigest())
  _write_manifest(path, manifest)


def _load_and_decode(path):
  return lq.load(path).decode()


def test_good_artifact_loads(artifact):
  decoded = _load_and_decode(artifact)
  assert set(decoded) == {"params", "batch_stats"}


@pytest.mark.parametrize("name", [MANIFEST, ARRAYS])
@pytest.mark.parametrize("keep", [0, 0.5, -1])
def test_truncated_file(artifact, tmp_path, name, keep):
  path = _copy(artifact, tmp_path)
  blob = (path / name).read_bytes()
  (path / name).write_bytes(blob[: int(len(blob) * keep) if keep >= 0 else -1])
  with pytest.raises(ArtifactError):
    lq.load(path)


@pytest.mark.parametrize("name", [MANIFEST, ARRAYS])
def test_flipped_byte(artifact, tmp_path, name):
  path = _copy(artifact, tmp_path)
  blob = bytearray((path / name).read_bytes())
  blob[len(blob) // 3] ^= 0x01
  (path / name).write_bytes(bytes(blob))
  with pytest.raises(ArtifactError, match="sha256|JSON"):
    lq.load(path)


def test_missing_files(artifact, tmp_path):
  path = _copy(artifact, tmp_path)
  (path / ARRAYS).unlink()
  with pytest.raises(ArtifactError, match="missing"):
    lq.load(path)
  with pytest.raises(ArtifactError, match="missing"):
    lq.load(tmp_path / "nowhere")


@pytest.mark.parametrize("version", [1, 3, "2", None])
def test_wrong_format_version(artifact, tmp_path, version):
  path = _copy(artifact, tmp_path)
  manifest = _manifest(path)
  manifest["format_version"] = version
  _write_manifest(path, manifest)
  with pytest.raises(ArtifactError, match="format_version"):
    lq.load(path)


def test_altered_manifest_fails_its_digest(artifact, tmp_path):
  path = _copy(artifact, tmp_path)
  manifest = _manifest(path)
  manifest["metadata"]["model"] = "resnet50"
  _write_manifest(path, manifest, sign=False)
  with pytest.raises(ArtifactError, match="manifest_sha256"):
    lq.load(path)


def _first_layer(manifest):
  return next(iter(manifest["layers"].values()))


def _first_float(manifest):
  return next(e for e in manifest["float"].values() if "key" in e)


MISMATCHES = {
  "shape": lambda m: _first_float(m).update(shape=[*_first_float(m)["shape"], 1]),
  "dtype": lambda m: _first_float(m).update(dtype="float16"),
  "missing key": lambda m: _first_float(m).update(key="no/such/array"),
  "sha": lambda m: _first_float(m).update(sha256="0" * 64),
  "layer n": lambda m: _first_layer(m).update(n=_first_layer(m)["n"] + 1),
  "layer k": lambda m: _first_layer(m).update(k=_first_layer(m)["k"] * 2),
  "layer shape": lambda m: _first_layer(m).update(shape=[3, 3]),
  "layer arrays": lambda m: _first_layer(m)["arrays"].pop("codes"),
  "layers type": lambda m: m.update(layers=[]),
  "no payload": lambda m: m.pop("payload_bytes"),
}


@pytest.mark.parametrize("what", sorted(MISMATCHES))
def test_manifest_disagreeing_with_arrays(artifact, tmp_path, what):
  """Even with a valid manifest digest, a manifest that disagrees with the arrays is refused."""
  path = _copy(artifact, tmp_path)
  manifest = _manifest(path)
  MISMATCHES[what](manifest)
  _write_manifest(path, manifest)
  with pytest.raises(ArtifactError):
    lq.load(path)


def test_array_the_manifest_does_not_name(artifact, tmp_path):
  path = _copy(artifact, tmp_path)
  manifest = _manifest(path)
  arrays = dict(lq.load(path).arrays)
  arrays["extra"] = np.zeros(3, np.float32)
  _write_arrays(path, arrays, manifest)
  with pytest.raises(ArtifactError, match="does not name"):
    lq.load(path)


def test_object_arrays_are_refused_without_unpickling(artifact, tmp_path, monkeypatch):
  path = _copy(artifact, tmp_path)
  manifest = _manifest(path)
  arrays = dict(lq.load(path).arrays)
  entry = _first_float(manifest)
  arrays[entry["key"]] = np.array([{"evil": 1}] * max(1, len(arrays[entry["key"]])), dtype=object)
  _write_arrays(path, arrays, manifest)  # np.savez pickles the object array

  def boom(*a, **k):
    raise AssertionError("pickle was called")

  monkeypatch.setattr(pickle, "load", boom)
  monkeypatch.setattr(pickle, "loads", boom)
  monkeypatch.setattr(pickle, "Unpickler", boom)
  with pytest.raises(ArtifactError, match="object arrays"):
    lq.load(path)


def test_not_a_zip_with_matching_checksums(artifact, tmp_path):
  """A pickle (or any non-zip) file carrying the right size and sha is still refused."""
  path = _copy(artifact, tmp_path)
  manifest = _manifest(path)
  blob = pickle.dumps({"x": 1})
  (path / ARRAYS).write_bytes(blob)
  manifest.update(arrays_bytes=len(blob), arrays_sha256=hashlib.sha256(blob).hexdigest())
  _write_manifest(path, manifest)
  with pytest.raises(ArtifactError, match="not an .npz"):
    lq.load(path)


def test_package_never_unpickles():
  bad = re.compile(r"allow_pickle\s*=\s*True|^\s*(import|from)\s+(c?pickle|dill|joblib)\b|pickle\.")
  hits = [
    f"{p.relative_to(PACKAGE)}:{i}: {line.strip()}"
    for p in sorted(PACKAGE.rglob("*.py"))
    for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
    if bad.search(line)
  ]
  assert not hits, hits
  loads = []
  for p in sorted(PACKAGE.rglob("*.py")):
    lines = p.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
      if "np.load(" in line and "allow_pickle=False" not in " ".join(lines[i : i + 3]):
        loads.append(f"{p.relative_to(PACKAGE)}:{i + 1}: {line.strip()}")
  assert not loads, loads


# ----------------------------------------------------------------------------- fuzzing


def _only_artifact_errors(path) -> bool:
  """True if load+decode succeeded, False on ArtifactError; any other exception propagates."""
  try:
    _load_and_decode(path)
    return True
  except ArtifactError:
    return False


@FUZZ
@given(
  name=st.sampled_from([MANIFEST, ARRAYS]),
  flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), max_size=4),
  cut=st.one_of(st.none(), st.floats(0, 1, exclude_max=True)),
)
def test_fuzz_bytes(artifact, tmp_path, name, flips, cut):
  path = _copy(artifact, tmp_path, "fuzz")
  original = (path / name).read_bytes()
  blob = bytearray(original)
  for where, xor in flips:
    blob[int(where * len(blob))] ^= xor
  if cut is not None:
    blob = blob[: int(cut * len(blob))]
  (path / name).write_bytes(bytes(blob))
  ok = _only_artifact_errors(path)
  if ok and bytes(blob) != original:  # only a change JSON does not see (whitespace) may load
    assert name == MANIFEST and json.loads(bytes(blob)) == json.loads(original)


JSON = st.recursive(
  st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
  lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids, max_size=3),
  max_leaves=6,
)


def _paths(node, prefix=()):
  yield prefix
  if isinstance(node, dict):
    for k, v in node.items():
      yield from _paths(v, (*prefix, k))
  elif isinstance(node, list):
    for i, v in enumerate(node):
      yield from _paths(v, (*prefix, i))


@FUZZ
@given(data=st.data(), sign=st.booleans())
def test_fuzz_manifest_fields(artifact, tmp_path, data, sign):
  """Replace or delete any field; unsigned → refused; re-signed → loads or ArtifactError only."""
  path = _copy(artifact, tmp_path, "fuzz")
  original = _manifest(path)
  manifest = copy.deepcopy(original)
  paths = [p for p in _paths(manifest) if p and p[-1] != "manifest_sha256"]
  target = data.draw(st.sampled_from(paths))
  parent = manifest
  for key in target[:-1]:
    parent = parent[key]
  if data.draw(st.booleans()) and isinstance(parent, dict):
    del parent[target[-1]]
  else:
    parent[target[-1]] = data.draw(JSON)
  _write_manifest(path, manifest, sign=sign)
  ok = _only_artifact_errors(path)
  if ok and not sign:
    assert manifest_digest(manifest) == manifest_digest(original)
