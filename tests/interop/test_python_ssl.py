"""longtls against Python's own ``ssl`` module (the interpreter's OpenSSL 3.0).

``ssl`` cannot start a KeyUpdate (no SSL_key_update binding), but its OpenSSL
answers one: every test has longtls send KeyUpdate(update_requested) and then
moves data both ways under the new keys.  Groups are chosen with
``SSLContext.set_ecdh_curve``, which in OpenSSL 3.0 restricts the TLS 1.3 groups
list to that one curve.
"""

from __future__ import annotations

import dataclasses
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from helpers.driver import LongtlsServer, SocketDriver, client_config, connect, server_config
from helpers.keyupdate import KeyUpdatePeer, SocketEnd, longtls_side, peer_side
from helpers.peers import LOOPBACK, PeerServerThread
from helpers.pki import Pki, PkiFiles
from longtls.config import ClientAuth
from longtls.constants import CipherSuite, NamedGroup, SignatureScheme

TIMEOUT = 15.0

KEY_TYPES = ["rsa-2048", "ecdsa-p256", "ed25519"]
# See test_openssl.py: longtls refuses Ed25519 CA keys (Web PKI profile).
CA_KEY_TYPE = {"ed25519": "ecdsa-p256"}
EXPECTED_SCHEME = {
    "rsa-2048": SignatureScheme.rsa_pss_rsae_sha256,
    "ecdsa-p256": SignatureScheme.ecdsa_secp256r1_sha256,
    "ed25519": SignatureScheme.ed25519,
}
# longtls group -> the curve name set_ecdh_curve takes
CURVES = {
    NamedGroup.x25519: "X25519",
    NamedGroup.secp256r1: "prime256v1",
    NamedGroup.secp384r1: "secp384r1",
}


def _pki(pki: Any, key_type: str, tmp_path: Path) -> tuple[Pki, PkiFiles]:
    bundle: Pki = pki(key_type, ca_key_type=CA_KEY_TYPE.get(key_type))
    return bundle, bundle.write_pem(tmp_path / key_type)


def _server_context(files: PkiFiles, *, client_auth: bool = False, curve: str | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(files.server.chain, files.server.key)
    if client_auth:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(files.ca)
    if curve is not None:
        ctx.set_ecdh_curve(curve)
    return ctx


def _client_context(files: PkiFiles, *, client_cert: bool = False, curve: str | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(files.ca)
    if client_cert:
        ctx.load_cert_chain(files.client.chain, files.client.key)
    if curve is not None:
        ctx.set_ecdh_curve(curve)
    return ctx


def _read_line(sock: ssl.SSLSocket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            raise AssertionError(f"ssl peer saw EOF after {data!r}")
        data += chunk
    return data


# The KeyUpdate conversation of helpers.keyupdate, up to longtls' KeyUpdate:
# ssl cannot start one.
PYTHON_SSL = KeyUpdatePeer("ssl")


def _end(s: ssl.SSLSocket) -> SocketEnd:
    return SocketEnd(s.sendall, lambda: _read_line(s))


class SSLServer(PeerServerThread):
    """A Python ``ssl`` server in a thread: accepts ``accept`` connections and
    runs ``handler(sslsock)`` on each; results and the first error are kept."""

    name = "Python ssl"

    def __init__(self, ctx: ssl.SSLContext, handler: Callable[[ssl.SSLSocket], Any], accept: int = 1) -> None:
        super().__init__(accept, TIMEOUT)
        self.ctx = ctx
        self.handler = handler

    def serve(self, raw: socket.socket) -> Any:
        with self.ctx.wrap_socket(raw, server_side=True) as s:
            result = self.handler(s)
            try:
                s.unwrap()
            except (OSError, ssl.SSLError):
                pass
        return result


# ------------------------------------------------------------ longtls client


def ssl_server_side(s: ssl.SSLSocket) -> dict[str, Any]:
    """Python ssl side of converse_as_client."""
    info = {
        "version": s.version(), "cipher": s.cipher(), "reused": s.session_reused,
        "peercert": s.getpeercert(),
    }
    end = _end(s)
    peer_side(end, PYTHON_SSL)
    info["lines"] = end.heard
    return info


def converse_as_client(drv: SocketDriver) -> None:
    longtls_side(drv, PYTHON_SSL)


EXPECTED_SSL_LINES = PYTHON_SSL.lines_to_peer  # 2, 3 (after longtls' KeyUpdate), 5


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_longtls_client_python_ssl_server(pki: Any, tmp_path: Path, key_type: str) -> None:
    bundle, files = _pki(pki, key_type, tmp_path)
    with SSLServer(_server_context(files), ssl_server_side) as server:
        drv = connect(client_config(bundle.ca), server.port)
        try:
            done = drv.handshake()
            assert not done.extended_key_update  # the peer does not offer EKU
            assert done.version == "TLSv1.3"
            # OpenSSL 3.0 ignores X25519MLKEM768 and takes the x25519 share.
            assert done.group == NamedGroup.x25519
            assert done.signature_scheme == EXPECTED_SCHEME[key_type]
            assert done.peer_certificates[0] == bundle.server.cert
            converse_as_client(drv)
        finally:
            drv.close()
    info = server.results[0]
    assert info["version"] == "TLSv1.3"
    assert info["cipher"][0] == done.cipher_suite.name
    assert info["lines"] == EXPECTED_SSL_LINES


@pytest.mark.parametrize("group", list(CURVES), ids=[g.name for g in CURVES])
def test_longtls_client_python_ssl_server_groups(pki: Any, tmp_path: Path, group: NamedGroup) -> None:
    """ssl server restricted to one classic group; longtls' default key shares
    (X25519MLKEM768, x25519) need a HelloRetryRequest for the NIST curves."""
    bundle, files = _pki(pki, "ecdsa-p256", tmp_path)
    with SSLServer(_server_context(files, curve=CURVES[group]), ssl_server_side) as server:
        drv = connect(client_config(bundle.ca), server.port)
        try:
            done = drv.handshake()
            assert done.group == group
            assert drv.conn.handshake.hello_retry_seen == (group != NamedGroup.x25519)  # type: ignore[attr-defined]
            converse_as_client(drv)
        finally:
            drv.close()
    assert server.results[0]["lines"] == EXPECTED_SSL_LINES


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_longtls_client_mutual_tls_with_python_ssl_server(pki: Any, tmp_path: Path, key_type: str) -> None:
    bundle, files = _pki(pki, key_type, tmp_path)
    with SSLServer(_server_context(files, client_auth=True), ssl_server_side) as server:
        drv = connect(client_config(bundle.ca, client_cert=bundle.client), server.port)
        try:
            done = drv.handshake()
            assert done.client_authenticated
            converse_as_client(drv)
        finally:
            drv.close()
    info = server.results[0]
    subject = dict(x[0] for x in info["peercert"]["subject"])
    assert subject["commonName"] == "localhost"
    assert info["lines"] == EXPECTED_SSL_LINES


def test_longtls_client_resumes_with_python_ssl_ticket(pki: Any, tmp_path: Path) -> None:
    bundle, files = _pki(pki, "ecdsa-p256", tmp_path)
    cfg = client_config(bundle.ca)
    with SSLServer(_server_context(files), ssl_server_side, accept=2) as server:
        first = connect(cfg, server.port)
        try:
            assert not first.handshake().resumed
            converse_as_client(first)
            tickets = first.wait_for_tickets(1)
        finally:
            first.close()
        second = connect(dataclasses.replace(cfg, session_ticket=tickets[0].ticket), server.port)
        try:
            done = second.handshake()
            assert done.resumed, second.describe()
            assert done.signature_scheme is None
            converse_as_client(second)
        finally:
            second.close()
    assert [r["reused"] for r in server.results] == [False, True]


# ------------------------------------------------------------ longtls server


def longtls_server_side(drv: SocketDriver) -> None:
    """longtls side of converse_as_ssl_client (runs in the server thread)."""
    longtls_side(drv, PYTHON_SSL)


def converse_as_ssl_client(s: ssl.SSLSocket) -> None:
    peer_side(_end(s), PYTHON_SSL)


def _ssl_connect(ctx: ssl.SSLContext, port: int, session: ssl.SSLSession | None = None) -> ssl.SSLSocket:
    raw = socket.create_connection((LOOPBACK, port), timeout=TIMEOUT)
    return ctx.wrap_socket(raw, server_hostname="localhost", session=session)


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_python_ssl_client_longtls_server(pki: Any, tmp_path: Path, key_type: str) -> None:
    bundle, files = _pki(pki, key_type, tmp_path)
    with (
        LongtlsServer(server_config(bundle.server), longtls_server_side) as server,
        _ssl_connect(_client_context(files), server.port) as s,
    ):
        assert s.version() == "TLSv1.3"
        assert s.getpeercert()["subject"]
        converse_as_ssl_client(s)
        cipher = s.cipher()
    done = server.handshakes[0]
    assert done.group == NamedGroup.x25519  # ssl's first key share
    assert done.server_name == "localhost"
    assert cipher is not None and cipher[0] == done.cipher_suite.name


@pytest.mark.parametrize("group", list(CURVES), ids=[g.name for g in CURVES])
def test_python_ssl_client_longtls_server_groups(pki: Any, tmp_path: Path, group: NamedGroup) -> None:
    bundle, files = _pki(pki, "ecdsa-p256", tmp_path)
    with (
        LongtlsServer(server_config(bundle.server), longtls_server_side) as server,
        _ssl_connect(_client_context(files, curve=CURVES[group]), server.port) as s,
    ):
        converse_as_ssl_client(s)
    assert server.handshakes[0].group == group
    assert server.driver.conn.handshake.hrr_group is None  # type: ignore[attr-defined]


# Python's ssl module cannot enable the TLS 1.3 CCM suites (it has no
# set_ciphersuites); they are tested with openssl in test_groups_suites.py.
SSL_SUITES = [s for s in CipherSuite if "CCM" not in s.name]


@pytest.mark.parametrize("suite", SSL_SUITES, ids=[s.name for s in SSL_SUITES])
def test_python_ssl_client_longtls_server_cipher_suites(pki: Any, tmp_path: Path, suite: CipherSuite) -> None:
    """longtls picks the suite: the only one it is configured with."""
    bundle, files = _pki(pki, "ecdsa-p256", tmp_path)
    with (
        LongtlsServer(server_config(bundle.server, cipher_suites=[suite]), longtls_server_side) as server,
        _ssl_connect(_client_context(files), server.port) as s,
    ):
        converse_as_ssl_client(s)
        cipher = s.cipher()
    assert server.handshakes[0].cipher_suite == suite
    assert cipher is not None and cipher[0] == suite.name


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_python_ssl_client_mutual_tls_with_longtls_server(pki: Any, tmp_path: Path, key_type: str) -> None:
    bundle, files = _pki(pki, key_type, tmp_path)
    cfg = server_config(bundle.server, client_ca=bundle.ca, client_auth=ClientAuth.REQUIRED)
    with (
        LongtlsServer(cfg, longtls_server_side) as server,
        _ssl_connect(_client_context(files, client_cert=True), server.port) as s,
    ):
        converse_as_ssl_client(s)
    done = server.handshakes[0]
    assert done.client_authenticated
    assert done.signature_scheme == EXPECTED_SCHEME[key_type]
    assert done.peer_certificates[0] == bundle.client.cert


def test_python_ssl_client_resumes_with_longtls_ticket(pki: Any, tmp_path: Path) -> None:
    bundle, files = _pki(pki, "ecdsa-p256", tmp_path)
    ctx = _client_context(files)
    with LongtlsServer(server_config(bundle.server), longtls_server_side, accept=2) as server:
        with _ssl_connect(ctx, server.port) as s:
            converse_as_ssl_client(s)  # reading the data also read the tickets
            session = s.session
            assert not s.session_reused
        assert session is not None and session.has_ticket
        with _ssl_connect(ctx, server.port, session=session) as s2:
            converse_as_ssl_client(s2)
            reused = s2.session_reused
    first, second = server.handshakes
    assert not first.resumed
    assert second.resumed
    assert reused


# ----------------------------------------------------------- edge cases


def test_python_ssl_client_hello_retry_then_resumption(pki: Any, tmp_path: Path) -> None:
    """longtls accepts only secp384r1; ssl's first ClientHello shares x25519,
    so both the full and the resumed handshake need a HelloRetryRequest."""
    bundle, files = _pki(pki, "ecdsa-p256", tmp_path)
    ctx = _client_context(files)
    cfg = server_config(bundle.server, groups=[NamedGroup.secp384r1])
    with LongtlsServer(cfg, longtls_server_side, accept=2) as server:
        with _ssl_connect(ctx, server.port) as s:
            converse_as_ssl_client(s)
            session = s.session
        with _ssl_connect(ctx, server.port, session=session) as s2:
            converse_as_ssl_client(s2)
            reused = s2.session_reused
    assert reused
    assert [d.conn.handshake.hrr_group for d in server.drivers] == [NamedGroup.secp384r1] * 2  # type: ignore[attr-defined]
    assert [h.resumed for h in server.handshakes] == [False, True]


def test_python_ssl_large_transfer(pki: Any, tmp_path: Path) -> None:
    """1 MB each way through ssl and a longtls server."""
    bundle, files = _pki(pki, "ecdsa-p256", tmp_path)
    blob = bytes(range(256)) * 4096  # 1 MiB

    def handler(drv: SocketDriver) -> None:
        data = drv.recv_exactly(len(blob), timeout=30)
        assert data == blob
        drv.send(blob[::-1])

    with (

        LongtlsServer(server_config(bundle.server), handler, timeout=30) as server,

        _ssl_connect(_client_context(files), server.port) as s,

    ):
        s.sendall(blob)
        got = b""
        while len(got) < len(blob):
            chunk = s.recv(65536)
            assert chunk, f"EOF after {len(got)} bytes"
            got += chunk
    assert got == blob[::-1]


def test_python_ssl_tls12_only_client_is_refused(pki: Any, tmp_path: Path) -> None:
    """longtls speaks only TLS 1.3: a TLS 1.2-only ssl client gets protocol_version."""
    bundle, files = _pki(pki, "ecdsa-p256", tmp_path)
    ctx = _client_context(files)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    server = LongtlsServer(server_config(bundle.server)).start()
    with pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION"):
        _ssl_connect(ctx, server.port)
    with pytest.raises(AssertionError, match=r"protocol_version"):
        server.join()


def test_longtls_client_refused_by_tls12_only_ssl_server(pki: Any, tmp_path: Path) -> None:
    """A TLS 1.2-only ssl server cannot agree on anything with longtls (it
    offers only TLS 1.3 and its suites): the handshake fails with an alert,
    never a TLS 1.2 session."""
    from longtls.events import ConnectionClosed

    bundle, files = _pki(pki, "ecdsa-p256", tmp_path)
    ctx = _server_context(files)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2

    def never(_s: ssl.SSLSocket) -> None:
        raise AssertionError("the TLS 1.2 server completed a handshake with longtls")

    server = SSLServer(ctx, never)
    server.thread.start()
    drv = connect(client_config(bundle.ca), server.port)
    try:
        with pytest.raises(AssertionError):
            drv.handshake()
        closed = drv.of_type(ConnectionClosed)
        assert closed and closed[0].alert is not None, drv.describe()
    finally:
        drv.sock.close()
        server.thread.join(TIMEOUT)
    assert isinstance(server.error, ssl.SSLError), server.error
