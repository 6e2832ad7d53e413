"""Errors and flags for users with openssl, curl, ghostunnel and stunnel habits
(issue 14): each mistake gets one ``longtls: error:`` line that says what to
do instead, with the documented exit status (2 bad arguments, 1 failure)."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from helpers.cli import LONGTLS, assert_one_error_line, longtls, summary
from helpers.peers import LOOPBACK, free_port, start_process
from helpers.pki import PkiFiles
from longtls import certs
from longtls.cli import common
from longtls.cli.main import main
from longtls.constants import NamedGroup

READY = r"^longtls: serving \((www|echo)\) on "


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """``longtls ARGS`` in this process (argument errors need no subprocess):
    the exit status and the one stderr line."""
    status = main(list(args))
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return status, err


@pytest.fixture
def files(tmp_pki_files: Callable[..., PkiFiles]) -> PkiFiles:
    return tmp_pki_files("ecdsa-p256")


# -- a unique name per generated CA ------------------------------------------------------


def _common_name(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def test_every_generated_ca_has_its_own_name(tmp_path: Path) -> None:
    names = set()
    for run in ("a", "b"):
        result = longtls("certs", "--out", str(tmp_path / run))
        assert result.returncode == 0, result.stderr
        ca = x509.load_pem_x509_certificate((tmp_path / run / "ca.pem").read_bytes())
        server = x509.load_pem_x509_certificate((tmp_path / run / "server.pem").read_bytes())
        assert server.issuer == ca.subject
        assert _common_name(ca).startswith("longtls CA ")
        names.add(ca.subject)
    assert len(names) == 2


def test_another_runs_ca_reads_as_unknown_ca(tmp_path: Path) -> None:
    # Two `longtls certs` runs: the server has the first's certificate, the
    # client trusts the second's CA.  Same-named CAs made this "bad signature".
    for run in ("a", "b"):
        assert longtls("certs", "--out", str(tmp_path / run)).returncode == 0
    port = free_port()
    serve = [
        *LONGTLS, "serve", "--cert", str(tmp_path / "a" / "server.pem"),
        "--key", str(tmp_path / "a" / "server.key"), "--echo", "--port", str(port),
    ]
    with start_process(serve, ready_pattern=READY):
        result = longtls("connect", f"{LOOPBACK}:{port}", "--ca", str(tmp_path / "b" / "ca.pem"))
    assert_one_error_line(result, "(unknown_ca)")
    assert result.returncode == 1


def test_certs_include_the_ipv6_loopback() -> None:
    bundle = certs.make_bundle()
    san = bundle.server.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("::1") in san.get_values_for_type(x509.IPAddress)
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    assert "localhost" in san.get_values_for_type(x509.DNSName)


# -- near-miss flags, URLs, listen addresses, group names ------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["connect", "localhost:4443", "--cacert", "ca.pem"], "unrecognized argument --cacert: did you mean --ca?"),
        (["connect", "localhost:4443", "-CAfile", "ca.pem"], "unrecognized argument -CAfile: did you mean --ca?"),
        (["connect", "localhost:4443", "--cacert=ca.pem"], "unrecognized argument --cacert: did you mean --ca?"),
        (["connect", "localhost:4443", "-servername", "x"], "did you mean --servername?"),
        (["connect", "localhost:4443", "--servrname", "x"], "did you mean --servername?"),
        (["serve", "--cacert", "ca.pem", "--echo"], "did you mean --ca?"),
        (["tunnel", "server", "--listen", "127.0.0.1:1", "--forward", "h:2", "--kye", "k"], "did you mean --key?"),
        (["tunnel", "client", "--listen", "127.0.0.1:1", "--connect", "h:2", "--cacert", "c"], "did you mean --ca?"),
    ],
)
def test_near_miss_flag_gets_a_suggestion(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    status, line = run_main(capsys, *args)
    assert status == 2
    assert line.startswith("longtls: error: ") and message in line, line


def test_an_unknown_flag_far_from_any_still_reads_unrecognized(capsys: pytest.CaptureFixture[str]) -> None:
    status, line = run_main(capsys, "connect", "localhost:4443", "--frobnicate")
    assert status == 2
    assert "unrecognized arguments: --frobnicate" in line and "did you mean" not in line, line


@pytest.mark.parametrize(
    ("address", "example"),
    [
        ("https://localhost:4443/", "localhost:4443"),
        ("https://example.com/", "example.com:443"),
        ("localhost:4443/", "localhost:4443"),
    ],
)
def test_a_url_for_host_port(capsys: pytest.CaptureFixture[str], address: str, example: str) -> None:
    status, line = run_main(capsys, "connect", address)
    assert status == 2
    assert f"that is a URL, give HOST:PORT (e.g. {example})" in line, line


@pytest.mark.parametrize("text", [":8443", "*:8443"])
def test_listen_on_every_interface(text: str) -> None:
    assert common.listen_address(text) == (common.ALL_INTERFACES, 8443)
    assert common.format_address(common.ALL_INTERFACES, 8443) == "*:8443"


def test_listen_address_keeps_host_port_forms() -> None:
    assert common.listen_address("127.0.0.1:1") == ("127.0.0.1", 1)
    assert common.listen_address("[::1]:2") == ("::1", 2)


def test_serve_listen_colon_port_accepts_on_loopback(files: PkiFiles) -> None:
    port = free_port()
    serve = [
        *LONGTLS, "serve", "--cert", str(files.server.chain), "--key", str(files.server.key),
        "--echo", "--listen", f":{port}",
    ]
    with start_process(serve, ready_pattern=READY) as server:
        result = longtls("connect", f"{LOOPBACK}:{port}", "--ca", str(files.ca), input="hi")
        assert (result.returncode, result.stdout) == (0, "hi"), result.stderr
        assert f"on *:{port}" in server.output()


@pytest.mark.parametrize(
    ("text", "groups"),
    [
        ("P-256", (NamedGroup.secp256r1,)),
        ("prime256v1", (NamedGroup.secp256r1,)),
        ("secp256r1", (NamedGroup.secp256r1,)),
        ("X25519:P-256", (NamedGroup.x25519, NamedGroup.secp256r1)),
        ("X25519MLKEM768:x25519", (NamedGroup.X25519MLKEM768, NamedGroup.x25519)),
        ("P-384:P-521", (NamedGroup.secp384r1, NamedGroup.secp521r1)),
    ],
)
def test_openssl_group_names(text: str, groups: tuple[NamedGroup, ...]) -> None:
    assert common.group_list(text) == groups


def test_openssl_group_list_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    # Accepted by the parser: the error is the refused port, not the groups.
    with socket.socket() as closed:
        closed.bind((LOOPBACK, 0))
        port = closed.getsockname()[1]
    status, line = run_main(capsys, "connect", f"{LOOPBACK}:{port}", "--insecure", "--groups", "X25519:prime256v1")
    assert status == 1
    assert "cannot connect" in line, line


# -- credentials -------------------------------------------------------------------------


def test_key_optional_when_cert_holds_it(files: PkiFiles, tmp_path: Path) -> None:
    both = tmp_path / "both.pem"
    both.write_bytes(files.server.chain.read_bytes() + files.server.key.read_bytes())
    port = free_port()
    serve = [*LONGTLS, "serve", "--cert", str(both), "--echo", "--port", str(port)]
    with start_process(serve, ready_pattern=READY):
        result = longtls("connect", f"{LOOPBACK}:{port}", "--ca", str(files.ca), input="hi")
        assert (result.returncode, result.stdout) == (0, "hi"), result.stderr


def test_cert_without_key_and_no_key_flag(capsys: pytest.CaptureFixture[str], files: PkiFiles) -> None:
    status, line = run_main(capsys, "serve", "--cert", str(files.server.chain), "--echo")
    assert status == 1
    assert line == f"longtls: error: {str(files.server.chain)!r} holds no private key: give --key FILE"


def test_encrypted_key_names_the_password_flag(
    capsys: pytest.CaptureFixture[str], files: PkiFiles, tmp_path: Path
) -> None:
    key = serialization.load_pem_private_key(files.server.key.read_bytes(), None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    ))
    status, line = run_main(capsys, "serve", "--cert", str(files.server.chain), "--key", str(encrypted), "--echo")
    assert status == 1
    assert line == (
        f"longtls: error: key file {str(encrypted)!r} is encrypted: "
        "give its password with --key-password-file FILE"
    )


# -- shutdown ----------------------------------------------------------------------------


def test_sigterm_drain_ends_within_grace(files: PkiFiles) -> None:
    # A tunnel client with one idle application connection: SIGTERM, and the
    # process must be gone within --grace (it overshot by 0.3 to 1.8 s: the
    # reset and the interpreter's exit came after the full grace period), with
    # no traceback for the connection cut at the end.
    grace = 2.0
    server_port, tunnel_port = free_port(), free_port()
    serve = [
        *LONGTLS, "serve", "--cert", str(files.server.chain), "--key", str(files.server.key),
        "--echo", "--port", str(server_port),
    ]
    client = [
        *LONGTLS, "tunnel", "client", "--listen", f"{LOOPBACK}:{tunnel_port}",
        "--connect", f"{LOOPBACK}:{server_port}", "--ca", str(files.ca), "--grace", str(grace),
    ]
    with start_process(serve, ready_pattern=READY), \
            start_process(client, ready_pattern=r"^longtls: tunnel client: ") as tunnel:
        with socket.create_connection((LOOPBACK, tunnel_port), timeout=10) as app:
            app.sendall(b"ping")
            assert app.recv(10) == b"ping"
            started = time.monotonic()
            tunnel.proc.send_signal(signal.SIGTERM)
            assert tunnel.wait(10) == 0, tunnel.describe()
            elapsed = time.monotonic() - started
            with pytest.raises(ConnectionResetError):
                while app.recv(100):
                    pass
        # The bound leaves room for the interpreter's exit on a loaded machine
        # (the suite runs two workers on two cores); the overshoot it guards
        # against was up to 1.8 s.
        assert grace / 2 <= elapsed <= grace + 0.5, (elapsed, tunnel.describe())
        assert "reset 1 connection(s) still open" in tunnel.stderr
        assert "Traceback" not in tunnel.stderr, tunnel.describe()


def test_sighup_reloads_serves_certificate(tmp_path: Path) -> None:
    # SIGHUP ended serve; now it reloads --cert/--key (the watcher is off
    # here, so the reload is SIGHUP's doing), and a broken file keeps the old pair.
    bundle = certs.make_bundle(["localhost", "127.0.0.1"])
    ca, cert, key = tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "server.key"
    ca.write_bytes(bundle.ca.cert_pem())
    cert.write_bytes(bundle.server.cert_pem())
    key.write_bytes(bundle.server.key_pem())
    port = free_port()
    serve = [
        *LONGTLS, "serve", "--cert", str(cert), "--key", str(key), "--echo", "--port", str(port),
        "--cert-check-interval", "0",
    ]

    def peer_subject() -> str:
        result = longtls("connect", f"{LOOPBACK}:{port}", "--ca", str(ca), "--summary", "json", input="x")
        assert result.returncode == 0, result.stderr
        return str(summary(result.stderr)[0]["peer_subject"])

    with start_process(serve, ready_pattern=READY) as server:
        assert peer_subject() == "CN=localhost,O=longtls"
        renewed = certs.make_leaf(bundle.ca, "ecdsa-p256", ["127.0.0.1"])
        cert.write_bytes(renewed.cert_pem())
        key.write_bytes(renewed.key_pem())
        server.proc.send_signal(signal.SIGHUP)
        server.wait_for_output("reloaded")
        assert peer_subject() == "CN=127.0.0.1,O=longtls"

        cert.write_text("not a certificate\n")
        server.proc.send_signal(signal.SIGHUP)
        server.wait_for_output(r"^longtls: reload failed, still using the previous certificate: .*$")
        assert peer_subject() == "CN=127.0.0.1,O=longtls"
        assert server.proc.poll() is None
        assert "Traceback" not in server.stderr, server.describe()


# -- certificate expiry at start-up ------------------------------------------------------


def test_expiry_warning_wording() -> None:
    leaf = certs.make_bundle().server.cert
    end = leaf.not_valid_after_utc
    day = datetime.timedelta(days=1)
    assert common.warn_if_expiring("s.pem", leaf, now=end - 30 * day) is None
    assert common.warn_if_expiring("s.pem", leaf, now=end - 3 * day - datetime.timedelta(hours=1)) == (
        f"certificate 's.pem' expires in 3 day(s) ({end:%Y-%m-%dT%H:%M:%SZ}): renew it"
    )
    assert common.warn_if_expiring("s.pem", leaf, now=end + 2 * day + datetime.timedelta(hours=1)) == (
        f"certificate 's.pem' expired 2 day(s) ago ({end:%Y-%m-%dT%H:%M:%SZ}): peers will refuse it"
    )
    start = leaf.not_valid_before_utc
    assert common.warn_if_expiring("s.pem", leaf, now=start - day) == (
        f"certificate 's.pem' is not valid before {start:%Y-%m-%dT%H:%M:%SZ}: peers will refuse it until then"
    )


@pytest.mark.parametrize("command", ["serve", "tunnel"])
def test_serve_and_tunnel_warn_of_a_certificate_about_to_expire(tmp_path: Path, command: str) -> None:
    bundle = certs.make_bundle()
    soon = certs.make_leaf(bundle.ca, "ecdsa-p256", ["localhost"], days=3)
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    cert.write_bytes(soon.cert_pem())
    key.write_bytes(soon.key_pem())
    port = free_port()
    where = ["--port", str(port)] if command == "serve" else [
        "server", "--listen", f"{LOOPBACK}:{port}", "--forward", f"{LOOPBACK}:1",
    ]
    args = [*LONGTLS, command, *where, "--cert", str(cert), "--key", str(key)]
    if command == "serve":
        args.append("--echo")
    with start_process(args, ready_pattern=r"^longtls: (serving|tunnel server)") as server:
        line = server.wait_for_output(r"^longtls: warning: .*$").group(0)
    assert line.startswith(f"longtls: warning: certificate {str(cert)!r} expires in 2 day(s) (")
    assert line.endswith("): renew it")


# -- handshake hints ---------------------------------------------------------------------


def test_tls12_only_server_gets_a_hint(tmp_path: Path) -> None:
    # A TLS 1.2-only server, as openssl s_server -tls1_2 would be: it answers
    # a TLS 1.3-only ClientHello with a protocol_version alert (70).
    with socket.socket() as listener:
        listener.bind((LOOPBACK, 0))
        listener.listen()
        port = listener.getsockname()[1]

        def answer() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(bytes([21, 3, 3, 0, 2, 2, 70]))  # alert record: fatal, protocol_version

        thread = threading.Thread(target=answer)
        thread.start()
        result = longtls("connect", f"{LOOPBACK}:{port}", "--insecure")
        thread.join(10)
    line = assert_one_error_line(result, "(protocol_version)")
    assert line.endswith("; the server does not speak TLS 1.3 (longtls speaks TLS 1.3 only)"), line
    assert result.returncode == 1


def test_ip_address_with_a_dns_only_certificate_hints_at_servername(tmp_path: Path) -> None:
    assert longtls("certs", "--out", str(tmp_path), "--names", "localhost").returncode == 0
    port = free_port()
    serve = [
        *LONGTLS, "serve", "--cert", str(tmp_path / "server.pem"), "--key", str(tmp_path / "server.key"),
        "--echo", "--port", str(port),
    ]
    with start_process(serve, ready_pattern=READY):
        result = longtls("connect", f"{LOOPBACK}:{port}", "--ca", str(tmp_path / "ca.pem"))
        line = assert_one_error_line(result, "name mismatch", "(bad_certificate)")
        assert line.endswith(
            f"; you connected to the address {LOOPBACK}: give --servername NAME, "
            "one of the names the certificate is for"
        ), line
        assert result.returncode == 1
        named = longtls(
            "connect", f"{LOOPBACK}:{port}", "--ca", str(tmp_path / "ca.pem"), "--servername", "localhost",
            input="ok",
        )
        assert (named.returncode, named.stdout) == (0, "ok"), named.stderr


# -- a failure after the handshake is not a handshake failure ------------------------


def test_failure_right_after_the_handshake_is_not_logged_as_a_handshake_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The client's Finished and a forged record arrive in one TCP segment: the
    # handshake completes, then the record fails (bad_record_mac).  That used
    # to be logged, counted and reported as "TLS handshake failed".
    from helpers.pair import configs
    from longtls import aio
    from longtls.connection import Connection

    client_config, server_config, _ = configs()
    seen: list[str] = []

    async def handler(reader: aio.TLSReader, writer: aio.TLSWriter) -> None:
        try:
            await reader.read(100)
        except Exception as exc:
            seen.append(str(exc))
        writer.close()

    async def scenario() -> None:
        server = await aio.start_server(handler, LOOPBACK, 0, server_config)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        client = Connection(client_config)
        client.start_handshake()
        writer.write(client.data_to_send())
        while not client.handshake_complete:
            client.receive_data(await reader.read(65536))
        # Application data record header (RFC 9846 §5.2) with a body no key made.
        writer.write(client.data_to_send() + bytes([23, 3, 3, 0, 32]) + bytes(32))
        await reader.read()  # the server's alert, then its close
        writer.close()
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.05)
        server.close()

    with caplog.at_level(logging.DEBUG, logger="longtls.aio"):
        asyncio.run(asyncio.wait_for(scenario(), 30))
    assert seen and "bad_record_mac" in seen[0], seen
    assert not [r for r in caplog.records if "handshake failed" in r.getMessage()], caplog.text


def test_tunnel_listen_colon_port_accepts_on_loopback(files: PkiFiles) -> None:
    port = free_port()
    args = [
        *LONGTLS, "tunnel", "server", "--listen", f":{port}", "--forward", f"{LOOPBACK}:1",
        "--cert", str(files.server.chain), "--key", str(files.server.key),
    ]
    with start_process(args, ready_pattern=r"^longtls: tunnel server: ") as server:
        # Every interface: the loopback address among them.
        socket.create_connection((LOOPBACK, port), timeout=5).close()
        assert f":{port} -> plain TCP" in server.stderr, server.describe()
