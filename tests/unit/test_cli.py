"""The ``longtls`` command line, run as a real subprocess on 127.0.0.1.

Scripts drive these flags as written, so the tests use them as a script
would: ``longtls serve`` in the background, ``longtls connect`` with stdin
and stdout, ``--summary json`` lines on stderr, exit statuses.
"""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.cli import LONGTLS, assert_one_error_line, longtls, summary
from helpers.peers import LOOPBACK, PeerProcess, free_port, start_process
from helpers.pki import PkiFiles

READY = r"^longtls: serving \((www|echo)\) on "
GET = "GET / HTTP/1.0\r\n\r\n"


def page_fields(page: str) -> dict[str, str]:
    """The ``Label: value`` lines of a --www page."""
    fields = {}
    for line in page.splitlines():
        label, sep, value = line.partition(":")
        if sep and not line.startswith("HTTP/"):
            fields[label] = value.strip()
    return fields


@pytest.fixture
def files(tmp_pki_files: Callable[..., PkiFiles]) -> PkiFiles:
    return tmp_pki_files("ecdsa-p256")


@pytest.fixture
def serve(files: PkiFiles) -> Iterator[Callable[..., tuple[PeerProcess, int]]]:
    """``serve(*extra_args)`` starts ``longtls serve`` on a free port; stopped at teardown."""
    stack: list[Any] = []

    def start(*extra: str) -> tuple[PeerProcess, int]:
        port = free_port()
        args = [
            *LONGTLS, "serve", "--cert", str(files.server.chain), "--key", str(files.server.key),
            "--port", str(port), *extra,
        ]
        context = start_process(args, ready_pattern=READY)
        stack.append(context)
        return context.__enter__(), port

    yield start
    for context in reversed(stack):
        context.__exit__(None, None, None)


# -- round trips -------------------------------------------------------------------------


def test_echo_round_trip_with_json_summary(serve: Any, files: PkiFiles) -> None:
    server, port = serve("--echo")
    message = "hello longtls\n" * 1000
    result = longtls(
        "connect", f"{LOOPBACK}:{port}", "--ca", str(files.ca), "--summary", "json", "--key-update",
        input=message,
    )
    assert result.returncode == 0, (result.stderr, server.describe())
    assert result.stdout == message
    assert "Traceback" not in result.stderr

    records = summary(result.stderr)
    handshake = records[0]
    assert handshake == {
        "event": "handshake",
        "version": "TLSv1.3",
        "cipher_suite": "TLS_AES_128_GCM_SHA256",
        "group": "X25519MLKEM768",
        "signature_scheme": "ecdsa_secp256r1_sha256",
        "alpn": None,
        "peer_subject": "CN=localhost,O=longtls tests",
        "resumed": False,
        "eku": True,
        "extended_key_update": True,
        "eku_profile": "draft-13",
        # Certificate Update (draft-rosomakho-tls-cert-update-02), on by default both sides.
        "certificate_update": True,
        # RFC 8879, on by default: the server compresses with its first algorithm.
        "peer_certificate_compression": "zstd",
    }
    # Two longtls peers negotiate Extended Key Update, which replaces KeyUpdate.
    updates = [r for r in records if r["event"] == "key_update"]
    assert len(updates) == 1, records
    milliseconds = updates[0].pop("milliseconds")
    assert isinstance(milliseconds, float) and 0 <= milliseconds < 10_000
    assert updates == [
        {"event": "key_update", "kind": "extended", "generation": 1, "initiator": "client", "group": "X25519MLKEM768"}
    ], records
    # EKU draft-13 §6: with EKU negotiated the server sends no tickets.
    assert not any(r["event"] == "session_ticket" for r in records)
    assert records[-1] == {"event": "closed", "alert": None, "by_peer": True}


def test_classic_key_update_and_tickets_from_a_server_without_eku(files: PkiFiles) -> None:
    """The CLI against an in-process longtls.aio server that does not offer EKU."""
    from longtls import aio
    from longtls.config import Configuration

    config = Configuration(is_client=False, extended_key_update=False)
    config.load_cert_chain(files.server.chain, files.server.key)

    async def echo(reader: aio.TLSReader, writer: aio.TLSWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def scenario() -> tuple[int, bytes, bytes]:
        server = await aio.start_server(echo, LOOPBACK, 0, config)
        port = server.sockets[0].getsockname()[1]
        async with server:
            proc = await asyncio.create_subprocess_exec(
                *LONGTLS, "connect", f"{LOOPBACK}:{port}", "--ca", str(files.ca),
                "--summary", "json", "--key-update",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(proc.communicate(b"ping\n"), 30)
            assert proc.returncode is not None
            return proc.returncode, out, err

    returncode, out, err = asyncio.run(scenario())
    assert (returncode, out) == (0, b"ping\n"), err
    records = summary(err.decode())
    assert records[0]["event"] == "handshake"
    updates = [r for r in records if r["event"] == "key_update"]
    assert updates == [
        {"event": "key_update", "kind": "standard", "direction": "send", "generation": 1, "requested_by_peer": False},
        {"event": "key_update", "kind": "standard", "direction": "receive", "generation": 1, "requested_by_peer": False},
    ], records
    tickets = [r for r in records if r["event"] == "session_ticket"]
    assert tickets and tickets[0]["cipher_suite"] == "TLS_AES_128_GCM_SHA256", records
    assert records[-1]["event"] == "closed" and records[-1]["alert"] is None


def test_www_page_describes_the_connection(serve: Any, files: PkiFiles) -> None:
    _, port = serve("--www", "--alpn", "h2,http/1.1")
    result = longtls(
        "connect", f"localhost:{port}", "--ca", str(files.ca), "--summary", "json",
        "--groups", "SECP384R1", "--ciphers", "TLS_AES_256_GCM_SHA384", "--alpn", "http/1.1",
        input=GET,
    )
    assert result.returncode == 0, result.stderr
    page = result.stdout
    assert page.startswith("HTTP/1.0 200 ok\n"), page  # text mode: \r\n read as \n
    handshake = summary(result.stderr)[0]
    assert handshake["cipher_suite"] == "TLS_AES_256_GCM_SHA384"
    assert handshake["group"] == "secp384r1"
    assert handshake["alpn"] == "http/1.1"
    fields = page_fields(page)
    assert fields["Protocol"] == "TLSv1.3"
    assert fields["Cipher suite"] == "TLS_AES_256_GCM_SHA384"
    assert fields["Group"] == "secp384r1"
    assert fields["Signature scheme"] == "ecdsa_secp256r1_sha256"
    assert fields["ALPN"] == "http/1.1"
    assert fields["Server name"] == "localhost"
    assert fields["Client certificate"] == "none"
    assert fields["Resumed"] == "no"


def test_keylog_file_gets_the_secrets(serve: Any, files: PkiFiles, tmp_path: Path) -> None:
    _, port = serve("--echo")
    keylog = tmp_path / "keys.log"
    result = longtls("connect", f"{LOOPBACK}:{port}", "--ca", str(files.ca), "--keylog", str(keylog), input="x")
    assert result.returncode == 0, result.stderr
    labels = {line.split()[0] for line in keylog.read_text().splitlines()}
    assert {"CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_TRAFFIC_SECRET_0", "CLIENT_TRAFFIC_SECRET_0"} <= labels


# -- mutual TLS --------------------------------------------------------------------------


def test_mutual_tls_required(serve: Any, files: PkiFiles) -> None:
    server, port = serve("--www", "--ca", str(files.ca), "--verify-client", "required")

    refused = longtls("connect", f"{LOOPBACK}:{port}", "--ca", str(files.ca), "--summary", "json", input=GET)
    assert_one_error_line(refused, "certificate_required", "--cert")
    assert summary(refused.stderr)[-1] == {
        "event": "closed", "alert": "certificate_required", "by_peer": True,
        "error": "peer sent fatal alert 116 (certificate_required)",
    }
    server.wait_for_output("certificate_required")  # the server says why, too

    accepted = longtls(
        "connect", f"{LOOPBACK}:{port}", "--ca", str(files.ca),
        "--cert", str(files.client.chain), "--key", str(files.client.key), input=GET,
    )
    assert accepted.returncode == 0, accepted.stderr
    fields = page_fields(accepted.stdout)
    assert fields["Client certificate"] == "CN=localhost,O=longtls tests"
    assert fields["Client signature scheme"] == "ecdsa_secp256r1_sha256"


# -- errors: one line, non-zero exit, no traceback ----------------------------------------


def test_missing_certificate_file(files: PkiFiles, tmp_path: Path) -> None:
    missing = tmp_path / "nope.crt"
    result = longtls("serve", "--cert", str(missing), "--key", str(files.server.key), "--echo")
    assert_one_error_line(result, "cannot read certificate file", str(missing))


def test_key_does_not_match_certificate(
    files: PkiFiles, tmp_pki_files: Callable[..., PkiFiles]
) -> None:
    other = tmp_pki_files("ed25519")
    result = longtls("serve", "--cert", str(files.server.cert), "--key", str(other.server.key), "--echo")
    assert_one_error_line(result, "does not match the certificate")


def test_refused_port(files: PkiFiles) -> None:
    port = free_port()  # nothing listens there
    result = longtls("connect", f"{LOOPBACK}:{port}", "--ca", str(files.ca))
    assert_one_error_line(result, f"cannot connect to {LOOPBACK}:{port}", "Connection refused")


def test_bad_group_name(files: PkiFiles) -> None:
    result = longtls("connect", f"{LOOPBACK}:4433", "--groups", "x25519,curve9000")
    line = assert_one_error_line(result, "--groups", "curve9000", "X25519MLKEM768")
    assert result.returncode == 2, line


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["connect", "localhost"], "HOST:PORT"),
        (["connect", f"{LOOPBACK}:1", "--ciphers", "TLS_RSA_WITH_AES_128_CBC_SHA"], "unknown cipher suite"),
        (["connect", f"{LOOPBACK}:1", "--ca", "ca.pem", "--insecure"], "not allowed"),
        (["serve", "--cert", "c", "--key", "k"], "--www --echo"),
        (["serve", "--cert", "c", "--key", "k", "--www", "--port", "70000"], "invalid port"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_arguments(args: list[str], fragment: str) -> None:
    result = longtls(*args)
    assert_one_error_line(result, fragment)
    assert result.returncode == 2


def test_verify_client_needs_a_ca(files: PkiFiles) -> None:
    result = longtls(
        "serve", "--cert", str(files.server.cert), "--key", str(files.server.key),
        "--www", "--verify-client", "required",
    )
    assert_one_error_line(result, "--ca")


def test_untrusted_server_certificate(serve: Any, tmp_pki_files: Callable[..., PkiFiles]) -> None:
    _, port = serve("--echo")
    other_ca = tmp_pki_files("ed25519").ca
    result = longtls("connect", f"{LOOPBACK}:{port}", "--ca", str(other_ca))
    assert_one_error_line(result, "TLS handshake", "(unknown_ca)")


def test_handshake_timeout() -> None:
    # A listener that never answers: the TCP connect succeeds, the handshake cannot.
    with socket.socket() as silent:
        silent.bind((LOOPBACK, 0))
        silent.listen()
        port = silent.getsockname()[1]
        result = longtls("connect", f"{LOOPBACK}:{port}", "--insecure", "--timeout", "0.5")
    assert_one_error_line(result, "TLS handshake", "0.5 seconds")


# -- serve lifecycle ---------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_exits_cleanly_on_signal(serve: Any, files: PkiFiles, sig: signal.Signals) -> None:
    server, port = serve("--echo")
    # Serves several connections, concurrently with one that stays open.
    with start_process(
        [*LONGTLS, "connect", f"{LOOPBACK}:{port}", "--ca", str(files.ca)], port=None
    ) as idle:
        idle.write("still here\n")
        idle.wait_for_output("still here")
        for i in range(3):
            result = longtls("connect", f"{LOOPBACK}:{port}", "--ca", str(files.ca), input=f"n{i}")
            assert (result.returncode, result.stdout) == (0, f"n{i}"), result.stderr
        server.proc.send_signal(sig)
        assert server.wait() == 0, server.describe()
        # The open connection got close_notify: the client sees a clean close.
        assert idle.wait() == 0, idle.describe()
    assert "Traceback" not in server.stderr, server.describe()


def test_main_returns_the_exit_status() -> None:
    from longtls.cli.main import main

    assert main(["--version"]) == 0
    assert main(["connect"]) == 2


# -- key updates: --rekey-count, --rekey-interval, --rekey-bytes, profiles, --no-eku ------


def key_updates(stderr: str) -> list[dict[str, Any]]:
    return [r for r in summary(stderr) if r["event"] == "key_update"]


def assert_extended_updates(updates: list[dict[str, Any]], count: int, initiator: str) -> None:
    """``count`` extended updates, generations 1..count, with the documented fields."""
    assert [u["generation"] for u in updates] == list(range(1, count + 1)), updates
    for update in updates:
        assert set(update) == {"event", "kind", "generation", "initiator", "group", "milliseconds"}
        assert update["kind"] == "extended"
        assert update["initiator"] == initiator
        assert update["group"] == "X25519MLKEM768"
        assert isinstance(update["milliseconds"], float) and update["milliseconds"] >= 0


def test_rekey_count_performs_that_many_extended_updates(serve: Any, files: PkiFiles) -> None:
    # Back to back: without the server's default pacing (one update a second).
    server, port = serve("--echo", "--eku-min-interval", "0")
    result = longtls(
        "connect", f"{LOOPBACK}:{port}", "--ca", str(files.ca), "--summary", "json",
        "--rekey-count", "50",
    )
    assert result.returncode == 0, (result.stderr, server.describe())
    assert result.stdout == ""
    assert_extended_updates(key_updates(result.stderr), 50, "client")
    assert summary(result.stderr)[-1] == {"event": "closed", "alert": None, "by_peer": True}


@pytest.mark.parametrize("profile", ["draft-13", "draft-2025-10", "draft-05"])
def test_every_eku_profile(serve: Any, files: PkiFiles, profile: str) -> None:
    _, port = serve("--echo", "--eku-profile", profile, "--eku-min-interval", "0")
    result = longtls(
        "connect", f"{LOOPBACK}:{port}", "--ca", str(files.ca), "--summary", "json",
        "--eku-profile", profile, "--rekey-count", "5",
    )
    assert result.returncode == 0, result.stderr
    assert_extended_updates(key_updates(result.stderr), 5, "client")


def test_server_rekey_interval_starts_updates(serve: Any, files: PkiFiles) -> None:
    _, port = serve("--echo", "--rekey-interval", "0.1")
    with start_process(
        [*LONGTLS, "connect", f"{LOOPBACK}:{port}", "--ca", str(files.ca), "--summary", "json"],
        port=None,
    ) as client:
        client.write("hello\n")
        client.wait_for_output("hello")
        # Updates every 0.1 s from the server while the connection is idle.
        client.wait_for_output(r'"generation": 3, "initiator": "server"', timeout=10)
        assert client.proc.stdin is not None
        client.proc.stdin.close()
        assert client.wait() == 0, client.describe()
        updates = key_updates(client.stderr)
    assert len(updates) >= 3
    assert {u["initiator"] for u in updates} == {"server"}
    assert [u["generation"] for u in updates] == list(range(1, len(updates) + 1))


def test_server_rekey_bytes_starts_updates(serve: Any, files: PkiFiles) -> None:
    _, port = serve("--echo", "--rekey-bytes", "64K")
    message = "x" * (8 << 20)
    result = longtls("connect", f"{LOOPBACK}:{port}", "--ca", str(files.ca), "--summary", "json", input=message)
    assert result.returncode == 0, result.stderr
    assert result.stdout == message
    updates = key_updates(result.stderr)
    # At most one update per 64 KiB the server sends, and one at a time: an
    # update takes a round trip while the echo streams on.
    assert len([u for u in updates if u["initiator"] == "server"]) >= 2, updates
    assert [u["generation"] for u in updates] == list(range(1, len(updates) + 1))


@pytest.mark.parametrize("side", ["serve", "connect"])
def test_no_eku_on_one_side_falls_back_to_key_update(serve: Any, files: PkiFiles, side: str) -> None:
    _, port = serve("--echo", *(["--no-eku"] if side == "serve" else []))
    result = longtls(
        "connect", f"{LOOPBACK}:{port}", "--ca", str(files.ca), "--summary", "json",
        "--rekey-count", "3", *(["--no-eku"] if side == "connect" else []),
    )
    assert result.returncode == 0, result.stderr
    handshake = summary(result.stderr)[0]
    assert (handshake["extended_key_update"], handshake["eku"], handshake["eku_profile"]) == (False, False, None)
    updates = key_updates(result.stderr)
    assert {u["kind"] for u in updates} == {"standard"}, updates
    sent = [u for u in updates if u["direction"] == "send"]
    assert [u["generation"] for u in sent] == [1, 2, 3]
    # The server answers each update_requested with its own KeyUpdate.
    received = [u for u in updates if u["direction"] == "receive"]
    assert [u["generation"] for u in received] == [1, 2, 3]


def test_no_eku_server_rekey_interval_uses_key_update(serve: Any, files: PkiFiles) -> None:
    _, port = serve("--echo", "--no-eku", "--rekey-interval", "0.1")
    with start_process(
        [*LONGTLS, "connect", f"{LOOPBACK}:{port}", "--ca", str(files.ca), "--summary", "json"],
        port=None,
    ) as client:
        client.wait_for_output(r'"kind": "standard", "direction": "receive", "generation": 2')
        assert client.proc.stdin is not None
        client.proc.stdin.close()
        assert client.wait() == 0, client.describe()


def test_require_eku_refuses_a_server_without_it(serve: Any, files: PkiFiles) -> None:
    _, port = serve("--echo", "--no-eku")
    result = longtls(
        "connect", f"{LOOPBACK}:{port}", "--ca", str(files.ca), "--require-eku", input="data"
    )
    assert_one_error_line(result, "did not negotiate Extended Key Update", "--require-eku")
    assert result.returncode == 1
    assert result.stdout == ""


def test_require_eku_on_the_server(serve: Any, files: PkiFiles) -> None:
    server, port = serve("--echo", "--require-eku")
    result = longtls("connect", f"{LOOPBACK}:{port}", "--ca", str(files.ca), "--no-eku", input="data")
    assert result.stdout == ""  # closed before any data was echoed
    assert result.returncode != 0 and "insufficient_security" in result.stderr, result.stderr
    server.wait_for_output("did not negotiate Extended Key Update")
    ok = longtls("connect", f"{LOOPBACK}:{port}", "--ca", str(files.ca), input="data")
    assert (ok.returncode, ok.stdout) == (0, "data"), ok.stderr


def test_no_eku_with_require_eku_is_an_error(files: PkiFiles) -> None:
    result = longtls("connect", f"{LOOPBACK}:1", "--ca", str(files.ca), "--no-eku", "--require-eku")
    assert_one_error_line(result, "--no-eku", "--require-eku")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--eku-profile", "draft-99"], "invalid choice"),
        (["--rekey-interval", "0"], "invalid time"),
        (["--rekey-bytes", "lots"], "invalid byte count"),
        (["--rekey-count", "-1"], "invalid number"),
    ],
)
def test_bad_key_update_arguments(args: list[str], fragment: str) -> None:
    result = longtls("connect", f"{LOOPBACK}:1", *args)
    assert_one_error_line(result, fragment)
    assert result.returncode == 2


# -- more user errors --------------------------------------------------------------------


def test_encrypted_key_and_its_password(files: PkiFiles, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(files.server.key.read_bytes(), None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"right horse"),
    ))
    wrong, right = tmp_path / "wrong.txt", tmp_path / "right.txt"
    wrong.write_text("battery staple\n")
    right.write_text("right horse\n")
    base = ["serve", "--cert", str(files.server.chain), "--key", str(encrypted), "--echo"]

    assert_one_error_line(longtls(*base), "is encrypted")
    assert_one_error_line(longtls(*base, "--key-password-file", str(wrong)), "wrong password")
    assert_one_error_line(
        longtls(*base, "--key-password-file", str(tmp_path / "none.txt")), "cannot read key password file"
    )
    port = free_port()
    with start_process(
        [*LONGTLS, *base, "--key-password-file", str(right), "--port", str(port)], ready_pattern=READY
    ):
        result = longtls("connect", f"{LOOPBACK}:{port}", "--ca", str(files.ca), input="ok")
        assert (result.returncode, result.stdout) == (0, "ok"), result.stderr


def test_port_in_use(files: PkiFiles) -> None:
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = longtls(
            "serve", "--cert", str(files.server.chain), "--key", str(files.server.key),
            "--echo", "--port", str(port),
        )
    assert_one_error_line(result, f"cannot listen on {LOOPBACK}:{port}", "Address already in use")


@pytest.mark.parametrize("command", ["serve", "connect", "tunnel", "tunnel server", "tunnel client", "certs", "demo"])
def test_every_command_takes_verbose_and_help(command: str) -> None:
    result = longtls(*command.split(), "-v", "--help")
    assert result.returncode == 0, result.stderr
    assert "-v, --verbose" in result.stdout
