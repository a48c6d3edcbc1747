"""The one path layer: every file the project reads or writes, on local disk or `gs://`.

User paths go through `etils.epath` (the layer orbax and tfds use: tf.io.gfile when TensorFlow is
installed, fsspec/gcsfs otherwise), never through `os.path`/`open`, which would turn
`gs://bucket/run` into a local folder `gs:/bucket/run`. Local paths are made absolute (so a later
`chdir` cannot move them); URLs are kept as given.
"""

from __future__ import annotations

import os
import posixpath

from etils import epath

PathLike = str | os.PathLike


def is_remote(path: PathLike) -> bool:
  """True for URLs such as `gs://bucket/dir` (anything with a scheme)."""
  return "://" in os.fspath(path)


def as_str(path: PathLike) -> str:
  """The canonical string of a user path: `~` expanded and absolute if local, URLs unchanged."""
  text = os.fspath(path)
  if is_remote(text):
    return text.rstrip("/") if not text.endswith("://") else text
  return os.path.abspath(os.path.expanduser(text))


def resolve(path: PathLike) -> epath.Path:
  """`as_str(path)` as an `epath.Path` (reads and writes local disk or the bucket)."""
  return epath.Path(as_str(path))


def join(path: PathLike, *parts: str) -> str:
  """`path/part/...` as a string; keeps `gs://` intact (posix separators for URLs)."""
  text = os.fspath(path)
  if is_remote(text):
    return posixpath.join(text, *parts)
  return os.path.join(text, *parts)


def parent(path: PathLike) -> str:
  """The folder holding `path` (`gs://b/run/float` → `gs://b/run`)."""
  text = os.fspath(path)
  return posixpath.dirname(text.rstrip("/")) if is_remote(text) else os.path.dirname(text)


def existing_ancestor(path: PathLike) -> str:
  """The nearest local folder or file at or above local `path` that exists (for checks on a path
  that will be created: its free disk, whether it can be written)."""
  probe = as_str(path)
  while not os.path.exists(probe) and os.path.dirname(probe) != probe:
    probe = os.path.dirname(probe)
  return probe


def write_bytes(path: PathLike, data: bytes) -> None:
  """Writes `data` so that a reader sees the old file or the whole new one, never a part.

  Local: a temporary file in the same folder, fsynced, then renamed over `path`. On object
  stores one upload is already all-or-nothing (and a "rename" is a copy), so it writes in place.
  """
  target = resolve(path)
  if is_remote(target):
    target.write_bytes(data)
    return
  tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
  with open(tmp, "wb") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, target)


def write_text(path: PathLike, text: str) -> None:
  """`write_bytes` of UTF-8 text."""
  write_bytes(path, text.encode("utf-8"))


def bucket_root(path: PathLike) -> str:
  """`scheme://bucket` of a URL (`gs://b/run/x` → `gs://b`)."""
  scheme, _, rest = as_str(path).partition("://")
  return f"{scheme}://{rest.split('/', 1)[0]}"


def check_bucket(path: PathLike) -> None:
  """FileNotFoundError naming the fix when the bucket of URL `path` does not exist (TensorFlow's
  GCS client would otherwise retry `makedirs` under a missing bucket forever)."""
  root = bucket_root(path)
  if not epath.Path(root).exists():
    raise FileNotFoundError(
      f"bucket {root} does not exist or this account cannot see it; create it "
      f"(gcloud storage buckets create {root}) or grant access to it"
    )


def makedirs(path: PathLike) -> epath.Path:
  """Creates the folder `path` (and parents) if missing; returns it. On gs:// folders are
  prefixes, so this only writes a marker where the backend wants one; the bucket must exist."""
  target = resolve(path)
  if is_remote(target):
    check_bucket(target)
  target.mkdir(parents=True, exist_ok=True)
  return target
