"""Starts the emulator (and the TLS proxy for TensorFlow) on free 127.0.0.1 ports, stops them by
process id, and builds the environment that points every GCS client at them and nowhere else."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

HERE = os.path.dirname(os.path.abspath(__file__))
CLOSED = "127.0.0.1:9"  # a metadata-server probe that slips through fails here, at once
# Variables that could send a client elsewhere (developer credentials, real endpoints).
UNSET = ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", "HTTPS_PROXY", "HTTP_PROXY")


@dataclasses.dataclass
class LocalGCS:
  """A running emulator: its URL and the environment for processes that use gs://."""

  url: str
  env: dict[str, str]
  pids: list[int]

  def child_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
    merged = {k: v for k, v in (os.environ if base is None else base).items() if k not in UNSET}
    return {**merged, **self.env}


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _wait_listening(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if proc.poll() is not None:
      raise RuntimeError(f"GCS helper {proc.args} exited with {proc.returncode}")
    try:
      socket.create_connection(("127.0.0.1", port), timeout=1).close()
      return
    except OSError:
      time.sleep(0.1)
  raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout} s")


def client_env(emulator_port: int, proxy_port: int, certdir: str, gcloud_dir: str) -> dict:
  """Every GCS client's endpoint and auth switch, pointed at 127.0.0.1 (none reads the others)."""
  url = f"http://127.0.0.1:{emulator_port}"
  return {
    "STORAGE_EMULATOR_HOST": url,  # google-cloud-storage (orbax's bucket checks), gcsfs
    "TENSORSTORE_GCS_HTTP_URL": url,  # TensorStore: orbax's array data
    "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test",  # TensorStore and TensorFlow: no OAuth at all
    "FSSPEC_GCS_TOKEN": "anon",  # gcsfs, if installed
    "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",  # else gcsfs waits 60 s on a gRPC probe
    "NO_GCE_CHECK": "true",  # google-auth, gcsfs: no metadata-server probe
    "GCE_METADATA_HOST": CLOSED,  # google-auth, TensorFlow
    "GCE_METADATA_IP": CLOSED,  # google-auth
    "GCE_METADATA_ROOT": CLOSED,  # TensorStore
    "CLOUDSDK_CONFIG": gcloud_dir,  # an empty gcloud config: no developer credentials
    "https_proxy": f"http://127.0.0.1:{proxy_port}",  # TensorFlow's libcurl -> tls_proxy.py
    "CURL_CA_BUNDLE": os.path.join(certdir, "ca.pem"),  # trusts the throwaway CA only
    "no_proxy": "127.0.0.1,localhost",  # the emulator's own clients go direct
  }


@contextlib.contextmanager
def local_gcs(root: str, buckets: tuple[str, ...] = ("bucket",)) -> Iterator[LocalGCS]:
  """The emulator with `buckets` plus the TLS proxy, for the duration of the block."""
  emulator_port, proxy_port = free_port(), free_port()
  certdir, gcloud_dir = os.path.join(root, "certs"), os.path.join(root, "gcloud")
  os.makedirs(gcloud_dir, exist_ok=True)
  logs = open(os.path.join(root, "gcs-helpers.log"), "ab")  # noqa: SIM115 -- closed below
  procs = []
  try:
    for cmd, port in (
      ([f"{HERE}/emulator.py", str(emulator_port), *buckets], emulator_port),
      ([f"{HERE}/tls_proxy.py", str(proxy_port), str(emulator_port), certdir], proxy_port),
    ):
      procs.append(subprocess.Popen([sys.executable, *cmd], stdout=logs, stderr=logs))
      _wait_listening(port, procs[-1])
    env = client_env(emulator_port, proxy_port, certdir, gcloud_dir)
    yield LocalGCS(env["STORAGE_EMULATOR_HOST"], env, [p.pid for p in procs])
  finally:
    for proc in procs:
      proc.terminate()
    for proc in procs:
      try:
        proc.wait(timeout=10)
      except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    logs.close()
