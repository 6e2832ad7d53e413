"""longtls against tlslite-ng 0.9.0b2 with kyber-py (ML-KEM) and dilithium-py (ML-DSA).

The hybrid ML-KEM groups (SecP256r1MLKEM768, X25519MLKEM768,
SecP384r1MLKEM1024) in both directions, ML-DSA-65 certificates in both
directions (longtls serving one, longtls verifying tlslite's), and KeyUpdate
in both directions: tlslite can send one (send_keyupdate_request) and answers
longtls' request.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
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
from helpers.pki import Credential, Pki
from longtls.config import ClientAuth
from longtls.constants import NamedGroup, SignatureScheme

TIMEOUT = 30.0

tlslite = require_module("tlslite.api")
tls_constants = require_module("tlslite.constants")
tls_compat = require_module("tlslite.utils.compat")
KeyUpdateMessageType = tls_constants.KeyUpdateMessageType

# longtls group -> tlslite-ng curve name
HYBRIDS = {
    NamedGroup.SecP256r1MLKEM768: "secp256r1mlkem768",
    NamedGroup.X25519MLKEM768: "x25519mlkem768",
    NamedGroup.SecP384r1MLKEM1024: "secp384r1mlkem1024",
}


@pytest.fixture(autouse=True)
def _pq_available() -> None:
    assert tls_compat.ML_KEM_AVAILABLE, "kyber-py not importable: run `make venv`"
    assert tls_compat.ML_DSA_AVAILABLE, "dilithium-py not importable: run `make venv`"


def _chain(cred: Credential) -> Any:
    chain = tlslite.X509CertChain()
    chain.parsePemList(cred.chain_pem().decode())
    return chain


def _key(cred: Credential) -> Any:
    return tlslite.parsePEMKey(cred.key_pem().decode(), private=True)


def _settings(groups: list[str] | None = None, key_shares: list[str] | None = None) -> Any:
    s = tlslite.HandshakeSettings()
    s.minVersion = (3, 4)
    s.maxVersion = (3, 4)
    if groups is not None:
        s.eccCurves = list(groups)
        # tlslite insists that every default key share is an enabled group
        s.keyShares = [g for g in s.keyShares if g in groups]
    if key_shares is not None:
        s.keyShares = list(key_shares)
    return s


def _read_line(conn: Any) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.read(max=4096, min=1)
        if not chunk:
            raise AssertionError(f"tlslite saw EOF after {data!r}")
        data += bytes(chunk)
    return data


def _key_update(conn: Any, requested: bool) -> None:
    kind = KeyUpdateMessageType.update_requested if requested else KeyUpdateMessageType.update_not_requested
    for _ in conn.send_keyupdate_request(kind):
        pass


# The KeyUpdate conversation of helpers.keyupdate, both directions: tlslite
# starts a KeyUpdate(update_requested) of its own after answering longtls'.
TLSLITE = KeyUpdatePeer("tlslite", starts_key_update=True)


def _end(conn: Any) -> SocketEnd:
    return SocketEnd(conn.write, lambda: _read_line(conn), lambda requested: _key_update(conn, requested))


def _info(conn: Any) -> dict[str, Any]:
    session = conn.session
    return {
        "version": conn.version,
        "cipher": session.cipherSuite,
        "server_sigalg": conn.serverSigAlg,
        "server_chain": session.serverCertChain,
        "client_chain": session.clientCertChain,
        "resumed": conn.resumed,
    }


def _der(chain: Any) -> bytes:
    return bytes(chain.x509List[0].bytes)


class TlsliteServer(PeerServerThread):
    """tlslite-ng server in a thread: ``accept`` connections, each handshaken
    and then given to ``handler(conn)``; ``results`` holds what it returned."""

    name = "tlslite-ng"

    def __init__(
        self, cred: Credential, handler: Callable[[Any], Any], settings: Any, req_cert: bool = False,
        accept: int = 1,
    ) -> None:
        super().__init__(accept, TIMEOUT)
        self.handler = handler
        self.settings = settings
        self.req_cert = req_cert
        self.chain, self.key = _chain(cred), _key(cred)

    def serve(self, raw: socket.socket) -> Any:
        conn = tlslite.TLSConnection(raw)
        conn.handshakeServer(
            certChain=self.chain, privateKey=self.key, settings=self.settings, reqCert=self.req_cert,
        )
        result = self.handler(conn)
        conn.close()
        return result


# ------------------------------------------------------------ longtls client


def tlslite_server_side(conn: Any) -> dict[str, Any]:
    info = _info(conn)
    end = _end(conn)
    peer_side(end, TLSLITE)
    info["lines"] = end.heard
    return info


EXPECTED_TLSLITE_LINES = TLSLITE.lines_to_peer  # 2, 3, 5, 7


def converse_as_client(drv: SocketDriver) -> None:
    longtls_side(drv, TLSLITE)


def _run_longtls_client(bundle: Pki, settings: Any, *, server: Credential | None = None,
                        **cfg: Any) -> tuple[Any, SocketDriver, dict[str, Any]]:
    with TlsliteServer(server or bundle.server, tlslite_server_side, settings,
                       req_cert="client_cert" in cfg) as srv:
        drv = connect(client_config(bundle.ca, **cfg), srv.port, timeout=TIMEOUT)
        try:
            done = drv.handshake()
            assert not done.extended_key_update  # the peer does not offer EKU
            converse_as_client(drv)
        finally:
            drv.close()
    info = srv.result
    assert info["version"] == (3, 4)
    assert info["lines"] == EXPECTED_TLSLITE_LINES
    return done, drv, info


@pytest.mark.parametrize("group", list(HYBRIDS), ids=[g.name for g in HYBRIDS])
def test_longtls_client_hybrid_group_with_tlslite_server(pki: Any, group: NamedGroup) -> None:
    """tlslite server accepting only one hybrid; longtls' default key shares
    (X25519MLKEM768, x25519) need a HelloRetryRequest for the other two."""
    bundle = pki("ecdsa-p256")
    done, drv, _ = _run_longtls_client(bundle, _settings(groups=[HYBRIDS[group]]))
    assert done.group == group, drv.describe()
    assert drv.conn.handshake.hello_retry_seen == (group != NamedGroup.X25519MLKEM768)  # type: ignore[attr-defined]
    assert done.signature_scheme == SignatureScheme.ecdsa_secp256r1_sha256


@pytest.mark.parametrize("group", list(HYBRIDS), ids=[g.name for g in HYBRIDS])
def test_longtls_client_hybrid_key_share_without_retry(pki: Any, group: NamedGroup) -> None:
    """longtls sends a key share for exactly the hybrid tlslite wants."""
    bundle = pki("ecdsa-p256")
    done, drv, _ = _run_longtls_client(
        bundle, _settings(groups=[HYBRIDS[group]]), key_share_groups=[group], groups=[group]
    )
    assert done.group == group
    assert not drv.conn.handshake.hello_retry_seen  # type: ignore[attr-defined]


def test_longtls_client_verifies_tlslite_mldsa65_server(pki: Any) -> None:
    """tlslite serves an ML-DSA-65 chain; longtls verifies chain and CertificateVerify."""
    bundle = pki("mldsa65")
    done, _, info = _run_longtls_client(bundle, _settings())
    assert done.signature_scheme == SignatureScheme.mldsa65
    assert done.peer_certificates[0] == bundle.server.cert
    assert done.group == NamedGroup.X25519MLKEM768
    assert info["server_sigalg"] == tls_constants.SignatureScheme.mldsa65


def test_longtls_client_mldsa65_certificate_to_tlslite_server(pki: Any) -> None:
    """Mutual TLS with ML-DSA-65 on both sides."""
    bundle = pki("mldsa65")
    done, _, info = _run_longtls_client(bundle, _settings(), client_cert=bundle.client)
    assert done.client_authenticated
    assert info["client_chain"] is not None
    assert _der(info["client_chain"]) == bundle.client.cert.public_bytes(_DER)


# ------------------------------------------------------------ longtls server

from cryptography.hazmat.primitives.serialization import Encoding  # noqa: E402

_DER = Encoding.DER


def longtls_server_side(drv: SocketDriver) -> None:
    longtls_side(drv, TLSLITE)


def converse_as_tlslite_client(conn: Any) -> None:
    peer_side(_end(conn), TLSLITE)


def _run_tlslite_client(
    cfg: Any, settings: Any, client_cred: Credential | None = None
) -> tuple[LongtlsServer, dict[str, Any]]:
    with LongtlsServer(cfg, longtls_server_side, timeout=TIMEOUT) as server:
        raw = socket.create_connection((LOOPBACK, server.port), timeout=TIMEOUT)
        try:
            conn = tlslite.TLSConnection(raw)
            kwargs: dict[str, Any] = {}
            if client_cred is not None:
                kwargs = {"certChain": _chain(client_cred), "privateKey": _key(client_cred)}
            conn.handshakeClientCert(settings=settings, serverName="localhost", **kwargs)
            info = _info(conn)
            converse_as_tlslite_client(conn)
            conn.close()
        finally:
            raw.close()
    assert info["version"] == (3, 4)
    return server, info


@pytest.mark.parametrize("group", list(HYBRIDS), ids=[g.name for g in HYBRIDS])
def test_tlslite_client_hybrid_group_with_longtls_server(pki: Any, group: NamedGroup) -> None:
    bundle = pki("ecdsa-p256")
    settings = _settings(groups=[HYBRIDS[group]], key_shares=[HYBRIDS[group]])
    server, info = _run_tlslite_client(server_config(bundle.server), settings)
    assert server.handshakes[0].group == group
    assert server.driver.conn.handshake.hrr_group is None  # type: ignore[attr-defined]
    assert _der(info["server_chain"]) == bundle.server.cert.public_bytes(_DER)


def test_tlslite_client_default_shares_with_longtls_server(pki: Any) -> None:
    """tlslite's defaults share x25519mlkem768, secp256r1 and x25519: longtls
    prefers X25519MLKEM768."""
    bundle = pki("ecdsa-p256")
    server, _ = _run_tlslite_client(server_config(bundle.server), _settings())
    assert server.handshakes[0].group == NamedGroup.X25519MLKEM768


@pytest.mark.parametrize("group", [NamedGroup.SecP256r1MLKEM768, NamedGroup.SecP384r1MLKEM1024],
                         ids=["SecP256r1MLKEM768", "SecP384r1MLKEM1024"])
def test_longtls_server_hello_retry_request_to_hybrid(pki: Any, group: NamedGroup) -> None:
    """tlslite shares only x25519; longtls accepts only a hybrid and retries."""
    bundle = pki("ecdsa-p256")
    settings = _settings(groups=["x25519", HYBRIDS[group]], key_shares=["x25519"])
    server, _ = _run_tlslite_client(server_config(bundle.server, groups=[group]), settings)
    assert server.driver.conn.handshake.hrr_group == group  # type: ignore[attr-defined]
    assert server.handshakes[0].group == group


def test_tlslite_client_verifies_longtls_mldsa65_server(pki: Any) -> None:
    """longtls serves an ML-DSA-65 chain and signs CertificateVerify with ML-DSA-65."""
    bundle = pki("mldsa65")
    server, info = _run_tlslite_client(server_config(bundle.server), _settings())
    assert info["server_sigalg"] == tls_constants.SignatureScheme.mldsa65
    assert _der(info["server_chain"]) == bundle.server.cert.public_bytes(_DER)
    assert server.handshakes[0].group == NamedGroup.X25519MLKEM768


def test_tlslite_client_mldsa65_mutual_tls_with_longtls_server(pki: Any) -> None:
    bundle = pki("mldsa65")
    cfg = server_config(bundle.server, client_ca=bundle.ca, client_auth=ClientAuth.REQUIRED)
    server, _ = _run_tlslite_client(cfg, _settings(), client_cred=bundle.client)
    done = server.handshakes[0]
    assert done.client_authenticated
    assert done.signature_scheme == SignatureScheme.mldsa65
    assert done.peer_certificates[0] == bundle.client.cert


# ----------------------------------------------------------- edge cases
#
# record_size_limit (tlslite implements RFC 8449), resumption with tlslite's
# tickets and with longtls' (also after a HelloRetryRequest), and a
# Certificate message too large for one record (ML-DSA-87 leaf and two
# ML-DSA-87 intermediates).


def _mldsa87_chain_pki() -> Pki:
    """ML-DSA-87 root, two intermediates and leaves: the server's Certificate
    message is about 22 KB, over two records."""
    return long_chain_pki("mldsa87", intermediates=2)


def test_longtls_client_record_size_limit_with_tlslite(pki: Any) -> None:
    """tlslite server limits longtls to 256-byte records, longtls limits
    tlslite to 512; 5 KB each way plus the usual KeyUpdates."""
    from longtls.events import ApplicationData

    bundle = pki("ecdsa-p256")
    big = b"8" * 5000 + b"\n"

    def handler(conn: Any) -> dict[str, Any]:
        conn.write(_read_line(conn))  # echo the big line
        return tlslite_server_side(conn)

    settings = _settings()
    settings.record_size_limit = 256
    with TlsliteServer(bundle.server, handler, settings) as srv:
        drv = connect(client_config(bundle.ca, record_size_limit=512), srv.port, timeout=TIMEOUT)
        try:
            drv.handshake()
            assert drv.conn.peer_record_size_limit == 256
            drv.send(big)
            assert drv.recv_until(b"\n") == big
            converse_as_client(drv)
        finally:
            drv.close()
    assert max(len(e.data) for e in drv.of_type(ApplicationData)) <= 511
    assert srv.result["lines"] == EXPECTED_TLSLITE_LINES


def test_tlslite_client_record_size_limit_with_longtls_server(pki: Any) -> None:
    bundle = pki("ecdsa-p256")
    big = b"9" * 5000 + b"\n"

    def handler(drv: SocketDriver) -> int:
        assert drv.recv_until(b"\n") == big
        drv.send(big)
        longtls_server_side(drv)
        return drv.conn.peer_record_size_limit

    settings = _settings()
    settings.record_size_limit = 300
    with LongtlsServer(server_config(bundle.server, record_size_limit=400), handler, timeout=TIMEOUT) as server:
        raw = socket.create_connection((LOOPBACK, server.port), timeout=TIMEOUT)
        try:
            conn = tlslite.TLSConnection(raw)
            conn.handshakeClientCert(settings=settings, serverName="localhost")
            conn.write(big)
            assert _read_line(conn) == big
            converse_as_tlslite_client(conn)
            conn.close()
        finally:
            raw.close()
    assert server.result == 300


def test_longtls_client_resumes_with_tlslite_ticket(pki: Any) -> None:
    import dataclasses
    import os

    bundle = pki("ecdsa-p256")
    settings = _settings()
    settings.ticketKeys = [os.urandom(32)]
    cfg = client_config(bundle.ca)
    with TlsliteServer(bundle.server, tlslite_server_side, settings, accept=2) as srv:
        first = connect(cfg, srv.port, timeout=TIMEOUT)
        try:
            assert not first.handshake().resumed
            converse_as_client(first)
            tickets = first.wait_for_tickets(1)
        finally:
            first.close()
        second = connect(dataclasses.replace(cfg, session_ticket=tickets[0].ticket), srv.port, timeout=TIMEOUT)
        try:
            done = second.handshake()
            assert done.resumed, second.describe()
            assert done.signature_scheme is None
            converse_as_client(second)
        finally:
            second.close()
    # tlslite-ng's server reports conn.resumed == False for TLS 1.3 PSK
    # handshakes; longtls saw no Certificate/CertificateVerify above.
    assert len(srv.results) == 2


@pytest.mark.parametrize("hrr", [False, True], ids=["no-retry", "after-HelloRetryRequest"])
def test_tlslite_client_resumes_with_longtls_ticket(pki: Any, hrr: bool) -> None:
    """tlslite resumes with longtls' ticket; with ``hrr`` longtls accepts only
    SecP384r1MLKEM1024, which tlslite never sends a share for, so both
    handshakes see a HelloRetryRequest and the binder covers it."""
    bundle = pki("ecdsa-p256")
    groups = [NamedGroup.SecP384r1MLKEM1024] if hrr else list(server_config(bundle.server).groups)
    cfg = server_config(bundle.server, groups=groups)
    with LongtlsServer(cfg, longtls_server_side, accept=2, timeout=TIMEOUT) as server:
        session = None
        infos = []
        for _ in range(2):
            raw = socket.create_connection((LOOPBACK, server.port), timeout=TIMEOUT)
            try:
                conn = tlslite.TLSConnection(raw)
                conn.handshakeClientCert(settings=_settings(), serverName="localhost", session=session)
                infos.append(_info(conn))
                converse_as_tlslite_client(conn)
                session = conn.session
                conn.close()
            finally:
                raw.close()
    assert [i["resumed"] for i in infos] == [False, True]
    assert [h.resumed for h in server.handshakes] == [False, True]
    expected_hrr = NamedGroup.SecP384r1MLKEM1024 if hrr else None
    assert [d.conn.handshake.hrr_group for d in server.drivers] == [expected_hrr] * 2  # type: ignore[attr-defined]


def test_longtls_client_verifies_tlslite_mldsa87_chain_over_two_records() -> None:
    bundle = _mldsa87_chain_pki()
    done, _, _info = _run_longtls_client(bundle, _settings(), client_cert=bundle.client)
    assert done.signature_scheme == SignatureScheme.mldsa87
    assert list(done.peer_certificates) == bundle.server.chain
    assert done.client_authenticated


def test_tlslite_client_gets_longtls_mldsa87_chain_over_two_records() -> None:
    bundle = _mldsa87_chain_pki()
    cfg = server_config(bundle.server, client_ca=bundle.ca, client_auth=ClientAuth.REQUIRED)
    server, info = _run_tlslite_client(cfg, _settings(), client_cred=bundle.client)
    assert len(info["server_chain"].x509List) == 3
    assert info["server_sigalg"] == tls_constants.SignatureScheme.mldsa87
    done = server.handshakes[0]
    assert done.client_authenticated and done.signature_scheme == SignatureScheme.mldsa87
    assert list(done.peer_certificates) == bundle.client.chain
