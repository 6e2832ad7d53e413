"""longtls against pyOpenSSL 26 on cryptography's OpenSSL 4.0.

OpenSSL 4.0 offers X25519MLKEM768 first by default, so these are the
post-quantum key exchange interop tests against a mainstream stack; the
negotiated group is asserted from longtls' HandshakeComplete event and
cross-checked with SSL_get0_group_name (Connection.get_group_name).

pyOpenSSL has no SSL_key_update binding, so OpenSSL cannot *start* a
KeyUpdate here; every test has longtls send KeyUpdate(update_requested),
which OpenSSL answers, and then moves data both ways under the new keys.
The TLS exporter (RFC 9846 §7.5) is compared on both ends as well.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from helpers.driver import (
    LongtlsServer,
    SocketDriver,
    client_config,
    connect,
    long_chain_pki,
    server_config,
)
from helpers.keyupdate import KeyUpdatePeer, SocketEnd, longtls_side, peer_side
from helpers.peers import LOOPBACK, PeerServerThread, require_module
from helpers.pki import Pki, PkiFiles
from longtls.config import ClientAuth
from longtls.constants import NamedGroup, SignatureScheme

TIMEOUT = 15

SSL = require_module("OpenSSL.SSL")
_util = require_module("OpenSSL._util")

# Groups longtls and OpenSSL 4.0 share, and their OpenSSL names.
PQ_GROUPS = {
    NamedGroup.X25519MLKEM768: "X25519MLKEM768",
    NamedGroup.SecP256r1MLKEM768: "SecP256r1MLKEM768",
    NamedGroup.SecP384r1MLKEM1024: "SecP384r1MLKEM1024",
    NamedGroup.MLKEM768: "MLKEM768",
    NamedGroup.MLKEM1024: "MLKEM1024",
}
EXPORTER_LABEL = b"EXPORTER-longtls-interop"
EXPORTER_CONTEXT = b"context bytes"


def _pki(pki: Any, key_type: str, tmp_path: Path) -> tuple[Pki, PkiFiles]:
    bundle: Pki = pki(key_type, ca_key_type="ecdsa-p256" if key_type == "ed25519" else None)
    return bundle, bundle.write_pem(tmp_path / key_type)


def _set_groups(ctx: Any, groups: str) -> None:
    assert _util.lib.SSL_CTX_set1_curves_list(ctx._context, groups.encode()) == 1, groups


def _bounded(sock: socket.socket) -> socket.socket:
    """A blocking socket whose recv/send give up after TIMEOUT (SO_RCVTIMEO),
    so a stuck peer fails the test instead of hanging it."""
    sock.settimeout(None)
    tv = struct.pack("ll", TIMEOUT, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
    return sock


def _verify_cb(_conn: Any, _cert: Any, _errno: int, _depth: int, ok: int) -> bool:
    return bool(ok)


def server_context(files: PkiFiles, *, groups: str | None = None, client_auth: bool = False) -> Any:
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
    ctx.use_certificate_chain_file(str(files.server.chain))
    ctx.use_privatekey_file(str(files.server.key))
    if client_auth:
        ctx.load_verify_locations(str(files.ca))
        ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, _verify_cb)
    if groups is not None:
        _set_groups(ctx, groups)
    return ctx


def client_context(files: PkiFiles, *, groups: str | None = None, client_cert: bool = False) -> Any:
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
    ctx.load_verify_locations(str(files.ca))
    ctx.set_verify(SSL.VERIFY_PEER, _verify_cb)
    if client_cert:
        ctx.use_certificate_chain_file(str(files.client.chain))
        ctx.use_privatekey_file(str(files.client.key))
    if groups is not None:
        _set_groups(ctx, groups)
    return ctx


def _read_line(conn: Any) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        data += conn.recv(4096)
    return data


# The KeyUpdate conversation of helpers.keyupdate, up to longtls' KeyUpdate:
# pyOpenSSL cannot start one.
OPENSSL = KeyUpdatePeer("openssl")


def _end(conn: Any) -> SocketEnd:
    return SocketEnd(conn.sendall, lambda: _read_line(conn))


def _info(conn: Any) -> dict[str, Any]:
    return {
        "version": conn.get_protocol_version_name(),
        "group": conn.get_group_name(),
        "cipher": conn.get_cipher_name(),
        "exporter": conn.export_keying_material(EXPORTER_LABEL, 32, EXPORTER_CONTEXT),
        "peer": conn.get_peer_certificate(),
    }


class PyOpenSSLServer(PeerServerThread):
    """pyOpenSSL server in a thread: one connection, ``handler(conn)``."""

    name = "pyOpenSSL"

    def __init__(self, ctx: Any, handler: Callable[[Any], Any]) -> None:
        super().__init__(1, TIMEOUT)
        self.ctx = ctx
        self.handler = handler

    def serve(self, raw: socket.socket) -> Any:
        conn = SSL.Connection(self.ctx, _bounded(raw))
        conn.set_accept_state()
        conn.do_handshake()
        result = self.handler(conn)
        conn.shutdown()
        return result


# ------------------------------------------------------------ longtls client


def pyopenssl_server_side(conn: Any) -> dict[str, Any]:
    info = _info(conn)
    end = _end(conn)
    peer_side(end, OPENSSL)
    info["lines"] = end.heard
    return info


EXPECTED_LINES = OPENSSL.lines_to_peer  # 2, 3 (after longtls' KeyUpdate), 5


def converse_as_client(drv: SocketDriver) -> None:
    longtls_side(drv, OPENSSL)


def test_longtls_client_negotiates_x25519mlkem768_with_openssl4(pki: Any, tmp_path: Path) -> None:
    """Both sides on their defaults: X25519MLKEM768 from the first key share."""
    bundle, files = _pki(pki, "ecdsa-p256", tmp_path)
    with PyOpenSSLServer(server_context(files), pyopenssl_server_side) as server:
        drv = connect(client_config(bundle.ca), server.port)
        try:
            done = drv.handshake()
            assert not done.extended_key_update  # the peer does not offer EKU
            assert done.group == NamedGroup.X25519MLKEM768, drv.describe()
            assert not drv.conn.handshake.hello_retry_seen  # type: ignore[attr-defined]
            assert done.signature_scheme == SignatureScheme.ecdsa_secp256r1_sha256
            exporter = drv.conn.export_keying_material(EXPORTER_LABEL, EXPORTER_CONTEXT, 32)
            converse_as_client(drv)
        finally:
            drv.close()
    info = server.result
    assert info["version"] == "TLSv1.3"
    assert info["group"] == "X25519MLKEM768"
    assert info["cipher"] == done.cipher_suite.name
    assert info["exporter"] == exporter
    assert info["lines"] == EXPECTED_LINES


@pytest.mark.parametrize("group", list(PQ_GROUPS), ids=[g.name for g in PQ_GROUPS])
def test_longtls_client_pq_groups_with_openssl4(pki: Any, tmp_path: Path, group: NamedGroup) -> None:
    """OpenSSL 4 server limited to one ML-KEM group; longtls' default shares
    are X25519MLKEM768 and x25519, so the others need a HelloRetryRequest."""
    bundle, files = _pki(pki, "ecdsa-p256", tmp_path)
    with PyOpenSSLServer(server_context(files, groups=PQ_GROUPS[group]), pyopenssl_server_side) as server:
        drv = connect(client_config(bundle.ca), server.port)
        try:
            done = drv.handshake()
            assert done.group == group, drv.describe()
            assert drv.conn.handshake.hello_retry_seen == (group != NamedGroup.X25519MLKEM768)  # type: ignore[attr-defined]
            exporter = drv.conn.export_keying_material(EXPORTER_LABEL, EXPORTER_CONTEXT, 32)
            converse_as_client(drv)
        finally:
            drv.close()
    assert server.result["group"] == PQ_GROUPS[group]
    assert server.result["exporter"] == exporter
    assert server.result["lines"] == EXPECTED_LINES


@pytest.mark.parametrize("key_type", ["mldsa65", "ed25519", "rsa-2048"])
def test_longtls_client_verifies_openssl4_certificate(pki: Any, tmp_path: Path, key_type: str) -> None:
    bundle, files = _pki(pki, key_type, tmp_path)
    expected = {
        "mldsa65": SignatureScheme.mldsa65, "ed25519": SignatureScheme.ed25519,
        "rsa-2048": SignatureScheme.rsa_pss_rsae_sha256,
    }[key_type]
    with PyOpenSSLServer(server_context(files), pyopenssl_server_side) as server:
        drv = connect(client_config(bundle.ca), server.port)
        try:
            done = drv.handshake()
            assert done.signature_scheme == expected
            assert done.group == NamedGroup.X25519MLKEM768
            converse_as_client(drv)
        finally:
            drv.close()
    assert server.result["lines"] == EXPECTED_LINES


def test_longtls_client_mutual_tls_with_openssl4(pki: Any, tmp_path: Path) -> None:
    bundle, files = _pki(pki, "ecdsa-p256", tmp_path)
    with PyOpenSSLServer(server_context(files, client_auth=True), pyopenssl_server_side) as server:
        drv = connect(client_config(bundle.ca, client_cert=bundle.client), server.port)
        try:
            done = drv.handshake()
            assert done.client_authenticated
            converse_as_client(drv)
        finally:
            drv.close()
    peer = server.result["peer"]
    assert peer is not None and peer.to_cryptography() == bundle.client.cert


# ------------------------------------------------------------ longtls server


def longtls_server_side(drv: SocketDriver) -> bytes:
    longtls_side(drv, OPENSSL)
    return drv.conn.export_keying_material(EXPORTER_LABEL, EXPORTER_CONTEXT, 32)


def pyopenssl_client(ctx: Any, port: int, func: Callable[[Any], Any]) -> Any:
    raw = _bounded(socket.create_connection((LOOPBACK, port), timeout=TIMEOUT))
    try:
        conn = SSL.Connection(ctx, raw)
        conn.set_connect_state()
        conn.set_tlsext_host_name(b"localhost")
        conn.do_handshake()
        return func(conn)
    finally:
        raw.close()


def converse_as_pyopenssl_client(conn: Any) -> dict[str, Any]:
    info = _info(conn)
    peer_side(_end(conn), OPENSSL)
    return info


def test_openssl4_client_negotiates_x25519mlkem768_with_longtls_server(pki: Any, tmp_path: Path) -> None:
    bundle, files = _pki(pki, "ecdsa-p256", tmp_path)
    with LongtlsServer(server_config(bundle.server), longtls_server_side) as server:
        info = pyopenssl_client(client_context(files), server.port, converse_as_pyopenssl_client)
    done = server.handshakes[0]
    assert done.group == NamedGroup.X25519MLKEM768
    assert server.driver.conn.handshake.hrr_group is None  # type: ignore[attr-defined]
    assert info["group"] == "X25519MLKEM768"
    assert info["cipher"] == done.cipher_suite.name
    assert info["exporter"] == server.result


@pytest.mark.parametrize("group", list(PQ_GROUPS), ids=[g.name for g in PQ_GROUPS])
def test_openssl4_client_pq_groups_with_longtls_server(pki: Any, tmp_path: Path, group: NamedGroup) -> None:
    """OpenSSL 4 client offering (and sharing) exactly one ML-KEM group."""
    bundle, files = _pki(pki, "ecdsa-p256", tmp_path)
    with LongtlsServer(server_config(bundle.server), longtls_server_side) as server:
        info = pyopenssl_client(
            client_context(files, groups=PQ_GROUPS[group]), server.port, converse_as_pyopenssl_client
        )
    assert server.handshakes[0].group == group
    assert info["group"] == PQ_GROUPS[group]
    assert info["exporter"] == server.result


def test_openssl4_client_hello_retry_request_to_pq_group(pki: Any, tmp_path: Path) -> None:
    """OpenSSL 4 sends X25519MLKEM768 + x25519 shares; longtls accepts only
    SecP384r1MLKEM1024 and asks for it with a HelloRetryRequest."""
    bundle, files = _pki(pki, "ecdsa-p256", tmp_path)
    cfg = server_config(bundle.server, groups=[NamedGroup.SecP384r1MLKEM1024])
    with LongtlsServer(cfg, longtls_server_side) as server:
        info = pyopenssl_client(
            client_context(files, groups="X25519MLKEM768:X25519:SecP384r1MLKEM1024"), server.port,
            converse_as_pyopenssl_client,
        )
    assert server.driver.conn.handshake.hrr_group == NamedGroup.SecP384r1MLKEM1024  # type: ignore[attr-defined]
    assert server.handshakes[0].group == NamedGroup.SecP384r1MLKEM1024
    assert info["group"] == "SecP384r1MLKEM1024"
    assert info["exporter"] == server.result


def test_openssl4_client_verifies_longtls_mldsa65_certificate(pki: Any, tmp_path: Path) -> None:
    bundle, files = _pki(pki, "mldsa65", tmp_path)
    with LongtlsServer(server_config(bundle.server), longtls_server_side) as server:
        info = pyopenssl_client(client_context(files), server.port, converse_as_pyopenssl_client)
    assert info["peer"].to_cryptography() == bundle.server.cert
    assert info["exporter"] == server.result


def test_openssl4_client_mutual_tls_with_longtls_server(pki: Any, tmp_path: Path) -> None:
    bundle, files = _pki(pki, "mldsa65", tmp_path)
    cfg = server_config(bundle.server, client_ca=bundle.ca, client_auth=ClientAuth.REQUIRED)
    with LongtlsServer(cfg, longtls_server_side) as server:
        pyopenssl_client(client_context(files, client_cert=True), server.port, converse_as_pyopenssl_client)
    done = server.handshakes[0]
    assert done.client_authenticated
    assert done.signature_scheme == SignatureScheme.mldsa65
    assert done.peer_certificates[0] == bundle.client.cert


# ----------------------------------------------------------- edge cases


def _big_mldsa87_pki(tmp_path: Path) -> tuple[Pki, PkiFiles]:
    """ML-DSA-87 root, two intermediates, leaves: Certificate messages of ~22 KB."""
    bundle = long_chain_pki("mldsa87", intermediates=2)
    return bundle, bundle.write_pem(tmp_path / "mldsa87-chain")


def test_longtls_client_verifies_openssl4_mldsa87_chain_over_two_records(pki: Any, tmp_path: Path) -> None:
    """OpenSSL 4 sends a ~22 KB Certificate (ML-DSA-87 leaf + 2 intermediates)
    over two records; longtls reassembles and verifies it, and answers a
    CertificateRequest with a chain just as large."""
    bundle, files = _big_mldsa87_pki(tmp_path)
    with PyOpenSSLServer(server_context(files, client_auth=True), pyopenssl_server_side) as server:
        drv = connect(client_config(bundle.ca, client_cert=bundle.client), server.port)
        try:
            done = drv.handshake()
            assert done.signature_scheme == SignatureScheme.mldsa87
            assert list(done.peer_certificates) == bundle.server.chain
            assert done.client_authenticated
            converse_as_client(drv)
        finally:
            drv.close()
    assert server.result["peer"].to_cryptography() == bundle.client.cert
    assert server.result["lines"] == EXPECTED_LINES


def test_openssl4_client_verifies_longtls_mldsa87_chain_over_two_records(pki: Any, tmp_path: Path) -> None:
    bundle, files = _big_mldsa87_pki(tmp_path)
    cfg = server_config(bundle.server, client_ca=bundle.ca, client_auth=ClientAuth.REQUIRED)
    with LongtlsServer(cfg, longtls_server_side) as server:
        info = pyopenssl_client(client_context(files, client_cert=True), server.port, converse_as_pyopenssl_client)
    assert info["peer"].to_cryptography() == bundle.server.cert
    done = server.handshakes[0]
    assert done.client_authenticated and done.signature_scheme == SignatureScheme.mldsa87
    assert list(done.peer_certificates) == bundle.client.chain


def test_longtls_client_resumes_with_openssl4_ticket(pki: Any, tmp_path: Path) -> None:
    import dataclasses

    bundle, files = _pki(pki, "ecdsa-p256", tmp_path)
    cfg = client_config(bundle.ca)
    ctx = server_context(files)
    tickets: list[Any] = []
    for attempt in range(2):
        with PyOpenSSLServer(ctx, pyopenssl_server_side) as server:
            c = cfg if not tickets else dataclasses.replace(cfg, session_ticket=tickets[0].ticket)
            drv = connect(c, server.port)
            try:
                done = drv.handshake()
                assert done.resumed == (attempt == 1), drv.describe()
                assert done.group == NamedGroup.X25519MLKEM768
                converse_as_client(drv)
                if not tickets:
                    tickets = drv.wait_for_tickets(1)
            finally:
                drv.close()
        assert server.result["lines"] == EXPECTED_LINES


def test_openssl4_client_resumes_with_longtls_ticket(pki: Any, tmp_path: Path) -> None:
    bundle, files = _pki(pki, "ecdsa-p256", tmp_path)
    ctx = client_context(files)
    sessions: list[Any] = []

    def resume(conn: Any) -> dict[str, Any]:
        info = converse_as_pyopenssl_client(conn)
        info["reused"] = _util.lib.SSL_session_reused(conn._ssl) == 1
        sessions.append(conn.get_session())
        # OpenSSL marks a session not resumable when its connection ends
        # without close_notify.
        conn.shutdown()
        return info

    def connect_with_session(port: int) -> dict[str, Any]:
        raw = _bounded(socket.create_connection((LOOPBACK, port), timeout=TIMEOUT))
        try:
            conn = SSL.Connection(ctx, raw)
            conn.set_connect_state()
            conn.set_tlsext_host_name(b"localhost")
            if sessions:
                conn.set_session(sessions[-1])
            conn.do_handshake()
            return resume(conn)
        finally:
            raw.close()

    with LongtlsServer(server_config(bundle.server), longtls_server_side, accept=2) as server:
        first = connect_with_session(server.port)
        second = connect_with_session(server.port)
    assert [first["reused"], second["reused"]] == [False, True]
    assert [h.resumed for h in server.handshakes] == [False, True]
    assert second["exporter"] == server.results[1]
