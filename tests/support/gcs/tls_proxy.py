"""Lets TensorFlow's GCS client (tf.io.gfile: tfds, epath with TF, reading TensorBoard events)
reach the local emulator. Test-only; dials nothing but 127.0.0.1:EMULATOR_PORT.

Run: python tests/support/gcs/tls_proxy.py PORT EMULATOR_PORT CERTDIR

TensorFlow has no endpoint variable: it calls https://www.googleapis.com and
https://storage.googleapis.com. Its libcurl honours `https_proxy` and `CURL_CA_BUNDLE`, so this
HTTPS proxy answers CONNECT, ends TLS with a throwaway certificate for those two names (signed by
a throwaway CA written to CERTDIR/ca.pem) and forwards each request as plain HTTP to the emulator.
"""

from __future__ import annotations

import datetime
import os
import re
import signal
import socket
import ssl
import sys
import threading

HOSTS = ("www.googleapis.com", "storage.googleapis.com")
_DROP = re.compile(rb"(?i)^(connection|proxy-connection|expect|transfer-encoding|content-length):")


def write_certs(certdir: str) -> None:
  """A CA (`ca.pem`) and a server key + certificate for HOSTS signed by it (`server.pem`)."""
  from cryptography import x509
  from cryptography.hazmat.primitives import hashes, serialization
  from cryptography.hazmat.primitives.asymmetric import ec
  from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

  now = datetime.datetime.now(datetime.UTC)
  ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
  ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lr2vq test CA")])

  def build(subject, public_key, extensions):
    b = x509.CertificateBuilder().subject_name(subject).issuer_name(ca_name)
    b = b.public_key(public_key).serial_number(x509.random_serial_number())
    b = b.not_valid_before(now - datetime.timedelta(days=1))
    b = b.not_valid_after(now + datetime.timedelta(days=7))
    for ext, critical in extensions:
      b = b.add_extension(ext, critical=critical)
    return b.sign(ca_key, hashes.SHA256())

  ca = build(
    ca_name,
    ca_key.public_key(),
    [
      (x509.BasicConstraints(ca=True, path_length=None), True),
      (x509.KeyUsage(True, False, False, False, False, True, True, False, False), True),
      (x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False),
    ],
  )
  leaf = build(
    x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOSTS[0])]),
    key.public_key(),
    [
      (x509.SubjectAlternativeName([x509.DNSName(h) for h in HOSTS]), False),
      (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
      (x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False),
    ],
  )
  pem = serialization.Encoding.PEM
  os.makedirs(certdir, exist_ok=True)
  with open(os.path.join(certdir, "ca.pem"), "wb") as f:
    f.write(ca.public_bytes(pem))
  private = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
  with open(os.path.join(certdir, "server.pem"), "wb") as f:
    f.write(leaf.public_bytes(pem) + private)


def _read_head(sock) -> tuple[bytes | None, bytes]:
  buf = b""
  while b"\r\n\r\n" not in buf:
    chunk = sock.recv(65536)
    if not chunk:
      return None, b""
    buf += chunk
  head, rest = buf.split(b"\r\n\r\n", 1)
  return head, rest


def _read_exactly(sock, buf: bytes, n: int) -> bytes:
  while len(buf) < n:
    chunk = sock.recv(1 << 20)
    if not chunk:
      break
    buf += chunk
  return buf


def _read_chunked(sock, buf: bytes) -> bytes:
  """The body of a `Transfer-Encoding: chunked` request (TensorFlow uploads that way)."""
  body = b""
  while True:
    while b"\r\n" not in buf:
      chunk = sock.recv(65536)
      if not chunk:  # the client went away mid-upload (a SIGKILLed victim): not a spin on EOF
        raise ConnectionResetError("client closed mid-body")
      buf += chunk
    line, buf = buf.split(b"\r\n", 1)
    size = int(line.split(b";")[0], 16)
    buf = _read_exactly(sock, buf, size + 2)
    body, buf = body + buf[:size], buf[size + 2 :]
    if size == 0:
      return body


def _forward(tls, emulator_port: int) -> None:
  head, body = _read_head(tls)  # one request per tunnel: curl opens a new one for the next
  if head is None:
    return
  if re.search(rb"(?im)^expect:\s*100-continue", head):
    tls.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
  if re.search(rb"(?im)^transfer-encoding:\s*chunked", head):
    body = _read_chunked(tls, body)
  else:
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    body = _read_exactly(tls, body, int(length.group(1)) if length else 0)
  lines = [ln for ln in head.split(b"\r\n") if not _DROP.match(ln)]
  lines += [b"Content-Length: %d" % len(body), b"Connection: close"]
  with socket.create_connection(("127.0.0.1", emulator_port), timeout=60) as up:
    up.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)
    reply = b""
    while chunk := up.recv(1 << 20):
      reply += chunk
  rhead, sep, rbody = reply.partition(b"\r\n\r\n")
  # resumable-upload session URLs come back as http://host/...; TF must stay on https
  rhead = re.sub(rb"(?im)^(location:\s*)http://", rb"\1https://", rhead)
  tls.sendall(rhead + sep + rbody)


def _serve(client, ctx, emulator_port: int) -> None:
  try:
    head, _ = _read_head(client)
    if not head or not head.upper().startswith(b"CONNECT "):
      client.sendall(b"HTTP/1.1 405 CONNECT only\r\nContent-Length: 0\r\n\r\n")
      return
    host = head.split()[1].split(b":")[0].decode()
    if host not in HOSTS:
      client.sendall(b"HTTP/1.1 403 only the GCS hosts\r\nContent-Length: 0\r\n\r\n")
      return
    client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
    with ctx.wrap_socket(client, server_side=True) as tls:
      _forward(tls, emulator_port)
  except (OSError, ssl.SSLError, ValueError):
    pass
  finally:
    client.close()


def main(argv: list[str]) -> None:
  port, emulator_port, certdir = int(argv[0]), int(argv[1]), argv[2]
  if not os.path.exists(os.path.join(certdir, "server.pem")):
    write_certs(certdir)
  ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
  ctx.load_cert_chain(os.path.join(certdir, "server.pem"))
  listener = socket.create_server(("127.0.0.1", port), backlog=128)
  signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
  print(f"GCS TLS proxy on 127.0.0.1:{port} -> emulator :{emulator_port}", flush=True)
  while True:
    conn, _ = listener.accept()
    threading.Thread(target=_serve, args=(conn, ctx, emulator_port), daemon=True).start()


if __name__ == "__main__":
  main(sys.argv[1:])
