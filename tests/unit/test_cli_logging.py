"""Logging of the long-running commands (issue 14, docs/logging.md).

``serve`` and ``tunnel server``/``tunnel client`` run as real processes with
``--log-format json``; the test's own clients connect, update keys (Extended
Key Update), send known bytes and close.  Every line on stderr must be one
JSON object, and the ``connection_open``, ``key_update`` and
``connection_close`` records must carry what the test knows independently:
its own source port, the bytes it sent and got back, the generations it
asked for, the certificate it authenticated with.  ``-q`` drops the INFO
records, ``--log-level debug`` adds DEBUG ones, a refused handshake is one
``handshake_failed`` record on each side that logs, the text format states
the same facts, and ``-v`` never prints an event's repr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import re
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cryptography import x509

from helpers.cli import LONGTLS, longtls
from helpers.echo import EchoBackend
from helpers.peers import LOOPBACK, PeerProcess, free_port, start_process
from helpers.pki import PkiFiles
from longtls import aio
from longtls.aio.logrecords import EVENT, FIELDS
from longtls.cli import logs
from longtls.cli.main import build_parser
from longtls.config import Configuration
from longtls.connlog import ConnectionLog
from longtls.constants import AlertDescription

#: The fixed keys of every JSON line (docs/logging.md, "JSON").
FIXED = ("time", "level", "logger", "event", "message")
LISTENING = r'"event": "listening"'


@pytest.fixture
def files(tmp_pki_files: Callable[..., PkiFiles]) -> PkiFiles:
    return tmp_pki_files("ecdsa-p256")


def records(proc: PeerProcess) -> list[dict[str, Any]]:
    """Every stderr line, parsed: each must be one JSON object with the fixed keys."""
    out = []
    for line in proc.stderr.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON line: {line!r}\n{proc.describe()}", pytrace=False)
        assert isinstance(record, dict), line
        for key in FIXED:
            assert key in record, (key, line)
        assert isinstance(record["time"], float) and abs(record["time"] - time.time()) < 600, line
        assert record["level"] in ("debug", "info", "warning", "error"), line
        assert isinstance(record["logger"], str) and record["logger"], line  # asyncio's too, at debug
        assert isinstance(record["message"], str) and record["message"], line
        out.append(record)
    return out


def of(found: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [r for r in found if r["event"] == event]


def wait_for_event(proc: PeerProcess, event: str, count: int = 1, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(of(records(proc), event)) >= count:
            return
        time.sleep(0.05)
    pytest.fail(f"no {count} {event} record(s) within {timeout} s\n{proc.describe()}", pytrace=False)


@contextlib.contextmanager
def serve(
    files: PkiFiles | None, *args: str, ready: str = LISTENING, kind: int = socket.SOCK_STREAM
) -> Iterator[tuple[PeerProcess, int]]:
    """``longtls serve --echo`` with the server certificate of ``files`` (None: none, MLS)."""
    port = free_port(kind)
    credentials = ["--cert", str(files.server.chain), "--key", str(files.server.key)] if files else []
    with start_process(
        [*LONGTLS, "serve", *credentials, "--port", str(port), "--echo", "--eku-min-interval", "0", *args],
        ready_pattern=ready, timeout=20,
    ) as proc:
        yield proc, port


def client_config(files: PkiFiles, *, with_certificate: bool = True) -> Configuration:
    config = Configuration(is_client=True, server_name="localhost")
    config.load_verify_locations(str(files.ca))
    if with_certificate:
        config.load_cert_chain(str(files.client.chain), str(files.client.key))
    return config


def talk(port: int, config: Configuration, payload: bytes, updates: int) -> tuple[int, list[int]]:
    """Connect, send ``payload``, read its echo, make ``updates`` EKUs, close
    cleanly.  Returns our source port and the generations we reached."""

    async def scenario() -> tuple[int, list[int]]:
        reader, writer = await aio.connect(LOOPBACK, port, config)
        source_port = writer.get_extra_info("sockname")[1]
        writer.write(payload)
        echoed = await reader.readexactly(len(payload))
        assert echoed == payload
        generations = [await writer.update_keys() for _ in range(updates)]
        writer.write_eof()  # close_notify first: the server closes after us
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()
        return source_port, generations

    return asyncio.run(asyncio.wait_for(scenario(), 30))


# -- the level rule, in process ----------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "level"),
    [
        (["serve", "--echo"], logging.INFO),
        (["tunnel", "server", "--listen", ":1", "--forward", "h:2"], logging.INFO),
        (["connect", "h:1"], logging.WARNING),
        (["demo"], logging.WARNING),
        (["serve", "--echo", "-q"], logging.WARNING),
        (["-q", "serve", "--echo"], logging.WARNING),
        (["serve", "--echo", "-v"], logging.DEBUG),
        (["-v", "connect", "h:1"], logging.DEBUG),
        (["connect", "h:1", "--log-level", "info"], logging.INFO),
        (["serve", "--echo", "-v", "--log-level", "error"], logging.ERROR),
        (["--log-level", "warning", "serve", "-v", "--echo"], logging.WARNING),
    ],
)
def test_one_rule_decides_the_level(argv: list[str], level: int) -> None:
    args = build_parser().parse_args(argv)
    assert logs.log_level(args) == level


def test_a_longtls_logger_cannot_bring_info_back_under_quiet() -> None:
    """-q is the handler's level too: code that sets a logger to INFO does not
    undo it (the tunnel used to raise its loggers to INFO by itself)."""
    import io

    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.setup(argparse.Namespace(quiet=True, command="tunnel"), stream)
        logging.getLogger("longtls.tunnel").setLevel(logging.INFO)
        logging.getLogger("longtls.tunnel").info("per-connection chatter")
        logging.getLogger("longtls.tunnel").warning("cannot connect")
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
        logging.getLogger("longtls.tunnel").setLevel(logging.NOTSET)
    assert stream.getvalue() == "longtls: cannot connect\n"


def test_in_json_mode_an_error_line_is_a_json_object_too(files: PkiFiles) -> None:
    with socket.create_server((LOOPBACK, 0)) as busy:
        port = busy.getsockname()[1]
        result = longtls(
            "serve", "--cert", str(files.server.chain), "--key", str(files.server.key), "--echo",
            "--port", str(port), "--log-format", "json",
        )
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.splitlines()
    record = json.loads(line)
    assert (record["level"], record["event"]) == ("error", "output"), record
    assert record["message"].startswith(f"error: cannot listen on {LOOPBACK}:{port}: "), record


@pytest.mark.parametrize("ending", ["peer_alert", "idle_timeout", "truncated"])
def test_a_failure_after_the_handshake_is_one_close_record_saying_what_it_was(
    files: PkiFiles, ending: str, caplog: pytest.LogCaptureFixture
) -> None:
    """In process: a server attaches a ConnectionLog; the client ends the
    connection with an alert, idles past the server's idle timeout, or
    drops the TCP connection.  One connection_close record, with the reason,
    the alert and who ended it; nothing else about the failure."""
    server_config = Configuration(is_client=False)
    server_config.load_cert_chain(str(files.server.chain), str(files.server.key))

    async def scenario() -> None:
        done = asyncio.Event()

        async def handler(reader: aio.TLSReader, writer: aio.TLSWriter) -> None:
            peer = "{}:{}".format(*writer.get_extra_info("peername")[:2])
            ConnectionLog.attach(writer, label=f"client {peer}", peer=peer, side="server")
            with contextlib.suppress(Exception):
                while await reader.read(100):
                    pass
            writer.close()
            await writer.wait_closed()
            await asyncio.sleep(0)  # the close watcher runs
            done.set()

        idle = 0.3 if ending == "idle_timeout" else None
        server = await aio.start_server(handler, LOOPBACK, 0, server_config, aio.StreamOptions(idle_timeout=idle))
        port = server.sockets[0].getsockname()[1]
        async with server:
            _, writer = await aio.connect(LOOPBACK, port, client_config(files, with_certificate=False))
            writer.write(b"12345")
            await writer.drain()
            if ending == "peer_alert":
                writer.close_with_alert(AlertDescription.access_denied)
            elif ending == "truncated":
                writer.abort()
            await asyncio.wait_for(done.wait(), 10)
            writer.close()

    with caplog.at_level(logging.DEBUG, logger="longtls"):
        asyncio.run(scenario())
    structured = [r for r in caplog.records if getattr(r, EVENT, None)]
    assert [getattr(r, EVENT) for r in structured] == ["connection_open", "connection_close"], caplog.text
    closed = structured[-1]
    fields: dict[str, Any] = getattr(closed, FIELDS)
    expected = {
        "peer_alert": ("peer", "access_denied", logging.WARNING),
        "idle_timeout": ("local", None, logging.INFO),
        "truncated": ("peer", None, logging.WARNING),
    }[ending]
    assert (fields["closed_by"], fields["alert"], closed.levelno) == expected, fields
    assert fields["reason"] == ending and fields["bytes_in"] == 5 and fields["bytes_out"] == 0
    # Logged once: no other line at INFO or above says it.
    others = [r for r in caplog.records if r.levelno >= logging.INFO and not getattr(r, EVENT, None)]
    assert not others, [r.getMessage() for r in others]


# -- serve ---------------------------------------------------------------------------------


def test_serve_json_open_key_update_close_records(files: PkiFiles) -> None:
    """--log-format json --log-level debug: every line JSON; open, two EKUs and
    close with the facts the client knows; DEBUG records too; no repr."""
    payload = b"sixteen bytes!!\n" * 40
    with serve(files, "--ca", str(files.ca), "--verify-client", "optional",
               "--log-format", "json", "--log-level", "debug") as (server, port):
        source_port, generations = talk(port, client_config(files), payload, updates=2)
        wait_for_event(server, "connection_close")
        found = records(server)
    assert generations == [1, 2]
    (listening,) = of(found, "listening")
    assert listening["address"] == f"{LOOPBACK}:{port}"
    assert any(r["level"] == "debug" for r in found), "--log-level debug shows DEBUG records"
    for record in found:
        assert "Event(" not in record["message"] and "Complete(" not in record["message"], record

    (opened,) = of(found, "connection_open")
    assert opened["level"] == "info" and opened["logger"] == "longtls.connections"
    assert opened["peer"] == f"{LOOPBACK}:{source_port}"
    assert opened["side"] == "server" and opened["transport"] == "tls"
    assert opened["sni"] == "localhost"
    assert opened["alpn"] is None
    assert opened["group"] == "X25519MLKEM768"
    assert opened["cipher_suite"] == "TLS_AES_128_GCM_SHA256"
    client_cert = x509.load_pem_x509_certificate(files.client.cert.read_bytes())
    assert opened["client_subject"] == client_cert.subject.rfc4514_string()
    assert opened["eku_profile"] == "draft-13" and opened["extended_key_update"] is True

    updates = of(found, "key_update")
    assert [u["generation"] for u in updates] == [1, 2]
    for update in updates:
        assert update["kind"] == "extended_key_update"
        assert update["initiator"] == "client"
        assert update["group"] == "X25519MLKEM768"
        assert isinstance(update["milliseconds"], float) and update["milliseconds"] >= 0
        assert update["connection"] == opened["connection"] and update["peer"] == opened["peer"]

    (closed,) = of(found, "connection_close")
    assert closed["level"] == "info"
    assert closed["peer"] == opened["peer"] and closed["connection"] == opened["connection"]
    assert closed["bytes_in"] == len(payload) and closed["bytes_out"] == len(payload)
    assert closed["key_updates"] == 2
    assert closed["closed_by"] == "peer" and closed["reason"] == "close_notify" and closed["alert"] is None
    assert 0 <= closed["duration_seconds"] < 60
    # Order: open, updates, close.
    events = [r["event"] for r in found if r["event"] in ("connection_open", "key_update", "connection_close")]
    assert events == ["connection_open", "key_update", "key_update", "connection_close"]


def test_serve_quiet_drops_the_info_records(files: PkiFiles) -> None:
    with serve(files, "--log-format", "json", "-q") as (server, port):
        talk(port, client_config(files, with_certificate=False), b"quiet\n", updates=1)
        # A WARNING after the connection: what -q keeps, and a point in time
        # by which the connection's records would have been written.
        with socket.create_connection((LOOPBACK, port), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            with contextlib.suppress(OSError):
                sock.recv(100)
        wait_for_event(server, "handshake_failed")
        time.sleep(0.3)
        found = records(server)
    assert [r["event"] for r in found] == ["listening", "handshake_failed"], found
    (failed,) = of(found, "handshake_failed")
    assert failed["level"] == "warning" and failed["reason"] == "not_tls"


def test_text_format_has_the_same_facts_and_verbose_no_reprs(files: PkiFiles) -> None:
    payload = b"text format\n"
    with serve(files, "-v", ready=r"serving \(echo\) on ") as (server, port):
        source_port, _ = talk(port, client_config(files, with_certificate=False), payload, updates=1)
        server.wait_for_output(r"connection closed by the peer", timeout=15)
        text = server.stderr
    # -v: the debug format (time, logger, level), and no event or dataclass repr.
    assert re.search(r"^\S+ \S+ longtls\.connections INFO: client ", text, re.MULTILINE), text
    for repr_text in ("Event(", "HandshakeComplete(", "KeyUpdateCompleted(", "KeyUpdated(", "ConnectionClosed("):
        assert repr_text not in text, text
    who = re.escape(f"client {LOOPBACK}:{source_port}")
    assert re.search(
        rf"{who}: connection open: TLSv1\.3, TLS_AES_128_GCM_SHA256, X25519MLKEM768, SNI localhost, "
        rf"EKU draft-13$", text, re.MULTILINE,
    ), text
    assert re.search(
        rf"{who}: key generation 1 \(extended key update, X25519MLKEM768\), started by the client, [\d.]+ ms$",
        text, re.MULTILINE,
    ), text
    assert re.search(
        rf"{who}: connection closed by the peer \(close_notify\) after [\d.]+ s: "
        rf"{len(payload)} bytes in, {len(payload)} bytes out, 1 key update\(s\)$",
        text, re.MULTILINE,
    ), text


def test_serve_dtls_and_mls_records(files: PkiFiles) -> None:
    """The same records over DTLS (datagram payload bytes) and in MLS mode
    (an epoch change is the key update)."""
    datagrams = [b"one datagram", b"and another one"]

    async def dtls_client(port: int) -> list[bytes]:
        association = await aio.connect_dtls(
            LOOPBACK, port, client_config(files, with_certificate=False), extended_key_update=True,
        )
        echoed = []
        for payload in datagrams:
            association.send(payload)
            echoed.append(await association.receive())
        await association.update_keys()
        association.close()
        await association.wait_closed()
        return echoed

    with serve(files, "--dtls", "--log-format", "json", kind=socket.SOCK_DGRAM) as (server, port):
        assert asyncio.run(asyncio.wait_for(dtls_client(port), 30)) == datagrams
        wait_for_event(server, "connection_close")
        found = records(server)
    (opened,) = of(found, "connection_open")
    assert opened["transport"] == "dtls" and opened["sni"] == "localhost"
    assert [(u["kind"], u["generation"]) for u in of(found, "key_update")] == [("extended_key_update", 1)]
    (closed,) = of(found, "connection_close")
    size = sum(map(len, datagrams))
    assert (closed["bytes_in"], closed["bytes_out"], closed["key_updates"]) == (size, size, 1)

    async def mls_client(port: int) -> None:
        config = Configuration(is_client=True, verify_peer=False)  # the server's basic credential
        reader, writer = await aio.connect_mls(LOOPBACK, port, config)
        writer.write(b"mls")
        assert await reader.readexactly(3) == b"mls"
        await writer.update_keys()
        writer.write_eof()
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()

    with serve(None, "--mls", "--log-format", "json") as (server, port):
        asyncio.run(asyncio.wait_for(mls_client(port), 30))
        wait_for_event(server, "connection_close")
        found = records(server)
    (opened,) = of(found, "connection_open")
    assert opened["transport"] == "mls-tls" and opened["epoch"] == 1
    (update,) = of(found, "key_update")
    assert (update["kind"], update["epoch"], update["initiator"]) == ("mls_epoch", 2, "client")
    (closed,) = of(found, "connection_close")
    assert (closed["bytes_in"], closed["bytes_out"], closed["key_updates"]) == (3, 3, 1)
    assert closed["reason"] == "close_notify" and closed["closed_by"] == "peer"


# -- tunnel ----------------------------------------------------------------------------------


def _tunnel(mode: str, *args: str) -> contextlib.AbstractContextManager[PeerProcess]:
    return start_process(
        [*LONGTLS, "tunnel", mode, "--log-format", "json", *args],
        ready_pattern=r'^\{.*"message": "tunnel (server|client): ', timeout=20,
    )


def test_tunnel_json_records_and_one_handshake_failure_per_side(
    files: PkiFiles, tmp_pki_files: Callable[..., PkiFiles]
) -> None:
    other_ca = tmp_pki_files("ecdsa-p384").ca  # a CA that did not issue the server's certificate
    backend = EchoBackend()
    server_port, client_port, refused_port = free_port(), free_port(), free_port()
    payload = b"through the tunnel\n" * 100
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(_tunnel(
            "server", "--listen", f"{LOOPBACK}:{server_port}", "--forward", f"{LOOPBACK}:{backend.port}",
            "--cert", str(files.server.chain), "--key", str(files.server.key), "--eku-min-interval", "0",
        ))
        client = stack.enter_context(_tunnel(
            "client", "--listen", f"{LOOPBACK}:{client_port}", "--connect", f"{LOOPBACK}:{server_port}",
            "--ca", str(files.ca), "--servername", "localhost", "--rekey-interval", "0.3",
        ))
        refused = stack.enter_context(_tunnel(
            "client", "--listen", f"{LOOPBACK}:{refused_port}", "--connect", f"{LOOPBACK}:{server_port}",
            "--ca", str(other_ca), "--servername", "localhost",
        ))
        with socket.create_connection((LOOPBACK, client_port), timeout=15) as app:
            app_port = app.getsockname()[1]
            app.sendall(payload)
            got = b""
            while len(got) < len(payload):
                got += app.recv(65536)
            wait_for_event(client, "key_update", count=2)  # --rekey-interval 0.3: EKUs meanwhile
            app.shutdown(socket.SHUT_WR)
            while app.recv(65536):
                pass
        assert got == payload
        wait_for_event(client, "connection_close")
        wait_for_event(server, "connection_close")

        with socket.create_connection((LOOPBACK, refused_port), timeout=15) as app, contextlib.suppress(OSError):
            app.recv(100)  # reset: the handshake was refused
        wait_for_event(refused, "handshake_failed")
        wait_for_event(server, "handshake_failed")
        time.sleep(0.3)  # a second line for the same failure would be here by now
        client_records, server_records, refused_records = records(client), records(server), records(refused)

    # The tunnel client: its TLS peer is the server; its plain peer our socket.
    (opened,) = of(client_records, "connection_open")
    assert opened["peer"] == f"{LOOPBACK}:{server_port}" and opened["plain_peer"] == f"{LOOPBACK}:{app_port}"
    assert opened["side"] == "client" and opened["sni"] == "localhost" and opened["eku_profile"] == "draft-13"
    updates = of(client_records, "key_update")
    generations = [u["generation"] for u in updates]
    assert generations == list(range(1, len(generations) + 1)) and len(generations) >= 2
    assert all(u["initiator"] == "client" and u["kind"] == "extended_key_update" for u in updates)
    (closed,) = of(client_records, "connection_close")
    assert (closed["bytes_out"], closed["bytes_in"]) == (len(payload), len(payload))
    assert closed["key_updates"] == len(updates) and closed["reason"] == "close_notify"

    # The tunnel server saw the same connection from the other side.
    (server_open,) = of(server_records, "connection_open")
    assert server_open["side"] == "server" and server_open["sni"] == "localhost"
    assert [u["generation"] for u in of(server_records, "key_update")] == generations
    assert all(u["initiator"] == "client" for u in of(server_records, "key_update"))
    (server_closed,) = of(server_records, "connection_close")
    assert (server_closed["bytes_in"], server_closed["bytes_out"]) == (len(payload), len(payload))
    assert server_closed["key_updates"] == len(generations)

    # The refused handshake: exactly one record on each side, nothing else.
    # (The start-up line is printed, not logged: in JSON mode an "output" object.)
    assert [r["event"] for r in refused_records][1:] == ["handshake_failed"], refused_records
    (failed,) = of(refused_records, "handshake_failed")
    assert failed["level"] == "warning" and failed["reason"] == "local_alert"
    assert failed["alert"] == "unknown_ca" and failed["peer"] == f"{LOOPBACK}:{server_port}"
    (server_failed,) = of(server_records, "handshake_failed")
    assert server_failed["reason"] == "peer_alert" and server_failed["alert"] == "unknown_ca"
    assert len(of(server_records, "connection_open")) == 1
