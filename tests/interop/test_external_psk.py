"""External PSKs (RFC 9846 §4.2.11) against OpenSSL 3.0 and GnuTLS 3.7, both directions.

OpenSSL 3.0: ``s_server -psk HEX -psk_identity ID -nocert`` and ``s_client
-psk HEX -psk_identity ID`` bind the PSK to SHA-256 (they build the PSK session
with TLS_AES_128_GCM_SHA256), as longtls' default ``hash_name`` does; both
speak psk_dhe_ke only unless given ``-allow_no_dhe_kex``, which adds psk_ke.

GnuTLS: ``gnutls-serv --pskpasswd FILE`` (lines ``identity:hexkey``) and
``gnutls-cli --pskusername ID --pskkey HEX``; the priority string chooses the
mode: ``+PSK`` is psk_ke, ``+ECDHE-PSK`` psk_dhe_ke (``+DHE-PSK`` would be
psk_dhe_ke over FFDHE groups).

The longtls command line is tested here too: ``longtls serve --psk-identity
--psk-file`` (no certificate) against ``s_client -psk``, and ``longtls connect
--psk-...`` against ``s_server -psk``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpers.cli import LONGTLS, longtls, summary
from helpers.driver import LongtlsServer, SocketDriver, connect
from helpers.peers import LOOPBACK, free_port, start_process
from longtls.config import Configuration
from longtls.constants import AlertDescription, CipherSuite, NamedGroup, PskKeyExchangeMode
from longtls.events import ConnectionClosed, HandshakeComplete
from longtls.psk import ExternalPsk

KE, DHE = PskKeyExchangeMode.psk_ke, PskKeyExchangeMode.psk_dhe_ke
IDENTITY = "meter-17"
KEY = bytes.fromhex("8f2c54a1d07e6b3390c1e2f4a5b6c7d8e9fa0b1c2d3e4f5061728394a5b6c7d8")
MODES = {"psk_dhe_ke": DHE, "psk_ke": KE}
# OpenSSL's s_server/s_client offer or accept psk_ke only with this flag.
OPENSSL_MODE_FLAGS = {DHE: [], KE: ["-allow_no_dhe_kex"]}
TLS13 = "NORMAL:-VERS-ALL:+VERS-TLS1.3"
GNUTLS_KX = {DHE: TLS13 + ":-KX-ALL:+ECDHE-PSK", KE: TLS13 + ":-KX-ALL:+PSK"}


def psk_config(is_client: bool, modes: tuple[PskKeyExchangeMode, ...], key: bytes = KEY) -> Configuration:
    """longtls with only the external PSK: no certificate, no trust store needed."""
    return Configuration(
        is_client=is_client, server_name="localhost" if is_client else None,
        external_psks=[ExternalPsk(IDENTITY.encode(), key)], psk_key_exchange_modes=modes,
    )


def assert_psk_handshake(done: HandshakeComplete, mode: PskKeyExchangeMode) -> None:
    assert (done.psk, done.psk_identity, done.psk_key_exchange_mode) == ("external", IDENTITY.encode(), mode)
    assert done.peer_certificates == () and done.signature_scheme is None and not done.resumed
    assert done.cipher_suite == CipherSuite.TLS_AES_128_GCM_SHA256
    # psk_dhe_ke: a fresh (EC)DHE; psk_ke: none (RFC 9846 §4.2.9).
    assert (done.group is None) == (mode == KE)


def converse(drv: SocketDriver, echo: bool = True) -> None:
    """Data both ways, a KeyUpdate from longtls asking for one back, more data."""
    drv.send(b"1 longtls over the PSK\n")
    if echo:
        assert drv.recv_until(b"\n") == b"1 longtls over the PSK\n"
    drv.update_keys(request_peer_update=True)
    drv.send(b"2 longtls after its KeyUpdate\n")
    if echo:
        assert drv.recv_until(b"\n") == b"2 longtls after its KeyUpdate\n"
        assert [e.generation for e in drv.key_updates("receive")] == [1], drv.describe()


# ------------------------------------------------------------------ OpenSSL


def s_server(port: int, key: bytes, *extra: str) -> list[str]:
    return [
        "openssl", "s_server", "-accept", f"{LOOPBACK}:{port}", "-naccept", "1", "-tls1_3",
        "-nocert", "-psk", key.hex(), "-psk_identity", IDENTITY, *extra,
    ]  # fmt: skip


def s_client(port: int, key: bytes, identity: str, *extra: str) -> list[str]:
    return [
        "openssl", "s_client", "-connect", f"{LOOPBACK}:{port}", "-tls1_3", "-brief",
        "-psk", key.hex(), "-psk_identity", identity, *extra,
    ]  # fmt: skip


@pytest.mark.parametrize("mode", list(MODES.values()), ids=list(MODES))
def test_longtls_client_openssl_s_server(mode: PskKeyExchangeMode) -> None:
    port = free_port()
    with start_process(s_server(port, KEY, *OPENSSL_MODE_FLAGS[mode]), ready_pattern=r"^ACCEPT$") as srv:
        drv = connect(psk_config(True, (mode,)), port)
        try:
            assert_psk_handshake(drv.handshake(), mode)
            srv.write("1 s_server to longtls\n")
            assert drv.recv_until(b"\n") == b"1 s_server to longtls\n"
            drv.update_keys(request_peer_update=True)
            drv.send(b"2 longtls after its KeyUpdate\n")
            srv.wait_for_output(r"^2 longtls after its KeyUpdate$")
            srv.write("3 s_server after answering\n")
            assert drv.recv_until(b"\n") == b"3 s_server after answering\n"
        finally:
            drv.close()
        srv.wait(10)
    # s_server resumed its PSK session (what OpenSSL reports for an external PSK).
    assert "CIPHER is TLS_AES_128_GCM_SHA256" in srv.stdout, srv.describe()
    assert "Reused session-id" in srv.stdout, srv.describe()


@pytest.mark.parametrize("client_modes", [(DHE, KE), (KE, DHE)], ids=["dhe-first", "ke-first"])
def test_s_server_allowing_both_modes_chooses_psk_dhe_ke(client_modes: tuple[PskKeyExchangeMode, ...]) -> None:
    """s_server -allow_no_dhe_kex, longtls offering both modes in either order:
    OpenSSL takes psk_dhe_ke (forward secrecy) since our ClientHello has a key share."""
    port = free_port()
    with start_process(s_server(port, KEY, "-allow_no_dhe_kex"), ready_pattern=r"^ACCEPT$") as srv:
        drv = connect(psk_config(True, client_modes), port)
        try:
            assert_psk_handshake(drv.handshake(), DHE)
            converse(drv, echo=False)
            srv.wait_for_output(r"^2 longtls after its KeyUpdate$")
        finally:
            drv.close()
        srv.wait(10)


def test_longtls_client_with_the_wrong_key_is_refused_by_s_server() -> None:
    port = free_port()
    with start_process(s_server(port, KEY), ready_pattern=r"^ACCEPT$") as srv:
        drv = connect(psk_config(True, (DHE,), key=bytes(reversed(KEY))), port)
        try:
            with pytest.raises(AssertionError, match=r"illegal_parameter"):
                drv.handshake()
        finally:
            drv.sock.close()
        srv.wait_for_output(r"binder does not verify")
    # OpenSSL 3.0 answers a bad binder with illegal_parameter (RFC 9846 §6.2
    # names decrypt_error, which is what longtls sends: see the tests below).
    closed = drv.of_type(ConnectionClosed)
    assert closed and closed[0].alert == AlertDescription.illegal_parameter and closed[0].by_peer


def _serve_line(drv: SocketDriver) -> None:
    assert drv.recv_until(b"\n") == b"1 s_client to longtls\n"
    drv.send(b"2 longtls to s_client\n")
    drv.update_keys(request_peer_update=True)
    drv.send(b"3 longtls after its KeyUpdate\n")


@pytest.mark.parametrize("mode", list(MODES.values()), ids=list(MODES))
def test_openssl_s_client_longtls_server(mode: PskKeyExchangeMode) -> None:
    """A longtls server with no certificate at all, only the PSK."""
    with LongtlsServer(psk_config(False, (mode,)), _serve_line) as server:
        args = s_client(server.port, KEY, IDENTITY, *OPENSSL_MODE_FLAGS[mode])
        with start_process(args, ready_pattern=r"^CONNECTION ESTABLISHED$") as cli:
            cli.write("1 s_client to longtls\n")
            cli.wait_for_output(r"^2 longtls to s_client$")
            cli.wait_for_output(r"^3 longtls after its KeyUpdate$")
        server.join()
    assert_psk_handshake(server.handshakes[0], mode)
    report = cli.stderr
    assert "No peer certificate" in report, cli.describe()
    assert "Ciphersuite: TLS_AES_128_GCM_SHA256" in report, cli.describe()
    assert ("Server Temp Key: X25519" in report) == (mode == DHE), cli.describe()


@pytest.mark.parametrize(
    ("key", "identity", "alert", "openssl_says"),
    [
        (bytes(reversed(KEY)), IDENTITY, "decrypt_error", "alert decrypt error"),
        (KEY, "meter-18", "unknown_psk_identity", "alert unknown psk identity"),
    ],
    ids=["wrong-key", "unknown-identity"],
)
def test_longtls_server_refuses_s_client(key: bytes, identity: str, alert: str, openssl_says: str) -> None:
    server = LongtlsServer(psk_config(False, (DHE,)), _serve_line).start()
    with start_process(s_client(server.port, key, identity), ready_pattern=openssl_says) as cli:
        assert re.search(openssl_says, cli.output()), cli.describe()
    with pytest.raises(AssertionError, match=rf"\({alert}\)"):
        server.join()


# ------------------------------------------------------------------- GnuTLS


def gnutls_serv(port: int, passwd: Path, priority: str) -> list[str]:
    return ["gnutls-serv", "--echo", "--port", str(port), "--pskpasswd", str(passwd), "--priority", priority]


@pytest.mark.parametrize("mode", list(MODES.values()), ids=list(MODES))
def test_longtls_client_gnutls_serv(mode: PskKeyExchangeMode, tmp_path: Path) -> None:
    """longtls offers both modes; gnutls-serv allows one (its priority string)."""
    passwd = tmp_path / "psk.passwd"
    passwd.write_text(f"{IDENTITY}:{KEY.hex()}\n")
    port = free_port()
    with start_process(gnutls_serv(port, passwd, GNUTLS_KX[mode]), ready_pattern=r"listening on IPv4") as srv:
        drv = connect(psk_config(True, (DHE, KE)), port)
        try:
            assert_psk_handshake(drv.handshake(), mode)
            converse(drv)
        finally:
            drv.close()
        srv.wait_for_output(rf"PSK authentication\. Connected as '{IDENTITY}'")


def test_longtls_client_with_the_wrong_key_is_refused_by_gnutls_serv(tmp_path: Path) -> None:
    passwd = tmp_path / "psk.passwd"
    passwd.write_text(f"{IDENTITY}:{KEY.hex()}\n")
    port = free_port()
    with start_process(gnutls_serv(port, passwd, GNUTLS_KX[DHE]), ready_pattern=r"listening on IPv4"):
        drv = connect(psk_config(True, (DHE,), key=bytes(reversed(KEY))), port)
        try:
            with pytest.raises(AssertionError, match=r"illegal_parameter"):
                drv.handshake()
        finally:
            drv.sock.close()
    # GnuTLS 3.7, like OpenSSL 3.0, answers a bad binder with illegal_parameter.
    closed = drv.of_type(ConnectionClosed)
    assert closed and closed[0].alert == AlertDescription.illegal_parameter and closed[0].by_peer


def test_gnutls_cli_with_the_wrong_key_gets_decrypt_error_from_longtls() -> None:
    server = LongtlsServer(psk_config(False, (DHE,)), _serve_gnutls).start()
    args = [
        "gnutls-cli", "--port", str(server.port), "--priority", GNUTLS_KX[DHE],
        "--pskusername", IDENTITY, "--pskkey", bytes(reversed(KEY)).hex(), LOOPBACK,
    ]  # fmt: skip
    with start_process(args, ready_pattern=r"Received alert \[51\]: Decrypt error") as cli:
        assert "Handshake was completed" not in cli.output(), cli.describe()
    with pytest.raises(AssertionError, match=r"\(decrypt_error\)"):
        server.join()


def _serve_gnutls(drv: SocketDriver) -> None:
    assert drv.recv_until(b"\n") == b"1 gnutls-cli to longtls\n"
    drv.send(b"2 longtls to gnutls-cli\n")


@pytest.mark.parametrize("mode", list(MODES.values()), ids=list(MODES))
def test_gnutls_cli_longtls_server(mode: PskKeyExchangeMode) -> None:
    """longtls accepts both modes (psk_dhe_ke preferred); gnutls-cli offers one."""
    with LongtlsServer(psk_config(False, (DHE, KE)), _serve_gnutls) as server:
        args = [
            "gnutls-cli", "--port", str(server.port), "--priority", GNUTLS_KX[mode],
            "--pskusername", IDENTITY, "--pskkey", KEY.hex(), LOOPBACK,
        ]  # fmt: skip
        with start_process(args, ready_pattern=r"Handshake was completed") as cli:
            cli.write("1 gnutls-cli to longtls\n")
            cli.wait_for_output(r"^2 longtls to gnutls-cli$")
        server.join()
    assert_psk_handshake(server.handshakes[0], mode)
    assert f"PSK authentication. Connected as '{IDENTITY}'" in cli.stdout, cli.describe()


# ------------------------------------------------------- the longtls command line


@pytest.fixture
def psk_file(tmp_path: Path) -> Path:
    path = tmp_path / "psk.hex"
    path.write_text(KEY.hex() + "\n")
    path.chmod(0o600)
    return path


@pytest.mark.parametrize("mode", list(MODES.values()), ids=list(MODES))
def test_longtls_serve_with_psk_against_openssl_s_client(mode: PskKeyExchangeMode, psk_file: Path) -> None:
    port = free_port()
    serve = [
        *LONGTLS, "serve", "--echo", "--port", str(port),
        "--psk-identity", IDENTITY, "--psk-file", str(psk_file), "--psk-modes", mode.name,
    ]  # fmt: skip
    with start_process(serve, ready_pattern=r"^longtls: serving \(echo\)") as server:
        args = s_client(port, KEY, IDENTITY, *OPENSSL_MODE_FLAGS[mode])
        with start_process(args, ready_pattern=r"^CONNECTION ESTABLISHED$") as cli:
            cli.write("1 echoed by longtls serve\n")
            cli.wait_for_output(r"^1 echoed by longtls serve$")
        assert "Traceback" not in server.stderr, server.describe()
    assert "No peer certificate" in cli.stderr, cli.describe()
    assert ("Server Temp Key: X25519" in cli.stderr) == (mode == DHE), cli.describe()


@pytest.mark.parametrize("mode", list(MODES.values()), ids=list(MODES))
def test_longtls_connect_with_psk_against_openssl_s_server(mode: PskKeyExchangeMode, psk_file: Path) -> None:
    port = free_port()
    with start_process(s_server(port, KEY, *OPENSSL_MODE_FLAGS[mode]), ready_pattern=r"^ACCEPT$") as srv:
        result = longtls(
            "connect", f"{LOOPBACK}:{port}", "--psk-identity", IDENTITY, "--psk-file", str(psk_file),
            "--psk-modes", mode.name, "--summary", "json", input="hello over a PSK\n",
        )
        srv.wait_for_output(r"^hello over a PSK$")
    assert result.returncode == 0, result.stderr
    (handshake,) = [r for r in summary(result.stderr) if r["event"] == "handshake"]
    assert handshake["psk"] == "external"
    assert handshake["psk_identity"] == IDENTITY
    assert handshake["psk_mode"] == mode.name
    assert handshake["group"] == (None if mode == KE else NamedGroup.x25519.name)
    assert handshake["peer_subject"] is None and handshake["signature_scheme"] is None
