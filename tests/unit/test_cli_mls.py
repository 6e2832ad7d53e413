"""``longtls serve --mls`` and ``longtls connect --mls`` as real subprocesses on
127.0.0.1: the flags and the --summary json lines are a contract."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from helpers.cli import LONGTLS, assert_one_error_line, longtls, summary
from helpers.peers import LOOPBACK, PeerProcess, free_port, start_process
from helpers.pki import PkiFiles
from longtls import aio
from longtls.config import Configuration
from longtls.events import Event, KeyUpdateCompleted, Side

READY = r"^longtls: serving \(echo, MLS-TLS, suites "


@pytest.fixture
def files(tmp_pki_files: Callable[..., PkiFiles]) -> PkiFiles:
    # MLS suites 1, 3 and 0xF0A1 sign with Ed25519: Ed25519 leaves (the Web
    # PKI verifier wants an ECDSA/RSA CA key).
    return tmp_pki_files("ed25519", ca_key_type="ecdsa-p256")


@pytest.fixture
def serve() -> Iterator[Callable[..., tuple[PeerProcess, int]]]:
    stack: list[Any] = []

    def start(*extra: str) -> tuple[PeerProcess, int]:
        port = free_port()
        context = start_process([*LONGTLS, "serve", "--mls", "--echo", "--port", str(port), *extra],
                                ready_pattern=READY)
        stack.append(context)
        return context.__enter__(), port

    yield start
    for context in reversed(stack):
        context.__exit__(None, None, None)


def test_echo_with_an_x509_credential_and_the_json_lines(serve: Any, files: PkiFiles) -> None:
    server, port = serve("--cert", str(files.server.chain), "--key", str(files.server.key))
    message = "hello MLS-TLS\n" * 2000
    result = longtls("connect", "--mls", f"{LOOPBACK}:{port}", "--ca", str(files.ca), "--servername", "localhost",
                     "--summary", "json", "--key-update", input=message)
    assert result.returncode == 0, (result.stderr, server.describe())
    assert result.stdout == message
    assert "Traceback" not in result.stderr
    records = summary(result.stderr)
    assert records[0] == {
        "event": "handshake", "version": "MLS-TLS", "cipher_suite": "TLS_AES_128_GCM_SHA256", "group": "x25519",
        "signature_scheme": "ed25519", "alpn": None, "peer_subject": "CN=localhost,O=longtls tests",
        "resumed": False, "eku": False, "extended_key_update": False, "eku_profile": None, "certificate_update": False,
        "mode": "mls", "mls_cipher_suite": 1, "epoch": 1,
    }
    updates = [r for r in records if r["event"] == "key_update"]
    assert len(updates) == 1
    assert isinstance(updates[0].pop("milliseconds"), float)
    assert updates == [{"event": "key_update", "kind": "mls", "epoch": 2, "initiator": "client"}]
    assert records[-1] == {"event": "closed", "alert": None, "by_peer": True}


def test_rekey_count_with_the_post_quantum_suite_and_server_updates(serve: Any) -> None:
    server, port = serve("--rekey-bytes", "1")  # the server commits after every echo
    result = longtls("connect", "--mls", f"{LOOPBACK}:{port}", "--insecure", "--mls-suite", "0xF0A1",
                     "--summary", "json", "--rekey-count", "20")
    assert result.returncode == 0, (result.stderr, server.describe())
    records = summary(result.stderr)
    assert records[0]["mls_cipher_suite"] == 0xF0A1 and records[0]["group"] == "X25519MLKEM768"
    updates = [r for r in records if r["event"] == "key_update"]
    assert [u["epoch"] for u in updates] == list(range(2, 22))
    assert all(u["kind"] == "mls" and u["initiator"] == "client" for u in updates)
    # Data makes the server commit (--rekey-bytes): an asyncio client sees its epochs.
    assert asyncio.run(asyncio.wait_for(_server_updates(port), 20)) == [(2, Side.server), (3, Side.server)]


async def _server_updates(port: int) -> list[tuple[int | None, Side]]:
    events: list[Event] = []
    reader, writer = await aio.connect_mls(LOOPBACK, port, Configuration(is_client=True, verify_peer=False),
                                           aio.StreamOptions(event_handler=events.append))
    for _ in range(2):
        epoch = writer.epoch
        writer.write(b"x" * 100)
        assert await reader.readexactly(100) == b"x" * 100
        while writer.epoch == epoch:  # the server's commit after its echo
            await asyncio.sleep(0.01)
    writer.close()
    assert await reader.read() == b""
    return [(e.epoch, e.initiator) for e in events if isinstance(e, KeyUpdateCompleted)]


def test_a_suite_the_server_does_not_accept(serve: Any) -> None:
    _, port = serve("--mls-suite", "3")
    result = longtls("connect", "--mls", f"{LOOPBACK}:{port}", "--insecure", "--summary", "json", input="x")
    assert_one_error_line(result, "handshake_failure")
    assert summary(result.stderr)[-1]["alert"] == "handshake_failure"


def test_an_untrusted_server_credential(serve: Any, files: PkiFiles) -> None:
    _, port = serve()  # a basic credential: the client cannot authenticate it
    result = longtls("connect", "--mls", f"{LOOPBACK}:{port}", "--ca", str(files.ca), input="x")
    assert_one_error_line(result, "bad_certificate")


@pytest.mark.parametrize(("args", "fragment"), [
    (["serve", "--mls", "--echo", "--mls-suite", "2"], "not implemented"),
    (["serve", "--mls", "--www"], "--www does not apply to --mls"),
    (["connect", f"{LOOPBACK}:1", "--mls-suite", "1"], "--mls-suite applies to --mls only"),
    (["connect", f"{LOOPBACK}:1", "--mls", "--require-eku"], "--require-eku does not apply to --mls"),
])
def test_bad_mls_arguments(args: list[str], fragment: str) -> None:
    assert_one_error_line(longtls(*args), fragment)


def test_an_ecdsa_key_is_refused_for_mls(tmp_pki_files: Callable[..., PkiFiles]) -> None:
    ecdsa = tmp_pki_files("ecdsa-p256")
    result = longtls("serve", "--mls", "--echo", "--cert", str(ecdsa.server.chain), "--key", str(ecdsa.server.key))
    assert_one_error_line(result, "Ed25519")
