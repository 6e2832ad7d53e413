"""Renewal without restart (issue 12): certificate files replaced on disk reach
live connections as Certificate Updates (draft-rosomakho-tls-cert-update-02).

Two parts:

- ``CredentialWatcher`` in process, one ``poll()`` at a time: what an ACME
  client's two writes look like (a key that does not match the certificate
  yet, a half-written file), a touch, a copy that keeps the old time, and a
  renewal that breaks an identity rule;
- the ``longtls`` command as real processes on 127.0.0.1, as a script runs
  it: ``tunnel server`` whose files are replaced while data streams through
  a live connection (the issue's proof), ``serve`` + ``connect --summary
  json`` over TLS and DTLS, ``--no-cert-update``, a refused renewal and a
  client certificate renewed on the client side.

Polling is every 0.1 s here (``--cert-check-interval``), so each renewal
lands within a fraction of a second.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from helpers.cli import LONGTLS, summary
from helpers.echo import EchoBackend
from helpers.peers import LOOPBACK, PeerProcess, free_port, start_process
from helpers.pki import Credential, Pki
from helpers.renewal import expired, extra_san, not_yet_valid, renew
from longtls.credentials import Credentials, CredentialWatcher, Poll
from longtls.metrics import Metrics

INTERVAL = "0.1"  # --cert-check-interval in these tests


def hex_serial(cert: x509.Certificate) -> str:
    return f"{cert.serial_number:x}"


def iso_not_after(cert: x509.Certificate) -> str:
    """RFC 3339 / ISO 8601 in UTC with a Z, from the certificate's own field
    (helpers.pki makes whole-second validities)."""
    return cert.not_valid_after_utc.isoformat().replace("+00:00", "Z")


def write_pair(cert_path: Path, key_path: Path, credential: Credential) -> None:
    """What an ACME client does: the key, then the certificate (not atomically as a pair)."""
    key_path.write_bytes(credential.key_pem())
    cert_path.write_bytes(credential.chain_pem())


@pytest.fixture
def pki_ecdsa(pki: Callable[..., Pki]) -> Pki:
    return pki("ecdsa-p256")


@pytest.fixture
def server_files(pki_ecdsa: Pki, tmp_path: Path) -> tuple[Path, Path, Path]:
    """(cert, key, ca): copies of the server's files that a test may replace."""
    files = pki_ecdsa.write_pem(tmp_path / "pki")
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    shutil.copy(files.server.chain, cert)
    shutil.copy(files.server.key, key)
    return cert, key, files.ca


# -- CredentialWatcher, one poll at a time ---------------------------------------------------


@dataclass
class Watched:
    watcher: CredentialWatcher
    renewals: list[Credentials]
    in_use: list[x509.Certificate]
    metrics: Metrics


@pytest.fixture
def watched(pki_ecdsa: Pki, server_files: tuple[Path, Path, Path]) -> Watched:
    cert, key, _ = server_files
    renewals: list[Credentials] = []
    in_use = [pki_ecdsa.server.cert]
    metrics = Metrics()

    def on_renewal(new: Credentials) -> None:
        renewals.append(new)
        in_use[:] = list(new.chain)

    clock = iter(range(0, 10_000, 1))  # one second per poll
    watcher = CredentialWatcher(
        cert, key, in_use=lambda: in_use, on_renewal=on_renewal, interval=1.0, settle=5.0,
        metrics=metrics, clock=lambda: float(next(clock)),
    )
    assert watcher.poll() is Poll.current  # the files hold the certificate in use
    assert watcher.poll() is Poll.unchanged
    return Watched(watcher, renewals, in_use, metrics)


def test_watcher_waits_for_the_key_and_certificate_to_match(
    watched: Watched, pki_ecdsa: Pki, server_files: tuple[Path, Path, Path]
) -> None:
    cert, key, _ = server_files
    renewed = renew(pki_ecdsa.server)
    key.write_bytes(renewed.key_pem())  # the key first: it does not match the old certificate
    assert watched.watcher.poll() is Poll.waiting
    assert watched.watcher.poll() is Poll.waiting
    assert watched.renewals == []
    cert.write_bytes(renewed.chain_pem()[:200])  # the certificate, half written
    assert watched.watcher.poll() is Poll.waiting
    cert.write_bytes(renewed.chain_pem())
    assert watched.watcher.poll() is Poll.renewed
    [new] = watched.renewals
    assert new.chain == (renewed.cert,)
    assert new.private_key.public_key() == renewed.key.public_key()
    assert watched.watcher.poll() is Poll.unchanged
    assert watched.metrics.certificate_reloads == {"applied": 1, "refused": 0}


def test_watcher_ignores_a_touch_and_sees_a_copy_that_keeps_the_old_time(
    watched: Watched, pki_ecdsa: Pki, server_files: tuple[Path, Path, Path]
) -> None:
    cert, key, _ = server_files
    later = time.time() + 60
    os.utime(cert, (later, later))
    assert watched.watcher.poll() is Poll.current  # same bytes, new time: nothing to do
    assert watched.renewals == []

    renewed = renew(pki_ecdsa.server)
    stamps = [(p.stat().st_atime_ns, p.stat().st_mtime_ns) for p in (cert, key)]
    write_pair(cert, key, renewed)
    for path, ns in zip((cert, key), stamps, strict=True):
        os.utime(path, ns=ns)  # cp -p / rsync -t: the old modification time
    assert watched.watcher.poll() is Poll.renewed
    assert [r.leaf for r in watched.renewals] == [renewed.cert]


def test_watcher_refuses_another_identity_once_and_keeps_the_old_certificate(
    watched: Watched, pki_ecdsa: Pki, server_files: tuple[Path, Path, Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    cert, key, _ = server_files
    write_pair(cert, key, extra_san(pki_ecdsa.server))
    with caplog.at_level(logging.INFO, logger="longtls.credentials"):
        assert watched.watcher.poll() is Poll.refused
        assert watched.watcher.poll() is Poll.unchanged  # said once, not at every poll
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert f"refusing the renewed certificate in {cert}" in message
    assert "(extensions rule)" in message
    assert hex_serial(pki_ecdsa.server.cert) in message  # the one still in use
    assert watched.renewals == []
    assert watched.in_use == [pki_ecdsa.server.cert]
    assert watched.metrics.certificate_reloads == {"applied": 0, "refused": 1}


@pytest.mark.parametrize("variant", [expired, not_yet_valid])
def test_watcher_refuses_a_certificate_outside_its_validity_period(
    variant: Callable[[Credential], Credential], watched: Watched, pki_ecdsa: Pki,
    server_files: tuple[Path, Path, Path], caplog: pytest.LogCaptureFixture,
) -> None:
    """Live peers validate an update as of now and would end the connection."""
    cert, key, _ = server_files
    write_pair(cert, key, variant(pki_ecdsa.server))
    with caplog.at_level(logging.WARNING, logger="longtls.credentials"):
        assert watched.watcher.poll() is Poll.refused
    [record] = caplog.records
    assert f"refusing the renewed certificate in {cert}: it is " in record.getMessage()
    assert ("expired" if variant is expired else "not valid yet") in record.getMessage()
    assert watched.renewals == []


def test_watcher_warns_once_about_a_pair_that_stays_unusable(
    watched: Watched, pki_ecdsa: Pki, server_files: tuple[Path, Path, Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, key, _ = server_files
    key.write_bytes(renew(pki_ecdsa.server).key_pem())  # and the certificate never comes
    with caplog.at_level(logging.WARNING, logger="longtls.credentials"):
        for _ in range(4):  # within the 5 s settle time: quiet
            assert watched.watcher.poll() is Poll.waiting
        assert caplog.records == []
        for _ in range(4):
            assert watched.watcher.poll() is Poll.waiting
    [record] = caplog.records
    assert "still not a usable certificate and key" in record.getMessage()
    assert "does not match" in record.getMessage()


# -- the command line --------------------------------------------------------------------------


@pytest.fixture
def processes() -> Iterator[Callable[..., PeerProcess]]:
    """``start(ready_pattern, *longtls_args)``; every process is stopped at teardown."""
    stack: list[Any] = []

    def start(ready: str, *args: str) -> PeerProcess:
        context = start_process([*LONGTLS, *args], ready_pattern=ready)
        stack.append(context)
        peer: PeerProcess = context.__enter__()
        return peer

    yield start
    for context in reversed(stack):
        context.__exit__(None, None, None)


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        name: float(value)
        for line in text.splitlines() if line and not line.startswith("#")
        for name, value in [line.rsplit(" ", 1)]
    }


def test_tunnel_server_renewal_reaches_a_live_client_without_reconnect_or_loss(
    processes: Callable[..., PeerProcess], pki_ecdsa: Pki, server_files: tuple[Path, Path, Path]
) -> None:
    """The issue's proof: the files of a running ``tunnel server`` are replaced;
    the live connection gets the new certificate while data streams through
    it, without a reconnect and without losing a byte."""
    cert, key, ca = server_files
    backend = EchoBackend()
    server_port, client_port, metrics_port = free_port(), free_port(), free_port()
    server = processes(
        r"^longtls: tunnel server: ", "tunnel", "server", "--listen", f"{LOOPBACK}:{server_port}",
        "--forward", f"{LOOPBACK}:{backend.port}", "--cert", str(cert), "--key", str(key),
        "--cert-check-interval", INTERVAL, "--metrics", f"{LOOPBACK}:{metrics_port}",
    )
    client = processes(
        r"^longtls: tunnel client: ", "tunnel", "client", "--listen", f"{LOOPBACK}:{client_port}",
        "--connect", f"{LOOPBACK}:{server_port}", "--ca", str(ca),
    )
    renewed = renew(pki_ecdsa.server)
    received = bytearray()
    sent = bytearray()
    updated = threading.Event()
    try:
        with socket.create_connection((LOOPBACK, client_port), timeout=30) as app:
            reader = threading.Thread(target=lambda: _read_until_eof(app, received))
            reader.start()

            def stream(until: Callable[[], bool]) -> None:
                deadline = time.monotonic() + 15  # bounded: a missing update fails below
                while not until() and time.monotonic() < deadline:
                    chunk = os.urandom(16384)
                    app.sendall(chunk)
                    sent.extend(chunk)
                    time.sleep(0.002)

            stream(lambda: len(received) >= 256 * 1024)  # the connection is up and flowing
            before = len(sent)
            write_pair(cert, key, renewed)
            watcher = threading.Thread(target=lambda: _wait_then_set(client, renewed, updated))
            watcher.start()
            stream(updated.is_set)  # keep streaming until the client saw the update...
            during = len(sent) - before
            stream(lambda: len(sent) >= before + during + 256 * 1024)  # ...and after it
            watcher.join(5)
            app.shutdown(socket.SHUT_WR)
            reader.join(30)
    finally:
        backend.shutdown()
        backend.server_close()
    assert updated.is_set(), client.describe()
    assert during > 0  # data was flowing while the files were replaced
    assert received == sent, f"{len(received)} bytes back for {len(sent)} sent"
    values = scrape(metrics_port)
    assert values['longtls_handshakes_total{result="ok"}'] == 1  # the same connection throughout
    assert values['longtls_handshakes_total{result="failed"}'] == 0
    assert values['longtls_certificate_updates_total{direction="sent"}'] == 1
    assert values['longtls_certificate_reloads_total{result="applied"}'] == 1
    # The expiry gauge follows the renewal: the new leaf's notAfter, the old one's gone.
    expiry = "longtls_certificate_not_after_timestamp_seconds"
    leaf = f'{expiry}{{subject="{renewed.cert.subject.rfc4514_string()}",serial="{renewed.cert.serial_number:X}"}}'
    assert values[leaf] == renewed.cert.not_valid_after_utc.timestamp()
    assert not any(f'serial="{pki_ecdsa.server.cert.serial_number:X}"' in k for k in values if k.startswith(expiry))
    line = server.wait_for_output(r"^longtls: certificate renewed from .*$").group(0)
    assert str(cert) in line and hex_serial(renewed.cert) in line
    assert "sent to 1 of 1 live connection(s)" in line
    for proc in (server, client):
        assert "Traceback" not in proc.stderr, proc.describe()


def _read_until_eof(sock: socket.socket, into: bytearray) -> None:
    while data := sock.recv(1 << 16):
        into.extend(data)


def _wait_then_set(client: PeerProcess, renewed: Credential, flag: threading.Event) -> None:
    client.wait_for_output(
        rf"the server at .*: certificate updated by the peer: .*serial {hex_serial(renewed.cert)}"
    )
    flag.set()


def _serve(processes: Callable[..., PeerProcess], *args: str) -> tuple[PeerProcess, int]:
    port = free_port()
    return processes(r"^longtls: serving ", "serve", "--echo", "--port", str(port), *args), port


def _connect(processes: Callable[..., PeerProcess], port: int, *args: str) -> PeerProcess:
    """``connect --summary json`` kept open on its stdin; ready after the handshake line."""
    return processes(r'"event": "handshake"', "connect", f"{LOOPBACK}:{port}", "--summary", "json", *args)


def _finish(client: PeerProcess, data: str = "bye\n") -> list[dict[str, Any]]:
    """Send ``data``, close stdin, wait for the clean end; the summary records."""
    client.write(data)
    assert client.proc.stdin is not None
    client.proc.stdin.close()
    assert client.wait(15) == 0, client.describe()
    assert client.stdout == data
    return summary(client.stderr)


def _updates(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["event"] == "certificate_update"]


@pytest.mark.parametrize("transport", ["tls", "dtls"])
def test_serve_renewal_is_a_summary_line_on_the_client(
    transport: str, processes: Callable[..., PeerProcess], pki_ecdsa: Pki,
    server_files: tuple[Path, Path, Path],
) -> None:
    cert, key, ca = server_files
    dtls = ("--dtls",) if transport == "dtls" else ()
    server, port = _serve(processes, "--cert", str(cert), "--key", str(key), "--cert-check-interval", INTERVAL, *dtls)
    client = _connect(processes, port, "--ca", str(ca), *dtls)
    renewed = renew(pki_ecdsa.server)
    write_pair(cert, key, renewed)
    client.wait_for_output(r'"event": "certificate_update"')
    records = _finish(client)
    assert records[0]["event"] == "handshake" and records[0]["certificate_update"] is True
    assert _updates(records) == [{
        "event": "certificate_update", "direction": "received",
        "subject": renewed.cert.subject.rfc4514_string(),
        "serial": hex_serial(renewed.cert),
        "not_after": iso_not_after(renewed.cert),
    }]
    assert records[-1]["event"] == "closed" and records[-1]["alert"] is None
    server.wait_for_output(r"certificate renewed from .*sent to 1 of 1 live connection")


@pytest.mark.parametrize("side", ["server", "client"])
def test_no_cert_update_on_either_side(
    side: str, processes: Callable[..., PeerProcess], pki_ecdsa: Pki, server_files: tuple[Path, Path, Path]
) -> None:
    cert, key, ca = server_files
    off = ("--no-cert-update",)
    server, port = _serve(
        processes, "--cert", str(cert), "--key", str(key), "--cert-check-interval", INTERVAL,
        *(off if side == "server" else ()),
    )
    client = _connect(processes, port, "--ca", str(ca), *(off if side == "client" else ()))
    write_pair(cert, key, renew(pki_ecdsa.server))
    # New connections get the renewal; this one cannot.
    line = server.wait_for_output(r"^longtls: certificate renewed from .*$").group(0)
    assert "sent to 0 of 1 live connection(s) (1 without Certificate Update)" in line
    records = _finish(client)
    assert records[0]["certificate_update"] is False
    assert _updates(records) == []


def test_a_renewal_that_breaks_an_identity_rule_is_refused_and_the_connection_goes_on(
    processes: Callable[..., PeerProcess], pki_ecdsa: Pki, server_files: tuple[Path, Path, Path]
) -> None:
    cert, key, ca = server_files
    server, port = _serve(processes, "--cert", str(cert), "--key", str(key), "--cert-check-interval", INTERVAL)
    client = _connect(processes, port, "--ca", str(ca))
    write_pair(cert, key, extra_san(pki_ecdsa.server))  # one more name: not the same identity
    line = server.wait_for_output(r"^longtls: refusing the renewed certificate .*$").group(0)
    assert str(cert) in line and "(extensions rule)" in line
    assert f"still using the certificate with subject {pki_ecdsa.server.cert.subject.rfc4514_string()}" in line
    assert hex_serial(pki_ecdsa.server.cert) in line
    time.sleep(0.5)  # several more polls: still one line
    records = _finish(client, "the connection goes on\n")
    assert _updates(records) == []
    assert server.stderr.count("refusing the renewed certificate") == 1
    assert "certificate renewed" not in server.stderr


def test_a_client_certificate_renewed_on_the_client_reaches_the_server(
    processes: Callable[..., PeerProcess], pki_ecdsa: Pki, server_files: tuple[Path, Path, Path],
    tmp_path: Path,
) -> None:
    cert, key, ca = server_files
    files = pki_ecdsa.write_pem(tmp_path / "pki")
    client_cert, client_key = tmp_path / "client.pem", tmp_path / "client.key"
    shutil.copy(files.client.chain, client_cert)
    shutil.copy(files.client.key, client_key)
    server, port = _serve(processes, "--cert", str(cert), "--key", str(key), "--ca", str(ca))
    client = _connect(
        processes, port, "--ca", str(ca), "--cert", str(client_cert), "--key", str(client_key),
        "--cert-check-interval", INTERVAL,
    )
    renewed = renew(pki_ecdsa.client)
    write_pair(client_cert, client_key, renewed)
    server.wait_for_output(
        rf"^longtls: client {re.escape(LOOPBACK)}:\d+: certificate updated by the peer: "
        rf"subject {re.escape(renewed.cert.subject.rfc4514_string())}, serial {hex_serial(renewed.cert)}, "
        rf"not after {iso_not_after(renewed.cert)}$"
    )
    records = _finish(client)
    assert _updates(records) == [{
        "event": "certificate_update", "direction": "sent",
        "subject": renewed.cert.subject.rfc4514_string(),
        "serial": hex_serial(renewed.cert),
        "not_after": iso_not_after(renewed.cert),
    }]
    assert "Traceback" not in server.stderr + client.stderr


def test_sighup_reloads_now_and_offers_the_certificate_to_live_connections(
    processes: Callable[..., PeerProcess], pki_ecdsa: Pki, server_files: tuple[Path, Path, Path]
) -> None:
    """With watching off (--cert-check-interval 0), SIGHUP is the reload: new
    connections and, where the identity allows, the live ones."""
    cert, key, ca = server_files
    backend = EchoBackend()
    port = free_port()
    try:
        server = processes(
            r"^longtls: tunnel server: ", "tunnel", "server", "--listen", f"{LOOPBACK}:{port}",
            "--forward", f"{LOOPBACK}:{backend.port}", "--cert", str(cert), "--key", str(key),
            "--cert-check-interval", "0",
        )
        client = _connect(processes, port, "--ca", str(ca))
        renewed = renew(pki_ecdsa.server)
        write_pair(cert, key, renewed)
        time.sleep(0.3)
        assert "certificate renewed" not in server.stderr  # not watched
        server.proc.send_signal(signal.SIGHUP)
        line = server.wait_for_output(r"^longtls: reloaded .*$").group(0)
        assert "certificate sent to 1 of 1 live connection(s)" in line
        records = _finish(client)
    finally:
        backend.shutdown()
        backend.server_close()
    assert [(r["direction"], r["serial"]) for r in _updates(records)] == [("received", hex_serial(renewed.cert))]
