"""PROXY protocol v2 against a real HAProxy (the Debian package), both ways.

    client 127.0.0.5 --TLS--> haproxy :direct --PROXY v2 + TLS--> tunnel server --PROXY v2 + plain--> backend
    app 127.0.0.6 --> tunnel client --PROXY v2 + TLS--> haproxy :proxied (accept-proxy) --> (same)

HAProxy runs in TCP mode with ``send-proxy-v2`` (and ``proxy-v2-options
crc32c``, so longtls verifies HAProxy's checksum) in front of one ``longtls
tunnel server --accept-proxy --send-proxy``; its health checks (``check``)
send PROXY v2 LOCAL headers.  The backend parses the header it receives with
the layout of proxy-protocol.txt §2.2, written out here, and answers the
address it found.  The second path has HAProxy parse the header longtls'
tunnel client sends (``accept-proxy``) and pass the address on.
"""

from __future__ import annotations

import contextlib
import re
import socket
import socketserver
import ssl
import struct
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from helpers.cli import LONGTLS
from helpers.peers import LOOPBACK, PeerProcess, free_port, require_binary, start_process

SIG = b"\r\n\r\n\x00\r\nQUIT\n"
READY = r"^longtls: tunnel (server|client): "


class HeaderBackend(socketserver.ThreadingTCPServer):
    """Reads a PROXY v2 TCP/IPv4 header, answers ``src=IP:PORT dst=IP:PORT``, then echoes."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        self.headers: list[str] = []
        super().__init__((LOOPBACK, 0), HeaderHandler)
        self.port: int = self.server_address[1]
        threading.Thread(target=self.serve_forever, daemon=True).start()


class HeaderHandler(socketserver.StreamRequestHandler):
    server: HeaderBackend

    def handle(self) -> None:
        fixed = self.rfile.read(16)
        assert fixed[:12] == SIG and fixed[12] == 0x21 and fixed[13] == 0x11, fixed.hex()
        (length,) = struct.unpack(">H", fixed[14:16])
        block = self.rfile.read(length)
        src, dst = socket.inet_ntoa(block[0:4]), socket.inet_ntoa(block[4:8])
        sport, dport = struct.unpack(">HH", block[8:12])
        line = f"src={src}:{sport} dst={dst}:{dport}"
        self.server.headers.append(line)
        self.wfile.write(line.encode() + b"\n")
        with contextlib.suppress(OSError):  # a reset from the tunnel ends the echo too
            while data := self.request.recv(65536):
                self.request.sendall(data)


def haproxy_config(direct: int, proxied: int, tunnel: int) -> str:
    return f"""\
global
    maxconn 100

defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend direct
    bind {LOOPBACK}:{direct}
    default_backend tunnels

frontend proxied
    bind {LOOPBACK}:{proxied} accept-proxy
    default_backend tunnels

backend tunnels
    server tunnel1 {LOOPBACK}:{tunnel} send-proxy-v2 proxy-v2-options crc32c check inter 200ms
"""


@contextlib.contextmanager
def haproxy(tmp_path: Path, direct: int, proxied: int, tunnel: int) -> Iterator[PeerProcess]:
    require_binary("haproxy")
    config = tmp_path / "haproxy.cfg"
    config.write_text(haproxy_config(direct, proxied, tunnel))
    # Ready when the accept-proxy frontend answers: a probe there is dropped by
    # HAProxy itself (no header), while one on "direct" would reach the tunnel
    # as a client that never starts TLS.
    with start_process(["haproxy", "-db", "-f", str(config)], port=proxied) as proc:
        yield proc


def metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def tls_from(source: str, port: int, ca: Path) -> tuple[str, tuple[str, int]]:
    """A TLS client bound to ``source``: the backend's first line, and our address."""
    context = ssl.create_default_context(cafile=str(ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    with socket.create_connection((LOOPBACK, port), timeout=10, source_address=(source, 0)) as raw:
        ours = raw.getsockname()[:2]
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            line = tls.makefile("rb").readline().decode().strip()
            tls.sendall(b"ping\n")
            assert tls.recv(5) == b"ping\n"
            tls.unwrap()  # close_notify: a clean end, not a truncation
            return line, ours


def test_behind_haproxy_the_backend_sees_the_real_client(tmp_pki_files: Any, tmp_path: Path) -> None:
    files = tmp_pki_files("ecdsa-p256")
    backend = HeaderBackend()
    tunnel_port, metrics_port, direct, proxied = (free_port() for _ in range(4))
    try:
        with start_process(
            [*LONGTLS, "-v", "tunnel", "server", "--listen", f"{LOOPBACK}:{tunnel_port}",
             "--forward", f"{LOOPBACK}:{backend.port}", "--cert", str(files.server.chain),
             "--key", str(files.server.key), "--accept-proxy", "--send-proxy",
             "--metrics", f"{LOOPBACK}:{metrics_port}"],
            ready_pattern=READY,
        ) as server, haproxy(tmp_path, direct, proxied, tunnel_port) as lb:
            # 1. A TLS client through HAProxy: the backend gets its own address.
            line, (_, port) = tls_from("127.0.0.5", direct, files.ca)
            assert line == f"src=127.0.0.5:{port} dst={LOOPBACK}:{direct}", lb.describe()

            # 2. longtls' own header, parsed by HAProxy (accept-proxy) and passed on.
            with start_process(
                [*LONGTLS, "tunnel", "client", "--listen", f"{LOOPBACK}:0", "--connect", f"{LOOPBACK}:{proxied}",
                 "--ca", str(files.ca), "--servername", "localhost", "--send-proxy"],
                ready_pattern=READY,
            ) as client:
                match = re.search(r"plain TCP on 127\.0\.0\.1:(\d+)", client.stderr)
                assert match, client.describe()
                client_port = int(match.group(1))
                with socket.create_connection((LOOPBACK, client_port), timeout=10,
                                              source_address=("127.0.0.6", 0)) as app:
                    app_port = app.getsockname()[1]
                    assert app.makefile("rb").readline().decode().strip() == (
                        f"src=127.0.0.6:{app_port} dst={LOOPBACK}:{client_port}"
                    ), client.describe() + lb.describe()

            # 3. HAProxy's health checks (PROXY v2 LOCAL) every 200 ms are no errors.
            deadline = time.monotonic() + 10
            while server.stderr.count("proxy health check") < 3 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert server.stderr.count("proxy health check") >= 3, server.describe()
            values = metrics(metrics_port)
            assert values['longtls_handshakes_total{result="ok"}'] == 2, values
            assert values['longtls_handshakes_total{result="failed"}'] == 0, server.describe()
            assert sum(v for k, v in values.items() if k.startswith("longtls_proxy_header_errors_total")) == 0
            assert " WARNING " not in server.stderr and "handshake failed" not in server.stderr, server.describe()

            # 4. A client that bypasses HAProxy is closed before TLS, with one line.
            try:
                tls_from(LOOPBACK, tunnel_port, files.ca)
                raise AssertionError("a TLS handshake without a PROXY header succeeded")
            except (ssl.SSLError, ConnectionError):
                pass
            server.wait_for_output(r"not its signature\): closing")
            assert server.stderr.count("PROXY protocol header") == 1, server.describe()
            assert metrics(metrics_port)['longtls_proxy_header_errors_total{reason="missing"}'] == 1
    finally:
        backend.shutdown()
        backend.server_close()
    assert len(backend.headers) == 2
