"""longtls against the openssl 3.0 command line tools (`s_server`, `s_client`).

Each test: a TLS 1.3 handshake, then the KeyUpdate conversation of
helpers.keyupdate: application data both ways, a KeyUpdate from longtls
(asking openssl to update too) followed by more data both ways, then a
KeyUpdate from openssl ("K" on a line of its own on s_server's / s_client's
stdin) followed by more data both ways.  What was negotiated is asserted from
longtls' HandshakeComplete event.

Lines typed into s_server / s_client start with a digit: both tools treat a
line starting with certain letters (q, Q, r, R, k, K, ...) as a command.  After
typing "K", wait until the KeyUpdate was seen before typing more: both tools
act on the *first byte of one read()* of stdin and drop the rest of it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from helpers.driver import LongtlsServer, SocketDriver, client_config, connect, server_config
from helpers.keyupdate import (
    KeyUpdatePeer,
    ProcessEnd,
    in_background,
    longtls_side,
    peer_side,
    wait_until,
)
from helpers.peers import LOOPBACK, PeerProcess, free_port, start_process
from helpers.pki import Pki, PkiFiles
from longtls.config import ClientAuth, Configuration
from longtls.constants import CipherSuite, NamedGroup, SignatureScheme
from longtls.events import HandshakeComplete, SessionTicket

KEY_TYPES = ["rsa-2048", "ecdsa-p256", "ed25519"]

# longtls group -> the name openssl 3.0's -groups takes
GROUPS = {
    NamedGroup.x25519: "X25519",
    NamedGroup.secp256r1: "P-256",
    NamedGroup.secp384r1: "P-384",
}

# The CertificateVerify scheme a peer with this key type uses with longtls'
# default signature_algorithms.
EXPECTED_SCHEME = {
    "rsa-2048": SignatureScheme.rsa_pss_rsae_sha256,
    "ecdsa-p256": SignatureScheme.ecdsa_secp256r1_sha256,
    "ed25519": SignatureScheme.ed25519,
}

OPENSSL_SUITE_NAMES = {
    CipherSuite.TLS_AES_128_GCM_SHA256: "TLS_AES_128_GCM_SHA256",
    CipherSuite.TLS_AES_256_GCM_SHA384: "TLS_AES_256_GCM_SHA384",
    CipherSuite.TLS_CHACHA20_POLY1305_SHA256: "TLS_CHACHA20_POLY1305_SHA256",
}


def _ids(groups: dict[NamedGroup, str]) -> list[str]:
    return [g.name for g in groups]


# longtls verifies chains with cryptography's Web PKI profile, which refuses
# Ed25519/Ed448 *CA* keys (documented in longtls.crypto.certificates); an
# Ed25519 leaf is fine, so Ed25519 leaves are issued by an ECDSA P-256 CA.
CA_KEY_TYPE = {"ed25519": "ecdsa-p256"}


def _pki(pki: object, key_type: str, tmp_path: Path) -> tuple[Pki, PkiFiles]:
    bundle: Pki = pki(key_type, ca_key_type=CA_KEY_TYPE.get(key_type))  # type: ignore[operator]
    return bundle, bundle.write_pem(tmp_path / key_type)


# --------------------------------------------------------------- s_server


def s_server(
    files: PkiFiles, port: int, *extra: str, naccept: int = 1
) -> list[str]:
    return [
        "openssl", "s_server", "-accept", f"{LOOPBACK}:{port}", "-naccept", str(naccept),
        "-cert", str(files.server.cert), "-key", str(files.server.key),
        "-tls1_3", *extra,
    ]  # fmt: skip


S_SERVER = KeyUpdatePeer("s_server", starts_key_update=True)  # "K": update_requested
S_CLIENT = KeyUpdatePeer("s_client", starts_key_update=True)


def converse_with_s_server(drv: SocketDriver, srv: PeerProcess) -> None:
    """The KeyUpdate conversation, s_server's side in a thread.  s_server prints
    nothing unbuffered when it acts on "K": its KeyUpdate is confirmed by
    longtls receiving it (after the one that answered longtls' own request)."""

    def seen(n: int) -> None:
        wait_until(lambda: len(drv.key_updates("receive")) > n, f"s_server's KeyUpdate {n}")

    with in_background(peer_side, ProcessEnd(srv, {True: "K"}, confirm=seen), S_SERVER):
        longtls_side(drv, S_SERVER)


@pytest.mark.parametrize("group", list(GROUPS), ids=_ids(GROUPS))
@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_longtls_client_openssl_s_server(pki: object, tmp_path: Path, key_type: str, group: NamedGroup) -> None:
    """Default longtls client (key shares X25519MLKEM768 + x25519) against an
    s_server limited to one group: x25519 is taken from the second key share,
    the NIST curves need a HelloRetryRequest."""
    bundle, files = _pki(pki, key_type, tmp_path)
    port = free_port()
    with start_process(s_server(files, port, "-groups", GROUPS[group]), ready_pattern=r"^ACCEPT$") as srv:
        drv = connect(client_config(bundle.ca), port)
        try:
            done = drv.handshake()
            assert done.version == "TLSv1.3"
            assert done.group == group, drv.describe()
            assert done.signature_scheme == EXPECTED_SCHEME[key_type]
            assert done.cipher_suite == CipherSuite.TLS_AES_128_GCM_SHA256  # our first choice
            assert not done.resumed
            assert done.peer_certificates[0] == bundle.server.cert
            # longtls offered Extended Key Update; openssl ignores the flag, so
            # it is not negotiated and the classic KeyUpdate below is used.
            assert not done.extended_key_update
            # openssl 3.0 does not know X25519MLKEM768: it either used the
            # x25519 share or asked for its group with a HelloRetryRequest.
            assert drv.conn.handshake.hello_retry_seen == (group != NamedGroup.x25519)  # type: ignore[attr-defined]
            converse_with_s_server(drv, srv)
        finally:
            drv.close()
        srv.wait(10)
    out = srv.stdout
    assert "CIPHER is TLS_AES_128_GCM_SHA256" in out, srv.describe()
    assert re.search(r"^Shared groups: .*\b" + re.escape(group.name), out, re.M), srv.describe()


def test_longtls_client_openssl_s_server_default_groups(pki: object, tmp_path: Path) -> None:
    """Neither side restricted: openssl 3.0 ignores X25519MLKEM768 (unknown to
    it) and uses longtls' second key share, x25519, without a retry."""
    bundle, files = _pki(pki, "ecdsa-p256", tmp_path)
    port = free_port()
    with start_process(s_server(files, port), ready_pattern=r"^ACCEPT$") as srv:
        drv = connect(client_config(bundle.ca), port)
        try:
            done = drv.handshake()
            assert done.group == NamedGroup.x25519
            assert not drv.conn.handshake.hello_retry_seen  # type: ignore[attr-defined]
            converse_with_s_server(drv, srv)
        finally:
            drv.close()
        srv.wait(10)


def test_longtls_client_hello_retry_request_from_openssl(pki: object, tmp_path: Path) -> None:
    """longtls sends only an x25519 share; s_server wants secp384r1 and sends a
    HelloRetryRequest; the second ClientHello carries a secp384r1 share."""
    bundle, files = _pki(pki, "ecdsa-p256", tmp_path)
    port = free_port()
    cfg = client_config(
        bundle.ca, key_share_groups=[NamedGroup.x25519], groups=[NamedGroup.x25519, NamedGroup.secp384r1]
    )
    with start_process(s_server(files, port, "-groups", "P-384"), ready_pattern=r"^ACCEPT$") as srv:
        drv = connect(cfg, port)
        try:
            done = drv.handshake()
            assert drv.conn.handshake.hello_retry_seen  # type: ignore[attr-defined]
            assert done.group == NamedGroup.secp384r1
            converse_with_s_server(drv, srv)
        finally:
            drv.close()
        srv.wait(10)


@pytest.mark.parametrize("suite", list(OPENSSL_SUITE_NAMES), ids=[s.name for s in OPENSSL_SUITE_NAMES])
def test_longtls_client_openssl_s_server_cipher_suite(pki: object, tmp_path: Path, suite: CipherSuite) -> None:
    bundle, files = _pki(pki, "ecdsa-p256", tmp_path)
    port = free_port()
    args = s_server(files, port, "-ciphersuites", OPENSSL_SUITE_NAMES[suite])
    with start_process(args, ready_pattern=r"^ACCEPT$") as srv:
        drv = connect(client_config(bundle.ca), port)
        try:
            done = drv.handshake()
            assert done.cipher_suite == suite
            converse_with_s_server(drv, srv)
        finally:
            drv.close()
        srv.wait(10)
    assert f"CIPHER is {OPENSSL_SUITE_NAMES[suite]}" in srv.stdout, srv.describe()


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_longtls_client_mutual_tls_with_openssl_s_server(pki: object, tmp_path: Path, key_type: str) -> None:
    """s_server requires a client certificate (-Verify 1) and verifies longtls'."""
    bundle, files = _pki(pki, key_type, tmp_path)
    port = free_port()
    args = s_server(files, port, "-Verify", "1", "-verify_return_error", "-CAfile", str(files.ca))
    with start_process(args, ready_pattern=r"^ACCEPT$") as srv:
        drv = connect(client_config(bundle.ca, client_cert=bundle.client), port)
        try:
            done = drv.handshake()
            assert done.client_authenticated, drv.describe()
            assert done.signature_scheme == EXPECTED_SCHEME[key_type]
            converse_with_s_server(drv, srv)
        finally:
            drv.close()
        srv.wait(10)
    out = srv.output()
    assert "verify error" not in out, srv.describe()
    # s_server prints the client certificate it accepted.
    assert re.search(r"subject=.*CN ?= ?localhost", out), srv.describe()
    assert "-----BEGIN CERTIFICATE-----" in out, srv.describe()


# ------------------------------------------------------------- resumption


@dataclass(frozen=True)
class FirstConnection:
    done: HandshakeComplete
    tickets: list[SessionTicket]
    driver: SocketDriver  # closed; its events and state stay readable


@dataclass(frozen=True)
class Resumption:
    """The scaffolding of the resumption tests (fixture ``resumption``): an
    ECDSA PKI, s_server for longtls clients, a first connection that collects
    tickets and a second that offers one, and s_client saving longtls' ticket
    (-sess_out) then offering it (-sess_in)."""

    bundle: Pki
    files: PkiFiles
    session: Path  # s_client's saved session

    def client_config(self, **kwargs: Any) -> Configuration:
        return client_config(self.bundle.ca, **kwargs)

    @contextlib.contextmanager
    def s_server(self, *extra: str, naccept: int = 2) -> Iterator[tuple[PeerProcess, int]]:
        """s_server accepting ``naccept`` connections; at the end it must exit by itself."""
        port = free_port()
        with start_process(s_server(self.files, port, *extra, naccept=naccept), ready_pattern=r"^ACCEPT$") as srv:
            yield srv, port
            srv.wait(10)

    def first_connection(
        self, cfg: Configuration, port: int, *, tickets: int = 1,
        then: Callable[[SocketDriver], None] | None = None,
    ) -> FirstConnection:
        """A full handshake that waits for ``tickets`` tickets, runs ``then``, and closes."""
        drv = connect(cfg, port)
        try:
            done = drv.handshake()
            received = drv.wait_for_tickets(tickets)
            if then is not None:
                then(drv)
        finally:
            drv.close()
        return FirstConnection(done, [t.ticket for t in received], drv)

    @contextlib.contextmanager
    def offering(
        self, cfg: Configuration, port: int, ticket: SessionTicket, **changes: Any
    ) -> Iterator[tuple[SocketDriver, HandshakeComplete]]:
        """A connection offering ``ticket``: its driver and HandshakeComplete; closed at the end."""
        drv = connect(dataclasses.replace(cfg, session_ticket=ticket, **changes), port)
        try:
            yield drv, drv.handshake()
        finally:
            drv.close()

    def s_client_twice(self, cfg: Configuration, *extra: str) -> LongtlsServer:
        """A longtls server; s_client saves its ticket, then resumes with it.
        Both connections hold the KeyUpdate conversation."""
        with LongtlsServer(cfg, serve_s_client, accept=2) as server:
            for option in ("-sess_out", "-sess_in"):
                args = s_client(self.files, server.port, *extra, option, str(self.session))
                with start_process(args, ready_pattern=r"^CONNECTION ESTABLISHED$") as cli:
                    converse_with_s_client(cli)  # tickets were read before the data
                assert b"BEGIN SSL SESSION PARAMETERS" in self.session.read_bytes()
            server.join()
        return server


@pytest.fixture
def resumption(pki: object, tmp_path: Path) -> Resumption:
    bundle, files = _pki(pki, "ecdsa-p256", tmp_path)
    return Resumption(bundle, files, tmp_path / "session.pem")


def test_longtls_client_resumption_with_openssl_s_server(resumption: Resumption) -> None:
    """A ticket from s_server's NewSessionTicket resumes a second connection."""
    cfg = resumption.client_config()
    with resumption.s_server() as (srv, port):

        def data(drv: SocketDriver) -> None:
            srv.write("1 first connection\n")
            assert drv.recv_until(b"\n") == b"1 first connection\n"

        first = resumption.first_connection(cfg, port, then=data)
        assert not first.done.resumed
        ticket = first.tickets[0]
        assert ticket.server_name == "localhost"
        with resumption.offering(cfg, port, ticket) as (second, done2):
            assert done2.resumed, second.describe()
            assert done2.signature_scheme is None  # no certificate in a resumed handshake
            assert done2.group is not None  # psk_dhe_ke: still a fresh (EC)DHE
            assert done2.cipher_suite == ticket.cipher_suite
            converse_with_s_server(second, srv)
    assert "Reused session-id" in srv.stdout, srv.describe()


# --------------------------------------------------------------- s_client


def s_client(files: PkiFiles, port: int, *extra: str) -> list[str]:
    return [
        "openssl", "s_client", "-connect", f"{LOOPBACK}:{port}",
        "-servername", "localhost", "-verify_hostname", "localhost",
        "-CAfile", str(files.ca), "-verify_return_error", "-tls1_3", "-brief", *extra,
    ]  # fmt: skip


def serve_s_client(drv: SocketDriver) -> None:
    """The longtls side of converse_with_s_client (runs in the server thread)."""
    longtls_side(drv, S_CLIENT)


def converse_with_s_client(cli: PeerProcess) -> None:
    # s_client prints KEYUPDATE once it consumed the "K" line
    peer_side(ProcessEnd(cli, {True: "K"}, confirmation="^KEYUPDATE$"), S_CLIENT)


def s_client_to_longtls(
    cfg: Configuration, files: PkiFiles, *extra: str, handler: Callable[[SocketDriver], object] = serve_s_client,
    brief: bool = True, ready: str = r"^CONNECTION ESTABLISHED$",
) -> tuple[LongtlsServer, PeerProcess]:
    """One s_client connection to a longtls server holding the KeyUpdate
    conversation; returns the joined server and the finished s_client.
    (``brief=False``: -brief hides what some tests read, e.g. ALPN, exporters.)"""
    with LongtlsServer(cfg, handler) as server:
        args = s_client(files, server.port, *extra)
        if not brief:
            args.remove("-brief")
        with start_process(args, ready_pattern=ready) as cli:
            converse_with_s_client(cli)
        server.join()
    return server, cli


@pytest.mark.parametrize("group", list(GROUPS), ids=_ids(GROUPS))
@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_openssl_s_client_longtls_server(pki: object, tmp_path: Path, key_type: str, group: NamedGroup) -> None:
    bundle, files = _pki(pki, key_type, tmp_path)
    server, cli = s_client_to_longtls(server_config(bundle.server), files, "-groups", GROUPS[group])
    done = server.handshakes[0]
    assert done.group == group
    assert not done.extended_key_update  # s_client does not offer EKU; KeyUpdate is used
    assert done.cipher_suite == CipherSuite.TLS_AES_128_GCM_SHA256
    assert done.signature_scheme is None and not done.client_authenticated
    assert done.server_name == "localhost"
    assert server.driver.conn.handshake.hrr_group is None  # type: ignore[attr-defined]
    report = cli.stderr
    assert "Verification: OK" in report, cli.describe()
    assert "Protocol version: TLSv1.3" in report, cli.describe()
    signature_type = {"rsa-2048": "RSA-PSS", "ecdsa-p256": "ECDSA", "ed25519": "ed25519"}[key_type]
    assert re.search(rf"^Signature type: {signature_type}$", report, re.M), cli.describe()
    temp_key = {
        NamedGroup.x25519: "X25519", NamedGroup.secp256r1: "ECDH, prime256v1",
        NamedGroup.secp384r1: "ECDH, secp384r1",
    }[group]
    assert f"Server Temp Key: {temp_key}," in report, cli.describe()


def test_openssl_s_client_hello_retry_request_from_longtls(pki: object, tmp_path: Path) -> None:
    """s_client sends an x25519 share; longtls accepts only secp384r1 and asks
    for it with a HelloRetryRequest."""
    bundle, files = _pki(pki, "ecdsa-p256", tmp_path)
    cfg = server_config(bundle.server, groups=[NamedGroup.secp384r1])
    server, cli = s_client_to_longtls(cfg, files, "-groups", "X25519:P-384")
    done = server.handshakes[0]
    assert server.driver.conn.handshake.hrr_group == NamedGroup.secp384r1  # type: ignore[attr-defined]
    assert done.group == NamedGroup.secp384r1
    assert re.search(r"Server Temp Key: ECDH, (secp384r1|P-384)", cli.stderr), cli.describe()


@pytest.mark.parametrize("suite", list(OPENSSL_SUITE_NAMES), ids=[s.name for s in OPENSSL_SUITE_NAMES])
def test_openssl_s_client_longtls_server_cipher_suite(pki: object, tmp_path: Path, suite: CipherSuite) -> None:
    bundle, files = _pki(pki, "ecdsa-p256", tmp_path)
    server, cli = s_client_to_longtls(server_config(bundle.server), files, "-ciphersuites", OPENSSL_SUITE_NAMES[suite])
    assert server.handshakes[0].cipher_suite == suite
    assert f"Ciphersuite: {OPENSSL_SUITE_NAMES[suite]}" in cli.stderr, cli.describe()


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_openssl_s_client_mutual_tls_with_longtls_server(pki: object, tmp_path: Path, key_type: str) -> None:
    """longtls requires a client certificate and verifies s_client's."""
    bundle, files = _pki(pki, key_type, tmp_path)
    cfg = server_config(bundle.server, client_ca=bundle.ca, client_auth=ClientAuth.REQUIRED)
    server, _ = s_client_to_longtls(cfg, files, "-cert", str(files.client.cert), "-key", str(files.client.key))
    done = server.handshakes[0]
    assert done.client_authenticated
    assert done.signature_scheme == EXPECTED_SCHEME[key_type]
    assert done.peer_certificates[0] == bundle.client.cert


def test_openssl_s_client_without_certificate_is_refused_by_longtls(pki: object, tmp_path: Path) -> None:
    """longtls requires a client certificate; s_client has none: certificate_required."""
    bundle, files = _pki(pki, "ecdsa-p256", tmp_path)
    cfg = server_config(bundle.server, client_ca=bundle.ca, client_auth=ClientAuth.REQUIRED)
    server = LongtlsServer(cfg, serve_s_client).start()
    with start_process(s_client(files, server.port), ready_pattern=r"^CONNECTION ESTABLISHED$") as cli:
        # s_client reads longtls' fatal alert by itself and gives up.
        cli.wait_for_output(r"alert certificate required", timeout=10)
    with pytest.raises(AssertionError, match=r"client certificate required \(certificate_required\)"):
        server.join()


def test_openssl_s_client_resumption_with_longtls_server(resumption: Resumption) -> None:
    """s_client stores longtls' ticket (-sess_out) and resumes with it (-sess_in)."""
    server = resumption.s_client_twice(server_config(resumption.bundle.server))
    first, second = server.handshakes
    assert not first.resumed
    assert second.resumed
    assert second.signature_scheme is None
    assert second.group is not None


# ----------------------------------------------------------- edge cases
#
# The same peers, pushed past the happy path: record padding, fragmented
# handshake messages, no middlebox compatibility mode, large transfers, many
# KeyUpdates, resumption after a HelloRetryRequest, psk_ke, ALPN, exporters,
# post-handshake authentication, key logs, record_size_limit.


def _big(n: int, tag: str) -> bytes:
    """``n`` bytes of digits ending in a newline (no command letters)."""
    body = (tag + "0123456789" * (n // 10 + 1))[: n - 1]
    return body.encode() + b"\n"


@pytest.mark.parametrize("side", ["s_server", "s_client"])
def test_openssl_record_padding(pki: object, tmp_path: Path, side: str) -> None:
    """openssl pads every TLS 1.3 record to a multiple of 512 bytes; longtls
    strips the zeros (RFC 9846 §5.4).  longtls pads its own records too."""
    bundle, files = _pki(pki, "ecdsa-p256", tmp_path)
    from longtls.config import pad_to_block

    if side == "s_server":
        port = free_port()
        args = s_server(files, port, "-record_padding", "512")
        with start_process(args, ready_pattern=r"^ACCEPT$") as srv:
            drv = connect(client_config(bundle.ca, record_padding=pad_to_block(256)), port)
            try:
                drv.handshake()
                converse_with_s_server(drv, srv)
            finally:
                drv.close()
            srv.wait(10)
    else:
        cfg = server_config(bundle.server, record_padding=pad_to_block(256))
        s_client_to_longtls(cfg, files, "-record_padding", "512")


@pytest.mark.parametrize("key_type", ["rsa-2048", "ecdsa-p256"])
def test_openssl_s_server_fragments_handshake_messages(pki: object, tmp_path: Path, key_type: str) -> None:
    """s_server -max_send_frag 512: Certificate (and, for RSA, CertificateVerify)
    span several records; longtls reassembles them."""
    bundle, files = _pki(pki, key_type, tmp_path)
    port = free_port()
    args = s_server(files, port, "-max_send_frag", "512", "-Verify", "1", "-CAfile", str(files.ca))
    with start_process(args, ready_pattern=r"^ACCEPT$") as srv:
        drv = connect(client_config(bundle.ca, client_cert=bundle.client), port)
        try:
            done = drv.handshake()
            assert done.peer_certificates[0] == bundle.server.cert
            converse_with_s_server(drv, srv)
            big = _big(20000, "9")
            srv.write(big.decode())
            assert drv.recv_until(b"\n") == big
        finally:
            drv.close()
        srv.wait(10)


def test_openssl_s_client_fragments_handshake_messages(pki: object, tmp_path: Path) -> None:
    """s_client -max_send_frag 512 with a client certificate: longtls server
    reassembles the client's Certificate from several records."""
    bundle, files = _pki(pki, "rsa-2048", tmp_path)
    cfg = server_config(bundle.server, client_ca=bundle.ca, client_auth=ClientAuth.REQUIRED)
    server, _ = s_client_to_longtls(
        cfg, files, "-max_send_frag", "512", "-cert", str(files.client.cert), "-key", str(files.client.key)
    )
    assert server.handshakes[0].client_authenticated


def test_openssl_without_middlebox_compatibility(pki: object, tmp_path: Path) -> None:
    """No change_cipher_spec and an empty legacy_session_id on either side."""
    bundle, files = _pki(pki, "ecdsa-p256", tmp_path)
    port = free_port()
    with start_process(s_server(files, port, "-no_middlebox"), ready_pattern=r"^ACCEPT$") as srv:
        drv = connect(client_config(bundle.ca, middlebox_compatibility=False), port)
        try:
            drv.handshake()
            converse_with_s_server(drv, srv)
        finally:
            drv.close()
        srv.wait(10)
    s_client_to_longtls(server_config(bundle.server), files, "-no_middlebox")


def test_openssl_large_transfer_both_ways(pki: object, tmp_path: Path) -> None:
    """200 KB each way (many full-size records) through s_server."""
    bundle, files = _pki(pki, "ecdsa-p256", tmp_path)
    port = free_port()
    with start_process(s_server(files, port), ready_pattern=r"^ACCEPT$") as srv:
        drv = connect(client_config(bundle.ca), port)
        try:
            drv.handshake()
            down = _big(200_000, "1")
            srv.write(down.decode())
            assert drv.recv_until(b"\n", timeout=20) == down
            up = _big(200_000, "2")
            drv.send(up)
            srv.wait_for_output(re.escape(up.decode().strip()[-64:]) + "$", timeout=20)
            assert up.decode() in srv.stdout
        finally:
            drv.close()
        srv.wait(10)


def test_openssl_many_key_updates(pki: object, tmp_path: Path) -> None:
    """30 KeyUpdates from longtls, each requesting one back, with data in
    between; then s_server sends 5 of its own."""
    bundle, files = _pki(pki, "ecdsa-p256", tmp_path)
    port = free_port()
    with start_process(s_server(files, port), ready_pattern=r"^ACCEPT$") as srv:
        drv = connect(client_config(bundle.ca), port)
        try:
            drv.handshake()
            for i in range(1, 31):
                drv.update_keys(request_peer_update=True)
                drv.send(f"{i} longtls generation {i}\n".encode())
                srv.wait_for_output(rf"^{i} longtls generation {i}$")
                srv.write(f"{i} s_server reply {i}\n")
                assert drv.recv_until(b"\n") == f"{i} s_server reply {i}\n".encode()
                assert len(drv.key_updates("receive")) == i
            for j in range(31, 36):
                srv.write("K\n")
                drv.pump_until(lambda j=j: len(drv.key_updates("receive")) >= j, what=f"KeyUpdate {j}")
                srv.write(f"{j} s_server after its update\n")
                assert drv.recv_until(b"\n") == f"{j} s_server after its update\n".encode()
                drv.send(f"{j} longtls after answering\n".encode())
                srv.wait_for_output(rf"^{j} longtls after answering$")
            assert len(drv.key_updates("send")) == 35
        finally:
            drv.close()
        srv.wait(10)


def test_longtls_client_resumption_after_hello_retry_request(resumption: Resumption) -> None:
    """s_server only does secp384r1: both the full and the resumed handshake go
    through a HelloRetryRequest, so the PSK binder is computed over the
    HRR transcript (RFC 9846 §4.2.11.2)."""
    cfg = resumption.client_config()
    with resumption.s_server("-groups", "P-384") as (srv, port):
        first = resumption.first_connection(cfg, port)
        assert first.done.group == NamedGroup.secp384r1
        assert first.driver.conn.handshake.hello_retry_seen  # type: ignore[attr-defined]
        with resumption.offering(cfg, port, first.tickets[0]) as (second, done):
            assert second.conn.handshake.hello_retry_seen  # type: ignore[attr-defined]
            assert done.resumed, second.describe()
            assert done.group == NamedGroup.secp384r1
            converse_with_s_server(second, srv)
    assert "Reused session-id" in srv.stdout, srv.describe()


def test_openssl_s_client_resumption_after_hello_retry_request(resumption: Resumption) -> None:
    """longtls server wants secp384r1, s_client shares x25519: both handshakes
    see a HelloRetryRequest, the second one with s_client's PSK offered."""
    cfg = server_config(resumption.bundle.server, groups=[NamedGroup.secp384r1])
    server = resumption.s_client_twice(cfg, "-groups", "X25519:P-384")
    assert [d.conn.handshake.hrr_group for d in server.drivers] == [NamedGroup.secp384r1] * 2  # type: ignore[attr-defined]
    assert [h.resumed for h in server.handshakes] == [False, True]


def test_longtls_client_psk_ke_resumption_with_openssl(resumption: Resumption) -> None:
    """psk_ke (no (EC)DHE) resumption: s_server -allow_no_dhe_kex, longtls
    offering only psk_ke; HandshakeComplete.group is None."""
    from longtls.constants import PskKeyExchangeMode

    cfg = resumption.client_config(psk_key_exchange_modes=(PskKeyExchangeMode.psk_ke,))
    with resumption.s_server("-allow_no_dhe_kex") as (srv, port):
        first = resumption.first_connection(cfg, port)
        with resumption.offering(cfg, port, first.tickets[0]) as (second, done):
            assert done.resumed and done.group is None, second.describe()
            converse_with_s_server(second, srv)


def test_openssl_s_client_psk_ke_resumption_with_longtls(resumption: Resumption) -> None:
    """s_client -allow_no_dhe_kex offers psk_ke as well; a longtls server that
    accepts only psk_ke resumes without a key share."""
    from longtls.constants import PskKeyExchangeMode

    cfg = server_config(resumption.bundle.server, psk_key_exchange_modes=(PskKeyExchangeMode.psk_ke,))
    server = resumption.s_client_twice(cfg, "-allow_no_dhe_kex")
    assert [h.resumed for h in server.handshakes] == [False, True]
    assert server.handshakes[1].group is None


def test_openssl_alpn_both_directions(pki: object, tmp_path: Path) -> None:
    bundle, files = _pki(pki, "ecdsa-p256", tmp_path)
    port = free_port()
    with start_process(s_server(files, port, "-alpn", "h2,http/1.1"), ready_pattern=r"^ACCEPT$") as srv:
        drv = connect(client_config(bundle.ca, alpn_protocols=["http/1.1", "h2"]), port)
        try:
            assert drv.handshake().alpn_protocol == "h2"  # s_server's preference
            converse_with_s_server(drv, srv)
        finally:
            drv.close()
        srv.wait(10)
    assert "ALPN protocols selected: h2" in srv.stdout, srv.describe()
    cfg = server_config(bundle.server, alpn_protocols=["h2", "http/1.1"])
    # -brief does not print the ALPN result
    server, cli = s_client_to_longtls(cfg, files, "-alpn", "http/1.1", brief=False, ready=r"^ALPN protocol: ")
    assert server.handshakes[0].alpn_protocol == "http/1.1"
    assert "ALPN protocol: http/1.1" in cli.stdout, cli.describe()


def test_openssl_s_client_exporter_matches_longtls(pki: object, tmp_path: Path) -> None:
    """s_client -keymatexport prints the TLS exporter; longtls derives the same."""
    bundle, files = _pki(pki, "ecdsa-p256", tmp_path)
    label = "EXPERIMENTAL-longtls-interop"

    def handler(drv: SocketDriver) -> bytes:
        serve_s_client(drv)
        return drv.conn.export_keying_material(label, b"", 32)

    server, cli = s_client_to_longtls(
        server_config(bundle.server), files, "-keymatexport", label, "-keymatexportlen", "32",
        handler=handler, brief=False, ready=r"Keying material: [0-9A-F]+",
    )
    m = re.search(r"Keying material: ([0-9A-F]+)", cli.stdout)
    assert m, cli.describe()
    assert bytes.fromhex(m.group(1)) == server.result


def test_openssl_key_log_matches_longtls(pki: object, tmp_path: Path) -> None:
    """s_server -keylogfile and longtls' key log hold the same secrets."""
    bundle, files = _pki(pki, "ecdsa-p256", tmp_path)
    openssl_log = tmp_path / "openssl.keys"
    longtls_log = tmp_path / "longtls.keys"
    port = free_port()
    cfg = client_config(bundle.ca)
    cfg.set_keylog_file(longtls_log)
    with start_process(s_server(files, port, "-keylogfile", str(openssl_log)), ready_pattern=r"^ACCEPT$") as srv:
        drv = connect(cfg, port)
        try:
            drv.handshake()
            converse_with_s_server(drv, srv)
        finally:
            drv.close()
        srv.wait(10)

    def entries(path: Path) -> dict[str, tuple[str, str]]:
        out = {}
        for line in path.read_text().splitlines():
            if line and not line.startswith("#"):
                label, random, secret = line.split()
                out[label] = (random.lower(), secret.lower())
        return out

    theirs, ours = entries(openssl_log), entries(longtls_log)
    for label in ("CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET",
                  "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0", "EXPORTER_SECRET"):
        assert label in theirs and label in ours, (theirs.keys(), ours.keys())
        assert ours[label] == theirs[label], label


def test_longtls_server_post_handshake_auth_of_openssl_s_client(pki: object, tmp_path: Path) -> None:
    """s_client -enable_pha; longtls asks for its certificate after the handshake."""
    from longtls.events import PeerAuthenticated

    bundle, files = _pki(pki, "ecdsa-p256", tmp_path)

    def handler(drv: SocketDriver) -> PeerAuthenticated:
        assert drv.recv_until(b"\n") == b"1 s_client to longtls\n"
        drv.conn.request_client_authentication()
        drv.flush()
        event = drv.wait_for(PeerAuthenticated)
        drv.send(b"2 longtls authenticated you\n")
        return event

    cfg = server_config(bundle.server, client_ca=bundle.ca)
    with LongtlsServer(cfg, handler) as server:
        args = s_client(
            files, server.port, "-enable_pha", "-cert", str(files.client.cert), "-key", str(files.client.key)
        )
        with start_process(args, ready_pattern=r"^CONNECTION ESTABLISHED$") as cli:
            cli.write("1 s_client to longtls\n")
            cli.wait_for_output(r"^2 longtls authenticated you$")
        server.join()
    event = server.result
    assert event.peer_certificates[0] == bundle.client.cert
    assert event.signature_scheme == SignatureScheme.ecdsa_secp256r1_sha256


def test_longtls_client_post_handshake_auth_by_openssl_s_server(pki: object, tmp_path: Path) -> None:
    """longtls offers post_handshake_auth; s_server's "c" command asks for the
    certificate after the handshake and verifies it."""
    bundle, files = _pki(pki, "ecdsa-p256", tmp_path)
    port = free_port()
    # no -verify: s_server must not ask for the certificate in the handshake
    args = s_server(files, port, "-CAfile", str(files.ca), "-verify_return_error")
    cfg = client_config(bundle.ca, client_cert=bundle.client, post_handshake_auth=True)
    with start_process(args, ready_pattern=r"^ACCEPT$") as srv:
        drv = connect(cfg, port)
        try:
            done = drv.handshake()
            assert not done.client_authenticated
            drv.wait_for_tickets(2)
            drv.send(b"1 longtls\n")
            srv.wait_for_output(r"^1 longtls$")
            srv.write("c\n")
            # s_server prints nothing unbuffered on success, but once it has
            # checked our Certificate/CertificateVerify/Finished it issues two
            # new tickets.
            drv.wait_for_tickets(4)
            srv.write("2 s_server after authenticating you\n")
            assert drv.recv_until(b"\n") == b"2 s_server after authenticating you\n"
            drv.send(b"3 longtls again\n")
            srv.wait_for_output(r"^3 longtls again$")
        finally:
            drv.close()
        srv.wait(10)
    out = srv.output()
    assert "verify error" not in out, srv.describe()
    assert "SSL_do_handshake -> 1" in out, srv.describe()  # stdout flushed at exit


def test_longtls_client_record_size_limit_with_openssl_which_ignores_it(pki: object, tmp_path: Path) -> None:
    """OpenSSL 3.0 does not implement RFC 8449: it never acknowledges the
    client's record_size_limit, so the limit was not negotiated and the server
    may send full-size records.  longtls must accept them."""
    bundle, files = _pki(pki, "ecdsa-p256", tmp_path)
    port = free_port()
    with start_process(s_server(files, port), ready_pattern=r"^ACCEPT$") as srv:
        drv = connect(client_config(bundle.ca, record_size_limit=512), port)
        try:
            drv.handshake()
            big = _big(8000, "3")
            srv.write(big.decode())
            assert drv.recv_until(b"\n") == big
            converse_with_s_server(drv, srv)
        finally:
            drv.close()
        srv.wait(10)


def test_longtls_server_record_size_limit_with_openssl_which_ignores_it(pki: object, tmp_path: Path) -> None:
    """s_client (OpenSSL 3.0) sends no record_size_limit, so longtls' limit is
    not in force and s_client's 8 KB records must be accepted."""
    bundle, files = _pki(pki, "ecdsa-p256", tmp_path)
    big = _big(8000, "4")

    def handler(drv: SocketDriver) -> bytes:
        data = drv.recv_until(b"\n")
        drv.send(b"5 got it\n")
        return data

    with LongtlsServer(server_config(bundle.server, record_size_limit=512), handler) as server:
        with start_process(s_client(files, server.port), ready_pattern=r"^CONNECTION ESTABLISHED$") as cli:
            cli.write(big.decode())
            cli.wait_for_output(r"^5 got it$")
        server.join()
    assert server.result == big


def test_longtls_client_ticket_unknown_to_new_s_server_falls_back(resumption: Resumption) -> None:
    """A ticket from one s_server process offered to another (different ticket
    keys): s_server ignores the PSK and longtls completes a full handshake."""
    cfg = resumption.client_config()
    with resumption.s_server(naccept=1) as (_srv, port):
        first = resumption.first_connection(cfg, port)
    with (
        resumption.s_server(naccept=1) as (srv2, port2),
        resumption.offering(cfg, port2, first.tickets[0]) as (second, done),
    ):
        assert not done.resumed
        assert done.signature_scheme == SignatureScheme.ecdsa_secp256r1_sha256
        converse_with_s_server(second, srv2)


def test_openssl_s_client_ticket_unknown_to_longtls_falls_back(resumption: Resumption) -> None:
    """s_client offers a ticket sealed under another longtls ticket_key: longtls
    cannot open it and completes a full handshake."""
    files, session = resumption.files, str(resumption.session)
    s_client_to_longtls(server_config(resumption.bundle.server), files, "-sess_out", session)
    server2, _ = s_client_to_longtls(server_config(resumption.bundle.server), files, "-sess_in", session)
    assert not server2.handshakes[0].resumed


def test_longtls_client_sha384_ticket_with_openssl(resumption: Resumption) -> None:
    """A ticket from a TLS_AES_256_GCM_SHA384 session (binder over SHA-384).
    Offered with TLS_AES_128_GCM_SHA256 first, s_server picks that suite and
    so cannot use the PSK: a full handshake.  Offered with the SHA-384 suite
    first, it resumes."""
    cfg = resumption.client_config()
    sha384_first = [CipherSuite.TLS_AES_256_GCM_SHA384, CipherSuite.TLS_AES_128_GCM_SHA256]
    with resumption.s_server(naccept=3) as (srv, port):
        sha384_only = dataclasses.replace(cfg, cipher_suites=[CipherSuite.TLS_AES_256_GCM_SHA384])
        first = resumption.first_connection(sha384_only, port, tickets=2)
        assert first.done.cipher_suite == CipherSuite.TLS_AES_256_GCM_SHA384

        with resumption.offering(cfg, port, first.tickets[0]) as (second, done):
            assert not done.resumed and done.cipher_suite == CipherSuite.TLS_AES_128_GCM_SHA256
            # Data only, no KeyUpdate: OpenSSL 3.0.19's s_server was seen (on
            # the wire, with tshark) to skip the KeyUpdate it owes in answer to
            # update_requested on the *next* connection of the same process
            # after one with a KeyUpdate exchange.  Not a longtls issue.
            srv.write("1 s_server to longtls\n")
            assert second.recv_until(b"\n") == b"1 s_server to longtls\n"
            second.send(b"2 longtls to s_server\n")
            srv.wait_for_output(r"^2 longtls to s_server$")

        with resumption.offering(cfg, port, first.tickets[1], cipher_suites=sha384_first) as (third, done):
            assert done.resumed, third.describe()
            assert done.cipher_suite == CipherSuite.TLS_AES_256_GCM_SHA384
            converse_with_s_server(third, srv)


def test_longtls_client_resumes_ticket_allowing_early_data(resumption: Resumption) -> None:
    """s_server -max_early_data: its tickets carry the early_data extension.
    longtls records max_early_data_size (it never sends 0-RTT) and resumes."""
    cfg = resumption.client_config()
    with resumption.s_server("-max_early_data", "16384") as (srv, port):
        ticket = resumption.first_connection(cfg, port).tickets[0]
        assert ticket.max_early_data_size == 16384
        with resumption.offering(cfg, port, ticket) as (second, done):
            assert done.resumed, second.describe()
            converse_with_s_server(second, srv)


# ------------------------------------------- failures, reported with alerts
#
# When longtls refuses a peer it must say why with the RFC 9846 §6.2 alert,
# and openssl must understand it.


def test_longtls_client_refuses_untrusted_s_server_with_unknown_ca(pki: object, tmp_path: Path) -> None:
    from helpers.pki import make_ca
    from longtls.constants import AlertDescription
    from longtls.events import ConnectionClosed

    _bundle, files = _pki(pki, "ecdsa-p256", tmp_path)
    port = free_port()
    with start_process(s_server(files, port), ready_pattern=r"^ACCEPT$") as srv:
        # trusts only another CA (with another name: same-named CAs are a "bad signature")
        drv = connect(client_config(make_ca("ecdsa-p256", common_name="some other CA")), port)
        try:
            with pytest.raises(AssertionError, match=r"unknown CA"):
                drv.handshake()
        finally:
            drv.sock.close()
        srv.wait_for_output(r"alert unknown ca")
    closed = drv.of_type(ConnectionClosed)
    assert closed[0].alert == AlertDescription.unknown_ca and not closed[0].by_peer


def test_longtls_client_refuses_name_mismatch_with_bad_certificate(pki: object, tmp_path: Path) -> None:
    from longtls.constants import AlertDescription
    from longtls.events import ConnectionClosed

    bundle, files = _pki(pki, "ecdsa-p256", tmp_path)
    port = free_port()
    with start_process(s_server(files, port), ready_pattern=r"^ACCEPT$") as srv:
        drv = connect(client_config(bundle.ca, server_name="www.example.com"), port)
        try:
            with pytest.raises(AssertionError, match=r"name mismatch"):
                drv.handshake()
        finally:
            drv.sock.close()
        srv.wait_for_output(r"alert bad certificate")
    assert drv.of_type(ConnectionClosed)[0].alert == AlertDescription.bad_certificate


def test_longtls_server_refuses_untrusted_client_certificate(pki: object, tmp_path: Path) -> None:
    """s_client presents a certificate from a CA longtls does not trust."""
    from helpers.pki import make_ca, make_leaf

    bundle, files = _pki(pki, "ecdsa-p256", tmp_path)
    stranger_ca = make_ca("ecdsa-p256", common_name="some other CA")
    stranger = make_leaf(stranger_ca, "ecdsa-p256", client=True).write_pem(tmp_path / "stranger", "client")
    cfg = server_config(bundle.server, client_ca=bundle.ca, client_auth=ClientAuth.REQUIRED)
    server = LongtlsServer(cfg, serve_s_client).start()
    args = s_client(files, server.port, "-cert", str(stranger.cert), "-key", str(stranger.key))
    with start_process(args, ready_pattern=r"^CONNECTION ESTABLISHED$") as cli:
        cli.wait_for_output(r"alert unknown ca", timeout=10)
    with pytest.raises(AssertionError, match=r"\(unknown_ca\)"):
        server.join()
