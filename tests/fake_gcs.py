"""A real GCS JSON API on 127.0.0.1 for tests: gcp-storage-emulator behind a TLS proxy.

TensorFlow's gs:// client has the hosts www.googleapis.com / storage.googleapis.com built in and
no endpoint override, but it honours libcurl's proxy variables and CURL_CA_BUNDLE. So the tests
point https_proxy/http_proxy at a local proxy that accepts CONNECT, terminates TLS with a
certificate from a throwaway CA, and forwards each request as plain HTTP to the emulator. The
proxy can inject faults (`FakeGcs.faults`): transient 503/429 answers and broken connections, or
an object that always fails.
google-cloud-storage talks to the emulator directly (STORAGE_EMULATOR_HOST). Nothing leaves the
loopback interface: with only the test CA trusted, no real Google host could even be verified.
"""

from __future__ import annotations

import datetime
import http.client
import json
import random
import re
import socket
import socketserver
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote

_GOOGLE_HOSTS = ["www.googleapis.com", "storage.googleapis.com", "oauth2.googleapis.com"]
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authorization",
               "transfer-encoding", "te", "trailer", "upgrade", "content-length", "expect"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """(CA bundle, server certificate, server key) for the Google hosts, valid for a day."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def build(subject, issuer, public_key, signing_key, extensions):
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
                   .public_key(public_key).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1)))
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        return builder.sign(signing_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vertex-trainer test CA")])
    ca = build(ca_name, ca_name, ca_key.public_key(), ca_key,
               [(x509.BasicConstraints(ca=True, path_length=None), True),
                (x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                               content_commitment=False, key_encipherment=False,
                               data_encipherment=False, key_agreement=False,
                               encipher_only=False, decipher_only=False), True)])
    key = ec.generate_private_key(ec.SECP256R1())
    server = build(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, _GOOGLE_HOSTS[0])]),
                   ca_name, key.public_key(), ca_key,
                   [(x509.SubjectAlternativeName([x509.DNSName(h) for h in _GOOGLE_HOSTS]),
                     False)])
    paths = directory / "ca.pem", directory / "server.pem", directory / "server-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


_STATUS_REASONS = {"403": "Forbidden", "429": "Too Many Requests", "503": "Service Unavailable"}


@dataclass
class Faults:
    """What the proxy does wrong, deterministically for a given seed and request order.

    Transient: a `share` of requests is answered 503 or 429, or loses its connection mid-way
    (a GET's response is cut after half its body; any other request is dropped unanswered, so
    nothing reaches the emulator), but never more than `max_in_a_row` in a row, so a client
    that retries always gets through. Permanent: every request whose decoded target contains
    `broken` gets `broken_status` (503: a service that never recovers; 403: access denied).
    """

    share: float = 0.0
    seed: int = 0
    max_in_a_row: int = 2
    broken: str | None = None
    broken_status: int = 503
    injected: dict = field(default_factory=lambda: {"503": 0, "429": 0, "drop": 0})
    _random: random.Random = field(init=False, repr=False)
    _in_a_row: int = field(default=0, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self):
        self._random = random.Random(self.seed)

    def pick(self, target: str) -> str | None:
        """"503", "429", "drop" or None (forward the request) for this request."""
        with self._lock:
            if self.broken and self.broken in unquote(target):
                fault = str(self.broken_status)
                self.injected[fault] = self.injected.get(fault, 0) + 1
                return fault
            draw, kind = self._random.random(), self._random.choice(("503", "429", "drop"))
            if draw >= self.share or self._in_a_row >= self.max_in_a_row:
                self._in_a_row = 0
                return None
            self._in_a_row += 1
            self.injected[kind] += 1
            return kind


class _ProxyHandler(socketserver.StreamRequestHandler):
    """CONNECT -> TLS -> HTTP requests forwarded to the emulator; plain proxied HTTP likewise."""

    server: "_ProxyServer"

    def handle(self):
        try:
            stream = self.rfile
            first = stream.readline()
            while first:
                method, target, _ = first.decode("latin-1").split(" ", 2)
                headers = self._headers(stream)
                if method == "CONNECT":
                    self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    self.wfile.flush()
                    tls = self.server.tls.wrap_socket(self.connection, server_side=True)
                    self._serve(tls.makefile("rb"), tls)
                    return
                if not self._forward(method, target, headers, stream, self.connection):
                    return
                first = stream.readline()
        except (ConnectionError, ssl.SSLError, ValueError):
            return

    def _serve(self, stream, sock):
        while True:
            first = stream.readline()
            if not first:
                return
            method, target, _ = first.decode("latin-1").split(" ", 2)
            if not self._forward(method, target, self._headers(stream), stream, sock):
                return

    @staticmethod
    def _headers(stream) -> list[tuple[str, str]]:
        headers = []
        while (line := stream.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers.append((name.strip(), value.strip()))
        return headers

    @staticmethod
    def _body(stream, headers) -> bytes:
        values = {k.lower(): v for k, v in headers}
        if values.get("transfer-encoding", "").lower() == "chunked":
            # The emulator does not read chunked bodies: hand it the whole body instead.
            chunks = []
            while (size := int(stream.readline().split(b";")[0], 16)):
                chunks.append(stream.read(size))
                stream.readline()
            while stream.readline() not in (b"\r\n", b"\n", b""):
                pass
            return b"".join(chunks)
        return stream.read(int(values.get("content-length", 0)))

    def _forward(self, method, target, headers, stream, sock) -> bool:
        if any(k.lower() == "expect" and v.lower() == "100-continue" for k, v in headers):
            # Without this, curl (TensorFlow's client) waits a second before every upload body.
            sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = self._body(stream, headers)
        if target.startswith("http://"):  # absolute-form, from http_proxy
            target = "/" + target.split("/", 3)[3] if target.count("/") >= 3 else "/"
        layout = re.match(r"^/storage/v1/b/([^/?]+)/storageLayout", target)
        fault = self.server.faults.pick(target)
        if fault == "drop" and method != "GET":
            return False
        if fault in _STATUS_REASONS:
            status, reason = int(fault), _STATUS_REASONS[fault]
            response_headers = [("Content-Type", "application/json")]
            payload = json.dumps({"error": {"code": status, "message": "injected fault"}}).encode()
        elif method == "GET" and layout:
            # TensorFlow asks for the bucket's layout before renaming a directory; the emulator
            # lacks this call, so answer as GCS does for a flat (non-hierarchical) bucket.
            status, reason, response_headers = 200, "OK", [("Content-Type", "application/json")]
            payload = json.dumps({"kind": "storage#storageLayout", "bucket": layout[1],
                                  "location": "US", "locationType": "multi-region",
                                  "hierarchicalNamespace": {"enabled": False}}).encode()
        else:
            upstream = http.client.HTTPConnection(*self.server.upstream, timeout=60)
            forwarded = {k: v for k, v in headers if k.lower() not in _HOP_BY_HOP}
            forwarded["Content-Length"] = str(len(body))
            upstream.request(method, target, body=body, headers=forwarded)
            response = upstream.getresponse()
            payload = response.read()
            upstream.close()
            status, reason, response_headers = (response.status, response.reason,
                                                response.getheaders())
        lines = [f"HTTP/1.1 {status} {reason}"]
        lines += [f"{k}: {v}" for k, v in response_headers if k.lower() not in _HOP_BY_HOP]
        lines.append(f"Content-Length: {len(payload)}")
        keep_alive = dict((k.lower(), v.lower()) for k, v in headers).get("connection") != "close"
        lines.append("Connection: " + ("keep-alive" if keep_alive else "close"))
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if fault == "drop":  # the connection breaks with the response half sent
            sock.sendall(head + payload[:len(payload) // 2])
            return False
        sock.sendall(head + (b"" if method == "HEAD" else payload))
        return keep_alive


class _ProxyServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, upstream: tuple[str, int], tls: ssl.SSLContext):
        super().__init__(("127.0.0.1", port), _ProxyHandler)
        self.upstream = upstream
        self.tls = tls
        self.faults = Faults()


def _accept_empty_media_uploads() -> None:
    """The emulator reads an empty body as None and then fails on len(None): TensorFlow's
    zero-byte directory markers would get HTTP 500 (and endless retries) without this."""
    from gcp_storage_emulator.handlers import objects

    original = objects._media_upload
    if getattr(original, "accepts_empty", False):
        return

    def media_upload(request, response, storage):
        if request.data is None:
            request._data = b""
        return original(request, response, storage)

    media_upload.accepts_empty = True
    objects._media_upload = media_upload


def _report_no_bytes_of_a_fresh_upload() -> None:
    """Asked how much of a resumable upload arrived when none did, the emulator answers
    `Range: bytes=0-0` (one byte) where GCS sends no Range: TensorFlow, retrying an upload whose
    first request failed, would then resume at byte 1 and get HTTP 400."""
    from gcp_storage_emulator.handlers import objects

    original = objects._resumable_incomplete
    if getattr(original, "reports_no_bytes", False):
        return

    def resumable_incomplete(response, storage, upload_id, fallback_end=0):
        original(response, storage, upload_id, fallback_end)
        if fallback_end == 0 and storage.get_resumable_byte_count(upload_id) == 0:
            response._headers.pop("Range")

    resumable_incomplete.reports_no_bytes = True
    objects._resumable_incomplete = resumable_incomplete


class FakeGcs:
    """The emulator and the proxy, started on free loopback ports; `env` configures clients."""

    def __init__(self, directory: Path):
        from gcp_storage_emulator.server import create_server

        _accept_empty_media_uploads()
        _report_no_bytes_of_a_fresh_upload()
        ca, cert, key = _write_certificates(directory)
        self.emulator_port, self.proxy_port = free_port(), free_port()
        self._emulator = create_server("127.0.0.1", self.emulator_port, in_memory=True)
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(cert, key)
        self._proxy = _ProxyServer(self.proxy_port, ("127.0.0.1", self.emulator_port), tls)
        proxy = f"http://127.0.0.1:{self.proxy_port}"
        self.env = {
            "https_proxy": proxy, "http_proxy": proxy, "HTTPS_PROXY": proxy, "HTTP_PROXY": proxy,
            "no_proxy": "", "NO_PROXY": "",
            "CURL_CA_BUNDLE": str(ca), "NO_GCE_CHECK": "true",
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test-token",
            "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{self.emulator_port}",
            "GOOGLE_CLOUD_PROJECT": "test-project",
        }

    @property
    def faults(self) -> Faults:
        """What the proxy (TensorFlow's path; not google-cloud-storage's) currently injects."""
        return self._proxy.faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        self._proxy.faults = faults

    def start(self) -> "FakeGcs":
        self._emulator.start()
        threading.Thread(target=self._proxy.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._proxy.shutdown()
        self._proxy.server_close()
        self._emulator.stop()

    def list(self, bucket: str, prefix: str) -> list[str]:
        """Object names under `prefix` (read straight from the emulator)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.emulator_port, timeout=10)
        connection.request("GET", f"/storage/v1/b/{bucket}/o?prefix={prefix}")
        listing = json.loads(connection.getresponse().read() or b"{}")
        connection.close()
        return [item["name"] for item in listing.get("items", [])]

    def read(self, bucket: str, name: str) -> bytes | None:
        """An object's bytes, None if absent."""
        connection = http.client.HTTPConnection("127.0.0.1", self.emulator_port, timeout=10)
        connection.request("GET", f"/storage/v1/b/{bucket}/o/{quote(name, safe='')}?alt=media")
        response = connection.getresponse()
        data = response.read()
        connection.close()
        return data if response.status == 200 else None

    def delete(self, bucket: str, name: str) -> None:
        """Removes an object straight from the emulator (no faults)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.emulator_port, timeout=10)
        connection.request("DELETE", f"/storage/v1/b/{bucket}/o/{quote(name, safe='')}")
        connection.getresponse().read()
        connection.close()

    def upload(self, local: Path, bucket: str, prefix: str) -> None:
        """A local tree straight to the emulator: TensorFlow's gs:// writes are slow here."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        client = storage.Client(project="test-project", credentials=AnonymousCredentials(),
                                client_options={"api_endpoint": self.env["STORAGE_EMULATOR_HOST"]})
        for path in local.rglob("*"):
            if path.is_file():
                client.bucket(bucket).blob(f"{prefix}/{path.relative_to(local)}") \
                    .upload_from_filename(str(path))

    def create_bucket(self, name: str) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.emulator_port, timeout=10)
        connection.request("POST", "/storage/v1/b?project=test-project",
                           body=f'{{"name": "{name}"}}',
                           headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        connection.close()
        if response.status not in (200, 409):
            raise RuntimeError(f"creating bucket {name}: HTTP {response.status}")
