"""``longtls tunnel server|client --mls`` as real processes on 127.0.0.1, in
front of a plain TCP echo service:

    app --plain--> tunnel client --MLS-TLS--> tunnel server --plain--> echo

The flags are a contract (issue 13): the TLS tunnel's options where they
apply, plus ``--mls`` and ``--mls-suite N``; the rekey options drive MLS
commits, which the metrics count and ``-v`` logs, one line per epoch.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import socketserver
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from helpers.cli import LONGTLS, assert_one_error_line, longtls, summary
from helpers.peers import LOOPBACK, PeerProcess, free_port, start_process
from helpers.pki import PkiFiles, make_leaf
from longtls import aio
from longtls.config import Configuration

READY = r"^longtls: tunnel (server|client): "
TRAILER = b"[echo saw EOF]\n"


class Echo(socketserver.ThreadingTCPServer):
    """Echo until EOF, then TRAILER and a FIN."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__((LOOPBACK, 0), EchoHandler)
        self.port: int = self.server_address[1]
        threading.Thread(target=self.serve_forever, daemon=True).start()


class EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        with contextlib.suppress(OSError):
            while data := self.request.recv(1 << 16):
                self.request.sendall(data)
            self.request.sendall(TRAILER)
            self.request.shutdown(socket.SHUT_WR)


def _recv_all(sock: socket.socket) -> bytes:
    parts = []
    while data := sock.recv(1 << 16):
        parts.append(data)
    return b"".join(parts)


@pytest.fixture
def echo() -> Iterator[Echo]:
    server = Echo()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def files(tmp_pki_files: Callable[..., PkiFiles]) -> PkiFiles:
    # MLS suites 1, 3 and 0xF0A1 sign with Ed25519 (the CA's key is ECDSA:
    # the Web PKI path validation refuses EdDSA CA keys).
    return tmp_pki_files("ed25519", ca_key_type="ecdsa-p256")


@pytest.fixture
def tunnel() -> Iterator[Callable[..., tuple[PeerProcess, int]]]:
    """``tunnel("server", *args)``: ``longtls tunnel server --mls --listen 127.0.0.1:<free> *args``."""
    with contextlib.ExitStack() as stack:

        def start(mode: str, *args: str) -> tuple[PeerProcess, int]:
            port = free_port()
            proc = stack.enter_context(start_process(
                [*LONGTLS, "tunnel", mode, "--mls", "--listen", f"{LOOPBACK}:{port}", *args], ready_pattern=READY
            ))
            return proc, port

        yield start


def metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def updates(values: dict[str, float], initiator: str) -> float:
    return values[f'longtls_key_updates_total{{initiator="{initiator}",result="completed"}}']


def test_data_byte_exact_through_epoch_changes_from_both_ends(
    echo: Echo, tunnel: Any, files: PkiFiles
) -> None:
    server_metrics, client_metrics = free_port(), free_port()
    server, server_port = tunnel(
        "server", "-v", "--forward", f"{LOOPBACK}:{echo.port}",
        "--cert", str(files.server.chain), "--key", str(files.server.key),
        "--rekey-interval", "0.25", "--metrics", f"{LOOPBACK}:{server_metrics}",
    )
    # The post-quantum suite; the client commits every 100 KiB it sends, the
    # server every 0.25 s (a commit from either end restarts both counters).
    client, port = tunnel(
        "client", "--connect", f"{LOOPBACK}:{server_port}", "--ca", str(files.ca), "--servername", "localhost",
        "--mls-suite", "0xF0A1", "--rekey-bytes", "100K", "--metrics", f"{LOOPBACK}:{client_metrics}",
    )
    assert "MLS-TLS to" in client.stderr and "(MLS suites 0xF0A1)" in client.stderr
    data = os.urandom(4 << 20)
    received = bytearray()
    with socket.create_connection((LOOPBACK, port)) as app:
        reader = threading.Thread(target=lambda: received.extend(_recv_all(app)))
        reader.start()
        for i in range(0, len(data), 1 << 16):  # about a second: the server's timer fires mid-stream
            app.sendall(data[i : i + (1 << 16)])
            time.sleep(0.015)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            values = metrics(server_metrics)
            if updates(values, "local") and updates(values, "peer"):
                break
            time.sleep(0.1)
        app.shutdown(socket.SHUT_WR)
        reader.join(30)
    assert bytes(received) == data + TRAILER, f"{len(received)} bytes back for {len(data)} sent"

    server_values, client_values = metrics(server_metrics), metrics(client_metrics)
    for values in (server_values, client_values):
        assert values['longtls_handshakes_total{result="ok"}'] == 1
        assert values['longtls_handshakes_total{result="failed"}'] == 0
        assert values['longtls_bytes_total{direction="in"}'] >= len(data)
        assert values['longtls_key_updates_total{initiator="local",result="failed"}'] == 0
    # Both ends committed, and they agree on who started which epoch change.
    assert updates(server_values, "local") > 0 and updates(server_values, "peer") > 0, server_values
    assert updates(server_values, "local") == updates(client_values, "peer")
    assert updates(server_values, "peer") == updates(client_values, "local")
    total = int(updates(server_values, "local") + updates(server_values, "peer"))
    # -v: one line per epoch change, epochs 2, 3, ... (the Welcome makes epoch 1).
    server.wait_for_output(rf"MLS epoch {1 + total}, ")  # the pipe's reader may lag behind the metrics
    logged = re.findall(r"MLS epoch (\d+), started by the (client|server), [\d.]+ ms$", server.stderr, re.MULTILINE)
    assert [int(epoch) for epoch, _ in logged] == list(range(2, 2 + total)), server.describe()
    assert sum(by == "server" for _, by in logged) == updates(server_values, "local")
    for proc in (server, client):
        assert "Traceback" not in proc.stderr, proc.describe()


def _refused(client: PeerProcess, port: int, fragment: str) -> str:
    """The application is reset (never a clean, empty stream), and the tunnel
    client says why in one line."""
    with socket.create_connection((LOOPBACK, port)) as app:
        app.settimeout(10)
        with pytest.raises(ConnectionResetError):
            _recv_all(app)
    client.wait_for_output(fragment)
    lines = [line for line in client.stderr.splitlines() if not re.match(READY, line)]
    assert len(lines) == 1, client.describe()
    assert "Traceback" not in client.stderr
    return lines[0]


def test_a_suite_the_server_does_not_accept(echo: Echo, tunnel: Any, files: PkiFiles) -> None:
    server, server_port = tunnel(
        "server", "--forward", f"{LOOPBACK}:{echo.port}", "--mls-suite", "3",
        "--cert", str(files.server.chain), "--key", str(files.server.key),
    )
    client, port = tunnel("client", "--connect", f"{LOOPBACK}:{server_port}", "--ca", str(files.ca),
                          "--servername", "localhost")
    line = _refused(client, port, "handshake_failure")
    assert line.startswith("longtls: ") and f"MLS-TLS handshake with {LOOPBACK}:{server_port} failed" in line, line
    server.wait_for_output("handshake_failure")


def test_an_untrusted_server_is_refused_and_insecure_accepts_it(
    echo: Echo, tunnel: Any, files: PkiFiles
) -> None:
    # Without --cert: a basic credential and a fresh key, which no CA vouches for.
    _, server_port = tunnel("server", "--forward", f"{LOOPBACK}:{echo.port}")
    client, port = tunnel("client", "--connect", f"{LOOPBACK}:{server_port}", "--ca", str(files.ca))
    line = _refused(client, port, "bad_certificate")
    assert f"MLS-TLS handshake with {LOOPBACK}:{server_port} failed" in line, line

    _, port = tunnel("client", "--connect", f"{LOOPBACK}:{server_port}", "--insecure")
    with socket.create_connection((LOOPBACK, port)) as app:
        app.sendall(b"unauthenticated but encrypted")
        app.shutdown(socket.SHUT_WR)
        assert _recv_all(app) == b"unauthenticated but encrypted" + TRAILER


def test_a_renewed_certificate_reaches_new_connections(
    echo: Echo, tunnel: Any, files: PkiFiles, pki: Any, tmp_path: Path
) -> None:
    """The watcher (and SIGHUP) put a renewed certificate in use for new MLS
    connections; MLS has no Certificate Update, and the log line says so."""
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    shutil.copy(files.server.chain, cert)
    shutil.copy(files.server.key, key)
    server, port = tunnel(
        "server", "--forward", f"{LOOPBACK}:{echo.port}", "--cert", str(cert), "--key", str(key),
        "--cert-check-interval", "0.2",
    )

    async def served_certificate() -> x509.Certificate:
        client = Configuration(is_client=True, server_name="localhost")
        client.load_verify_locations(str(files.ca))
        reader, writer = await aio.connect_mls(LOOPBACK, port, client)
        writer.write(b"hi")
        writer.write_eof()
        assert await reader.read() == b"hi" + TRAILER
        writer.close()
        await writer.wait_closed()
        return writer.peer_certificates[0]

    original = x509.load_pem_x509_certificate(files.server.cert.read_bytes())
    assert asyncio.run(served_certificate()) == original
    ca = pki("ed25519", ca_key_type="ecdsa-p256").ca
    # The watcher: a renewal (same names, new key and serial).
    renewed = make_leaf(ca, "ed25519", ["localhost", "127.0.0.1"])
    key.write_bytes(renewed.key_pem())
    cert.write_bytes(renewed.chain_pem())
    server.wait_for_output(r"certificate renewed from .*; for new connections only$")
    assert asyncio.run(served_certificate()) == renewed.cert
    # SIGHUP: any identity, for new connections.
    other = make_leaf(ca, "ed25519", ["127.0.0.1", "localhost"])
    key.write_bytes(other.key_pem())
    cert.write_bytes(other.chain_pem())
    server.proc.send_signal(signal.SIGHUP)
    server.wait_for_output(r"reloaded .* for new connections$")
    result = longtls("connect", "--mls", f"{LOOPBACK}:{port}", "--ca", str(files.ca), "--servername", "localhost",
                     "--summary", "json", input="hi")
    assert result.returncode == 0, result.stderr
    assert summary(result.stderr)[0]["peer_subject"] == "CN=127.0.0.1,O=longtls tests"
    assert "Traceback" not in server.stderr, server.describe()


@pytest.mark.parametrize(("args", "fragment"), [
    (["server", "--mls", "--udp", "--forward", f"{LOOPBACK}:1"], "--udp does not apply to --mls"),
    (["client", "--mls", "--require-eku", "--connect", f"{LOOPBACK}:1"], "--require-eku does not apply to --mls"),
    (["client", "--mls", "--mls-suite", "2", "--connect", f"{LOOPBACK}:1"], "not implemented"),
    (["client", "--mls-suite", "1", "--connect", f"{LOOPBACK}:1"], "--mls-suite applies to --mls only"),
    (["client", "--insecure", "--connect", f"{LOOPBACK}:1"], "--insecure applies to --mls only"),
])
def test_bad_mls_arguments(args: list[str], fragment: str) -> None:
    mode, *rest = args
    result = longtls("tunnel", mode, "--listen", f"{LOOPBACK}:0", *rest)
    assert_one_error_line(result, fragment)


def test_an_ecdsa_key_is_refused_for_mls(tmp_pki_files: Callable[..., PkiFiles]) -> None:
    ecdsa = tmp_pki_files("ecdsa-p256")
    result = longtls("tunnel", "server", "--mls", "--listen", f"{LOOPBACK}:0", "--forward", f"{LOOPBACK}:1",
                     "--cert", str(ecdsa.server.chain), "--key", str(ecdsa.server.key))
    assert_one_error_line(result, "--mls", "Ed25519")
