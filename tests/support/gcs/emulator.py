"""A local GCS server for the tests: gcp-storage-emulator, in memory, on 127.0.0.1 only.

Run: python tests/support/gcs/emulator.py PORT BUCKET [BUCKET ...]   (stops on SIGTERM)

Stock gcp-storage-emulator lacks three things the project's clients rely on; they are patched
in-process here (test-only):
* media downloads carry no `x-goog-generation` header: TensorStore (orbax's array writer) then
  reads generation 0 and a later conditional OCDBT write fails now and then;
* an empty `uploadType=media` body (TensorFlow's `dir/` markers) crashes the handler;
* gcsfs's `moveTo` rename answers 501 (gcsfs then retries for ~30 s before copy + delete);
* `GET /b/BUCKET/storageLayout` is missing: TensorFlow's GCS client asks it before renaming a
  folder (tfds's final rename of its `incomplete.*` folder), and fails on the 404.
It also serves one request at a time: a deeper accept queue keeps bursts from being refused.
"""

from __future__ import annotations

import http.server
import logging
import os
import signal
import sys
import threading
from http import HTTPStatus

from gcp_storage_emulator import server
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import buckets, objects

_stock_download = objects.download
_stock_media_upload = objects._media_upload


def _download_with_generation(request, response, storage, *args, **kwargs):
  bucket, name = request.params["bucket_name"], request.params["object_id"]
  try:
    meta = storage.get_file_obj(bucket, name)
  except NotFound:
    meta = None
  if meta is not None:
    response["x-goog-generation"] = str(meta["generation"])
    response["x-goog-metageneration"] = str(meta.get("metageneration", "1"))
  return _stock_download(request, response, storage, *args, **kwargs)


def _media_upload_allow_empty(request, response, storage):
  if request.data is None:
    request._data = b""
  return _stock_media_upload(request, response, storage)


def _move(request, response, storage, *args, **kwargs):
  bucket = request.params["bucket_name"]
  src, dst = request.params["object_id"], request.params["dest_object_id"]
  try:
    moved = objects._copy(request.base_url, storage, bucket, src, bucket, dst)
    objects._delete(storage, bucket, src)
  except NotFound:
    response.status = HTTPStatus.NOT_FOUND
    return
  response.json(moved)


def _storage_layout(request, response, storage, *args, **kwargs):
  """A flat-namespace, multi-region bucket (what a standard `gcloud storage buckets create` makes)."""
  bucket = storage.buckets.get(request.params["bucket_name"])
  if not bucket:
    response.status = HTTPStatus.NOT_FOUND
    return
  response.json(
    {
      "kind": "storage#storageLayout",
      "bucket": bucket["name"],
      "location": bucket.get("location", "US"),
      "locationType": "multi-region",
      "hierarchicalNamespace": {"enabled": False},
    }
  )


def _quiet_handle_error(self, request, client_address):
  if not isinstance(sys.exc_info()[1], BrokenPipeError | ConnectionResetError):
    http.server.HTTPServer.handle_error.__wrapped__(self, request, client_address)


def patch() -> None:
  """Applies the fixes above to the emulator module (idempotent enough for one process)."""
  objects.download = _download_with_generation
  objects._media_upload = _media_upload_allow_empty
  move = (
    r"^/storage/v1/b/(?P<bucket_name>[-.\w]+)/o/(?P<object_id>.*[^/]+)/moveTo/o/"
    r"(?P<dest_object_id>.*[^/]+)$",
    {"POST": _move},
  )
  layout = (r"^/storage/v1/b/(?P<bucket_name>[-.\w]+)/storageLayout$", {"GET": _storage_layout})
  routes = []
  for pattern, handlers in server.HANDLERS:
    fixed = {
      m: _download_with_generation if f is _stock_download else f for m, f in handlers.items()
    }
    routes.append((pattern, fixed))
  server.HANDLERS = (move, layout, *routes)
  http.server.HTTPServer.request_queue_size = 128
  _quiet_handle_error.__wrapped__ = http.server.HTTPServer.handle_error
  http.server.HTTPServer.handle_error = _quiet_handle_error


def main(argv: list[str]) -> None:
  port, names = int(argv[0]), argv[1:]
  patch()
  logging.getLogger("gcp_storage_emulator").setLevel(
    os.environ.get("GCS_EMULATOR_LOG_LEVEL", "CRITICAL")
  )  # 404s are expected: quiet unless debugging
  srv = server.create_server("127.0.0.1", port, in_memory=True)
  for name in names:
    buckets.create_bucket(name, srv._storage)
  stop = threading.Event()
  signal.signal(signal.SIGTERM, lambda *_: stop.set())
  signal.signal(signal.SIGINT, lambda *_: stop.set())
  srv.start()
  print(f"GCS emulator on http://127.0.0.1:{port}, buckets {names}", flush=True)
  stop.wait()
  srv.stop()


if __name__ == "__main__":
  main(sys.argv[1:])
