"""Read-only views of the emulator's bucket from the test process, through its JSON API on
127.0.0.1 (plain urllib: the test process itself never loads a GCS client or its env vars)."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request


def list_names(url: str, bucket: str, prefix: str = "") -> list[str]:
  """Names of the objects under `prefix` (all pages)."""
  names, token = [], None
  while True:
    query = {"prefix": prefix, **({"pageToken": token} if token else {})}
    with urllib.request.urlopen(
      f"{url}/storage/v1/b/{bucket}/o?{urllib.parse.urlencode(query)}", timeout=30
    ) as r:
      page = json.load(r)
    names += [item["name"] for item in page.get("items", [])]
    token = page.get("nextPageToken")
    if not token:
      return sorted(names)


def read(url: str, bucket: str, name: str) -> bytes:
  quoted = urllib.parse.quote(name, safe="")
  with urllib.request.urlopen(f"{url}/storage/v1/b/{bucket}/o/{quoted}?alt=media", timeout=30) as r:
    return r.read()


def committed_steps(url: str, bucket: str, checkpoints: str) -> list[int]:
  """Steps with orbax's `commit_success.txt` under the prefix `checkpoints` (no trailing /)."""
  steps = set()
  for name in list_names(url, bucket, checkpoints + "/"):
    step, _, rest = name[len(checkpoints) + 1 :].partition("/")
    if step.isdigit() and rest == "commit_success.txt":
      steps.add(int(step))
  return sorted(steps)


def write(url: str, bucket: str, name: str, data: bytes) -> None:
  """Uploads `data` as object `name` (one media upload)."""
  query = urllib.parse.urlencode({"uploadType": "media", "name": name})
  request = urllib.request.Request(
    f"{url}/upload/storage/v1/b/{bucket}/o?{query}", data=data, method="POST"
  )
  with urllib.request.urlopen(request, timeout=60) as r:
    r.read()
