"""``longtls tunnel`` as real subprocesses on 127.0.0.1, in front of a plain TCP service.

    app --plain--> tunnel client --TLS--> tunnel server --plain--> backend

The backend runs in a thread of the test; each tunnel is ``longtls tunnel``
started as a script would start it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import socket
import socketserver
import struct
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from helpers.cli import LONGTLS, assert_one_error_line, longtls, summary
from helpers.peers import LOOPBACK, PeerProcess, free_port, run, start_process
from helpers.pki import PkiFiles, make_leaf

READY = r"^longtls: tunnel (server|client): "
TRAILER = b"[backend saw EOF]\n"


# -- the plain TCP service behind the tunnel ----------------------------------------------


class Backend(socketserver.ThreadingTCPServer):
    """``echo``: echo until EOF, then send TRAILER and close (data after the
    client's half-close).  ``greet``: send a greeting and half-close at once,
    then record what arrives until EOF.  ``reset``: read a little, then RST."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.received: list[bytes] = []
        self.done = threading.Event()
        super().__init__((LOOPBACK, 0), BackendHandler)
        self.port: int = self.server_address[1]
        threading.Thread(target=self.serve_forever, daemon=True).start()


class BackendHandler(socketserver.BaseRequestHandler):
    server: Backend

    def handle(self) -> None:
        try:
            self._serve(self.request, self.server.mode)
        except OSError:
            pass  # the tunnel reset us: what some tests are about
        self.server.done.set()

    def _serve(self, sock: socket.socket, mode: str) -> None:
        if mode == "greet":
            sock.sendall(b"hello from the backend\n")
            sock.shutdown(socket.SHUT_WR)
            self.server.received.append(_recv_all(sock))
        elif mode == "reset":
            sock.recv(100)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            while data := sock.recv(1 << 16):
                sock.sendall(data)
            sock.sendall(TRAILER)
            sock.shutdown(socket.SHUT_WR)
        sock.close()


def _recv_all(sock: socket.socket) -> bytes:
    parts = []
    while data := sock.recv(1 << 16):
        parts.append(data)
    return b"".join(parts)


@pytest.fixture
def backend() -> Iterator[Callable[[str], Backend]]:
    servers: list[Backend] = []

    def start(mode: str = "echo") -> Backend:
        server = Backend(mode)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


# -- the tunnels --------------------------------------------------------------------------


@pytest.fixture
def files(tmp_pki_files: Callable[..., PkiFiles]) -> PkiFiles:
    return tmp_pki_files("ecdsa-p256")


@pytest.fixture
def tunnel() -> Iterator[Callable[..., tuple[PeerProcess, int]]]:
    """``tunnel("server", *args)`` starts ``longtls tunnel server --listen 127.0.0.1:<free> *args``."""
    with contextlib.ExitStack() as stack:

        def start(mode: str, *args: str) -> tuple[PeerProcess, int]:
            port = free_port()
            proc = stack.enter_context(start_process(
                [*LONGTLS, "tunnel", mode, "--listen", f"{LOOPBACK}:{port}", *args], ready_pattern=READY
            ))
            return proc, port

        yield start


def tunnel_pair(
    tunnel: Callable[..., tuple[PeerProcess, int]], files: PkiFiles, target: int,
    server_args: tuple[str, ...] = (), client_args: tuple[str, ...] = (),
) -> tuple[PeerProcess, PeerProcess, int]:
    """A tunnel server in front of ``target`` and a tunnel client to it; returns the client's port."""
    server, server_port = tunnel(
        "server", "--forward", f"{LOOPBACK}:{target}",
        "--cert", str(files.server.chain), "--key", str(files.server.key), *server_args,
    )
    client, client_port = tunnel(
        "client", "--connect", f"{LOOPBACK}:{server_port}", "--ca", str(files.ca), *client_args,
    )
    return server, client, client_port


def metrics(port: int) -> dict[str, float]:
    """``name{labels}`` -> value, scraped the way Prometheus would."""
    with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def updates(values: dict[str, float], initiator: str) -> float:
    return values[f'longtls_key_updates_total{{initiator="{initiator}",result="completed"}}']


# -- data --------------------------------------------------------------------------------


def test_multi_megabyte_transfer_with_rekeys_and_metrics(
    backend: Callable[[str], Backend], tunnel: Any, files: PkiFiles
) -> None:
    service = backend("echo")
    server_metrics, client_metrics = free_port(), free_port()
    server, client, port = tunnel_pair(
        tunnel, files, service.port,
        # Updates from both ends every 0.1 s: without the server's default
        # pacing (one peer-started update a second), which would hold the
        # client's back and leave one pending at the close.
        server_args=("--rekey-interval", "0.1", "--eku-min-interval", "0",
                     "--metrics", f"{LOOPBACK}:{server_metrics}"),
        client_args=("--rekey-interval", "0.1", "--metrics", f"{LOOPBACK}:{client_metrics}"),
    )
    data = os.urandom(8 << 20)
    received = bytearray()
    with socket.create_connection((LOOPBACK, port)) as app:
        reader = threading.Thread(target=lambda: received.extend(_recv_all(app)))
        reader.start()
        # Paced over about a second, so that the 0.1 s rekey timers fire mid-stream.
        for i in range(0, len(data), 1 << 16):
            app.sendall(data[i : i + (1 << 16)])
            time.sleep(0.008)
        # Both ends' timers fire; which one starts each update depends on timing:
        # keep the connection open until each has started some (bounded).
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            values = metrics(server_metrics)
            if updates(values, "local") and updates(values, "peer"):
                break
            time.sleep(0.1)
        live = metrics(server_metrics)
        app.shutdown(socket.SHUT_WR)
        reader.join(30)
    assert bytes(received[: len(data)]) == data or (
        hashlib.sha256(received[: len(data)]).hexdigest() == hashlib.sha256(data).hexdigest()
    ), f"{len(received)} bytes back for {len(data)} sent"
    assert bytes(received[len(data):]) == TRAILER
    assert live["longtls_open_connections"] == 1
    assert live["longtls_oldest_key_age_seconds"] < 5
    for port_ in (server_metrics, client_metrics):
        values = metrics(port_)
        assert updates(values, "local") > 0, values
        assert updates(values, "peer") > 0, values
        assert values['longtls_handshakes_total{result="ok"}'] == 1
        assert values['longtls_handshakes_total{result="failed"}'] == 0
        assert values['longtls_bytes_total{direction="in"}'] >= len(data)
        assert values['longtls_bytes_total{direction="out"}'] >= len(data)
        assert values['longtls_key_updates_total{initiator="local",result="failed"}'] == 0
    # The two ends agree on who started what.
    server_values, client_values = metrics(server_metrics), metrics(client_metrics)
    assert updates(server_values, "local") == updates(client_values, "peer")
    assert updates(server_values, "peer") == updates(client_values, "local")
    for proc in (server, client):
        assert "Traceback" not in proc.stderr, proc.describe()


def test_half_close_from_the_application(backend: Any, tunnel: Any, files: PkiFiles) -> None:
    """The app's FIN reaches the backend, and the backend's answer still comes back."""
    service = backend("echo")
    _, _, port = tunnel_pair(tunnel, files, service.port)
    with socket.create_connection((LOOPBACK, port)) as app:
        app.sendall(b"ping")
        app.shutdown(socket.SHUT_WR)
        assert _recv_all(app) == b"ping" + TRAILER


def test_half_close_from_the_backend(backend: Any, tunnel: Any, files: PkiFiles) -> None:
    """The backend's FIN reaches the app, and the app can still send."""
    service = backend("greet")
    _, _, port = tunnel_pair(tunnel, files, service.port)
    with socket.create_connection((LOOPBACK, port)) as app:
        app.settimeout(10)
        assert _recv_all(app) == b"hello from the backend\n"  # EOF: the backend's FIN came through
        app.sendall(b"still talking")
        app.shutdown(socket.SHUT_WR)
        assert service.done.wait(10)
    assert service.received == [b"still talking"]


def test_a_reset_is_passed_on_as_a_reset(backend: Any, tunnel: Any, files: PkiFiles) -> None:
    service = backend("reset")
    _, _, port = tunnel_pair(tunnel, files, service.port)
    with socket.create_connection((LOOPBACK, port)) as app:
        app.settimeout(10)
        app.sendall(b"x")
        # Never a clean EOF: the application must not take the stream for complete.
        with pytest.raises(ConnectionResetError):
            _recv_all(app)


def test_unreachable_target_resets_the_application(tunnel: Any, files: PkiFiles) -> None:
    dead = free_port()
    server, _, port = tunnel_pair(tunnel, files, dead)
    with socket.create_connection((LOOPBACK, port)) as app:
        app.settimeout(10)
        with pytest.raises(ConnectionResetError):
            _recv_all(app)
    server.wait_for_output(f"cannot connect to {LOOPBACK}:{dead}: Connection refused")


def test_handshake_timeout_resets_the_application(tunnel: Any, files: PkiFiles) -> None:
    """A target that accepts TCP and never answers: --timeout is the Configuration's
    handshake timeout, reported in the same words as by connect and the library."""
    with socket.socket() as silent:
        silent.bind((LOOPBACK, 0))
        silent.listen()
        target = silent.getsockname()[1]
        client, port = tunnel(
            "client", "--connect", f"{LOOPBACK}:{target}", "--ca", str(files.ca), "--timeout", "0.5",
        )
        with socket.create_connection((LOOPBACK, port)) as app:
            app.settimeout(10)
            with pytest.raises(ConnectionResetError):
                _recv_all(app)
        client.wait_for_output(
            f"TLS handshake with {LOOPBACK}:{target} failed: TLS handshake not complete after 0.5 seconds"
        )


# -- mutual TLS, EKU requirements ------------------------------------------------------


def test_mutual_tls(backend: Any, tunnel: Any, files: PkiFiles) -> None:
    service = backend("echo")
    mtls = ("--ca", str(files.ca), "--verify-client", "required")
    server, anonymous, anonymous_port = tunnel_pair(tunnel, files, service.port, server_args=mtls)
    with socket.create_connection((LOOPBACK, anonymous_port)) as app:
        app.settimeout(10)
        app.sendall(b"x")
        with pytest.raises(ConnectionResetError):
            _recv_all(app)
    anonymous.wait_for_output("certificate_required")

    server_port = int(re.search(r"TLS on 127\.0\.0\.1:(\d+)", server.stderr).group(1))  # type: ignore[union-attr]
    _, port = tunnel(
        "client", "--connect", f"{LOOPBACK}:{server_port}", "--ca", str(files.ca),
        "--cert", str(files.client.chain), "--key", str(files.client.key),
    )
    with socket.create_connection((LOOPBACK, port)) as app:
        app.sendall(b"authenticated")
        app.shutdown(socket.SHUT_WR)
        assert _recv_all(app) == b"authenticated" + TRAILER


def test_require_eku(backend: Any, tunnel: Any, files: PkiFiles) -> None:
    service = backend("echo")
    _, client, port = tunnel_pair(
        tunnel, files, service.port, server_args=("--no-eku",), client_args=("--require-eku",)
    )
    with socket.create_connection((LOOPBACK, port)) as app:
        app.settimeout(10)
        with pytest.raises(ConnectionResetError):
            _recv_all(app)
    client.wait_for_output("did not negotiate Extended Key Update")


# -- signals -----------------------------------------------------------------------------


def test_sighup_reloads_the_certificate(
    backend: Any, tunnel: Any, files: PkiFiles, pki: Any, tmp_path: Path
) -> None:
    service = backend("echo")
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    shutil.copy(files.server.chain, cert)
    shutil.copy(files.server.key, key)
    server, port = tunnel(
        "server", "--forward", f"{LOOPBACK}:{service.port}", "--cert", str(cert), "--key", str(key)
    )

    def peer_subject() -> str:
        result = longtls("connect", f"{LOOPBACK}:{port}", "--ca", str(files.ca), "--summary", "json", input="hi")
        assert result.returncode == 0, result.stderr
        assert result.stdout == "hi" + TRAILER.decode()
        subject: str = summary(result.stderr)[0]["peer_subject"]
        return subject

    assert peer_subject() == "CN=localhost,O=longtls tests"

    rotated = make_leaf(pki("ecdsa-p256").ca, "ecdsa-p256", ["127.0.0.1", "localhost"])
    cert.write_bytes(rotated.chain_pem())
    key.write_bytes(rotated.key_pem())
    server.proc.send_signal(signal.SIGHUP)
    server.wait_for_output("reloaded")
    assert peer_subject() == "CN=127.0.0.1,O=longtls tests"

    # A broken file: one line, and the last good certificate stays in use.
    cert.write_text("not a certificate\n")
    server.proc.send_signal(signal.SIGHUP)
    line = server.wait_for_output(r"^longtls: reload failed.*$").group(0)
    assert str(cert) in line
    assert peer_subject() == "CN=127.0.0.1,O=longtls tests"
    assert "Traceback" not in server.stderr, server.describe()


def test_sigterm_drains_open_connections(backend: Any, tunnel: Any, files: PkiFiles) -> None:
    service = backend("echo")
    server, _, port = tunnel_pair(tunnel, files, service.port)
    server_port = int(re.search(r"TLS on 127\.0\.0\.1:(\d+)", server.stderr).group(1))  # type: ignore[union-attr]
    with socket.create_connection((LOOPBACK, port)) as app:
        app.settimeout(10)
        app.sendall(b"before ")
        assert app.recv(100) == b"before "
        server.proc.send_signal(signal.SIGTERM)
        server.wait_for_output("open connection")
        # No new connections...
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((LOOPBACK, server_port), timeout=5).close()
        # ...but the open one goes on to its end.
        app.sendall(b"after")
        app.shutdown(socket.SHUT_WR)
        assert _recv_all(app) == b"after" + TRAILER
    assert server.wait(10) == 0, server.describe()
    assert "Traceback" not in server.stderr


def test_sigterm_resets_what_is_left_after_the_grace_period(
    backend: Any, tunnel: Any, files: PkiFiles
) -> None:
    service = backend("echo")
    server, _, port = tunnel_pair(tunnel, files, service.port, server_args=("--grace", "0.5"))
    with socket.create_connection((LOOPBACK, port)) as app:
        app.settimeout(10)
        app.sendall(b"idle")
        assert app.recv(100) == b"idle"
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        assert server.wait(10) == 0, server.describe()
        assert time.monotonic() - started < 5
        with pytest.raises(ConnectionResetError):
            _recv_all(app)
    server.wait_for_output("reset 1 connection")


# -- user errors -------------------------------------------------------------------------


def test_tunnel_user_errors(files: PkiFiles, tmp_path: Path) -> None:
    creds = ["--cert", str(files.server.chain), "--key", str(files.server.key)]
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        busy = taken.getsockname()[1]
        result = longtls("tunnel", "server", "--listen", f"{LOOPBACK}:{busy}", "--forward", f"{LOOPBACK}:1", *creds)
        assert_one_error_line(result, f"cannot listen on {LOOPBACK}:{busy}", "Address already in use")
        result = longtls(
            "tunnel", "server", "--listen", f"{LOOPBACK}:{free_port()}", "--forward", f"{LOOPBACK}:1",
            *creds, "--metrics", f"{LOOPBACK}:{busy}",
        )
        assert_one_error_line(result, "cannot serve metrics", "Address already in use")
    missing = tmp_path / "missing.pem"
    result = longtls(
        "tunnel", "server", "--listen", f"{LOOPBACK}:0", "--forward", f"{LOOPBACK}:1",
        "--cert", str(missing), "--key", str(files.server.key),
    )
    assert_one_error_line(result, "cannot read certificate file", str(missing))
    result = longtls("tunnel", "client", "--listen", f"{LOOPBACK}:0", "--connect", f"{LOOPBACK}:1", "--ca", str(missing))
    assert_one_error_line(result, str(missing))
    result = longtls("tunnel", "client", "--listen", f"{LOOPBACK}:0")
    assert_one_error_line(result, "--connect")
    assert result.returncode == 2


def test_metrics_endpoint_answers_only_metrics(tunnel: Any, files: PkiFiles) -> None:
    metrics_port = free_port()
    tunnel(
        "server", "--forward", f"{LOOPBACK}:1", "--cert", str(files.server.chain),
        "--key", str(files.server.key), "--metrics", f"{LOOPBACK}:{metrics_port}",
    )
    values = metrics(metrics_port)
    assert values["longtls_open_connections"] == 0
    # No connection, no key: the gauge has no sample (see longtls.metrics).
    assert "longtls_oldest_key_age_seconds" not in values
    # The certificates it presents, read from the files independently.
    for cert in x509.load_pem_x509_certificates(files.server.chain.read_bytes()):
        labels = f'subject="{cert.subject.rfc4514_string()}",serial="{cert.serial_number:X}"'
        gauge = values[f"longtls_certificate_not_after_timestamp_seconds{{{labels}}}"]
        assert gauge == cert.not_valid_after_utc.timestamp()
    with urllib.request.urlopen(f"http://{LOOPBACK}:{metrics_port}/healthz", timeout=5) as response:
        assert (response.status, response.read()) == (200, b"ok\n")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"http://{LOOPBACK}:{metrics_port}/", timeout=5)
    assert info.value.code == 404


def test_openssl_client_through_the_tunnel_server(backend: Any, tunnel: Any, files: PkiFiles) -> None:
    """Any TLS client can use the tunnel server (no EKU: plain TLS 1.3)."""
    service = backend("greet")
    _, port = tunnel(
        "server", "--forward", f"{LOOPBACK}:{service.port}",
        "--cert", str(files.server.chain), "--key", str(files.server.key),
    )
    # -quiet implies -ign_eof: s_client exits when the backend's FIN arrives as close_notify.
    result = run(
        ["openssl", "s_client", "-connect", f"{LOOPBACK}:{port}", "-CAfile", str(files.ca),
         "-verify_return_error", "-quiet", "-tls1_3"],
    )
    assert result.stdout == "hello from the backend\n", result.stderr
    assert service.done.wait(10)
