"""Issue 9's groups, signature schemes and suites against real peers.

- OpenSSL 3.0 (`s_server`, `s_client`): secp521r1, X448 and ffdhe2048 to
  ffdhe8192 (OpenSSL 3.0 speaks the RFC 7919 groups in TLS 1.3) both ways,
  the two AES-CCM suites both ways, P-521 certificates and CertificateVerify
  both ways (mutual TLS, so each side verifies the other's signature).
- OpenSSL 4.0 through pyOpenSSL (cryptography's OpenSSL): the RFC 8734
  brainpool groups and ECDSA schemes both ways.  GnuTLS 3.7.9 has no
  brainpool at all (`gnutls-cli --list` lists no brainpool group or
  signature) and OpenSSL 3.0 has the groups but not the TLS 1.3 brainpool
  signature schemes (added in 3.2), so OpenSSL 4.0 is the brainpool peer.
- GnuTLS 3.7 (`gnutls-cli`): secp521r1, X448, ffdhe2048 and ffdhe8192 with
  a P-521 server certificate, and the two CCM suites.

longtls lists the new groups and suites explicitly (the groups and CCM_8 are
not in its defaults; CCM is, last: docs/groups-and-suites.md), so each
test gets the group or suite it names.  Each test moves data both ways and
does a key update with the peer; what was negotiated is asserted on both
ends (longtls' HandshakeComplete, the peer's own report).
"""

from __future__ import annotations

import re
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from helpers.driver import (
    DriverError,
    LongtlsServer,
    SocketDriver,
    client_config,
    connect,
    server_config,
)
from helpers.keyupdate import (
    KeyUpdatePeer,
    ProcessEnd,
    SocketEnd,
    in_background,
    longtls_side,
    peer_side,
)
from helpers.peers import (
    LOOPBACK,
    PeerProcess,
    PeerServerThread,
    free_port,
    require_module,
    start_process,
)
from helpers.pki import Pki, PkiFiles
from longtls.config import DEFAULT_GROUPS, ClientAuth
from longtls.constants import AlertDescription, CipherSuite, NamedGroup, SignatureScheme
from longtls.errors import RemoteProtocolError

G = NamedGroup
TIMEOUT = 15

# longtls group -> openssl's -groups name and s_client's "Server Temp Key" text.
OPENSSL3_GROUPS = {
    G.secp521r1: ("P-521", "ECDH, secp521r1, 521 bits"),
    G.x448: ("X448", "X448, 448 bits"),
    G.ffdhe2048: ("ffdhe2048", "DH, 2048 bits"),
    G.ffdhe3072: ("ffdhe3072", "DH, 3072 bits"),
    G.ffdhe4096: ("ffdhe4096", "DH, 4096 bits"),
    G.ffdhe6144: ("ffdhe6144", "DH, 6144 bits"),
    G.ffdhe8192: ("ffdhe8192", "DH, 8192 bits"),
}
CCM_SUITES = [CipherSuite.TLS_AES_128_CCM_SHA256, CipherSuite.TLS_AES_128_CCM_8_SHA256]
BRAINPOOL_GROUPS = [G.brainpoolP256r1tls13, G.brainpoolP384r1tls13, G.brainpoolP512r1tls13]
# leaf key type -> (its TLS 1.3 scheme, OpenSSL's name for it).  The leaves are
# issued by a P-256 CA: longtls' Web PKI path validation refuses brainpool CA keys.
BRAINPOOL_KEYS = {
    "ecdsa-brainpoolP256r1": (SignatureScheme.ecdsa_brainpoolP256r1tls13_sha256, "ecdsa_brainpoolP256r1tls13_sha256"),
    "ecdsa-brainpoolP384r1": (SignatureScheme.ecdsa_brainpoolP384r1tls13_sha384, "ecdsa_brainpoolP384r1tls13_sha384"),
    "ecdsa-brainpoolP512r1": (SignatureScheme.ecdsa_brainpoolP512r1tls13_sha512, "ecdsa_brainpoolP512r1tls13_sha512"),
}


def _ids(items: Any) -> list[str]:
    return [i.name for i in items]


def _pki(pki: Any, key_type: str, tmp_path: Path, ca_key_type: str | None = None) -> tuple[Pki, PkiFiles]:
    bundle: Pki = pki(key_type, ca_key_type=ca_key_type)
    return bundle, bundle.write_pem(tmp_path / key_type)


# ---------------------------------------------------------------- OpenSSL 3.0 s_server


def s_server(files: PkiFiles, port: int, *extra: str) -> list[str]:
    return [
        "openssl", "s_server", "-accept", f"{LOOPBACK}:{port}", "-naccept", "1",
        "-cert", str(files.server.chain), "-key", str(files.server.key), "-tls1_3", *extra,
    ]  # fmt: skip


# The KeyUpdate conversation of helpers.keyupdate up to longtls' KeyUpdate
# (data both ways, a KeyUpdate from longtls that the peer answers, data again);
# the full one, with openssl's own KeyUpdate, is in test_openssl.py.
S_SERVER = KeyUpdatePeer("s_server")
S_CLIENT = KeyUpdatePeer("s_client")


def converse_with_s_server(drv: SocketDriver, srv: PeerProcess) -> None:
    with in_background(peer_side, ProcessEnd(srv, {}), S_SERVER):
        longtls_side(drv, S_SERVER)


@pytest.mark.parametrize("group", list(OPENSSL3_GROUPS), ids=_ids(OPENSSL3_GROUPS))
def test_longtls_client_openssl_s_server_group(pki: Any, tmp_path: Path, group: NamedGroup) -> None:
    """longtls adds the group after its defaults (the way a configuration opts
    in); s_server offers only that group, so it asks for it with a
    HelloRetryRequest."""
    bundle, files = _pki(pki, "ecdsa-p256", tmp_path)
    port = free_port()
    cfg = client_config(bundle.ca, groups=[*DEFAULT_GROUPS, group])
    name = OPENSSL3_GROUPS[group][0]
    with start_process(s_server(files, port, "-groups", name), ready_pattern=r"^ACCEPT$") as srv:
        drv = connect(cfg, port)
        try:
            done = drv.handshake()
            assert done.group == group, drv.describe()
            assert drv.conn.handshake.hello_retry_seen  # type: ignore[attr-defined]
            converse_with_s_server(drv, srv)
        finally:
            drv.close()
        srv.wait(10)
    # s_server names the groups in its own words: secp521r1, x448, ffdhe2048...
    assert re.search(rf"^Shared groups: {group.name}$", srv.stdout, re.M | re.I), srv.describe()


@pytest.mark.parametrize("suite", CCM_SUITES, ids=_ids(CCM_SUITES))
def test_longtls_client_openssl_s_server_ccm(pki: Any, tmp_path: Path, suite: CipherSuite) -> None:
    bundle, files = _pki(pki, "ecdsa-p256", tmp_path)
    port = free_port()
    cfg = client_config(bundle.ca, cipher_suites=[suite])
    with start_process(s_server(files, port, "-ciphersuites", suite.name), ready_pattern=r"^ACCEPT$") as srv:
        drv = connect(cfg, port)
        try:
            assert drv.handshake().cipher_suite == suite
            converse_with_s_server(drv, srv)
        finally:
            drv.close()
        srv.wait(10)
    assert f"CIPHER is {suite.name}" in srv.stdout, srv.describe()


def test_longtls_client_p521_mutual_tls_with_openssl_s_server(pki: Any, tmp_path: Path) -> None:
    """P-521 chains both ways: longtls verifies s_server's ecdsa_secp521r1_sha512
    CertificateVerify and P-521 chain, s_server (-Verify) verifies longtls'."""
    bundle, files = _pki(pki, "ecdsa-p521", tmp_path)
    port = free_port()
    args = s_server(files, port, "-Verify", "1", "-verify_return_error", "-CAfile", str(files.ca))
    with start_process(args, ready_pattern=r"^ACCEPT$") as srv:
        drv = connect(client_config(bundle.ca, client_cert=bundle.client), port)
        try:
            done = drv.handshake()
            assert done.signature_scheme == SignatureScheme.ecdsa_secp521r1_sha512
            assert done.local_signature_scheme == SignatureScheme.ecdsa_secp521r1_sha512
            assert done.client_authenticated and done.peer_certificates[0] == bundle.server.cert
            converse_with_s_server(drv, srv)
        finally:
            drv.close()
        srv.wait(10)
    out = srv.output()
    assert "verify error" not in out, srv.describe()
    assert re.search(r"^Peer signature type: ECDSA$", out, re.M), srv.describe()


# ---------------------------------------------------------------- OpenSSL 3.0 s_client


def s_client(files: PkiFiles, port: int, *extra: str) -> list[str]:
    return [
        "openssl", "s_client", "-connect", f"{LOOPBACK}:{port}",
        "-servername", "localhost", "-verify_hostname", "localhost",
        "-CAfile", str(files.ca), "-verify_return_error", "-tls1_3", "-brief", *extra,
    ]  # fmt: skip


def serve_s_client(drv: SocketDriver) -> None:
    longtls_side(drv, S_CLIENT)


def converse_with_s_client(cli: PeerProcess) -> None:
    peer_side(ProcessEnd(cli, {}), S_CLIENT)


def _run_s_client(server: LongtlsServer, args: list[str]) -> PeerProcess:
    with start_process(args, ready_pattern=r"^CONNECTION ESTABLISHED$") as cli:
        converse_with_s_client(cli)
        server.join()
    return cli


@pytest.mark.parametrize("group", list(OPENSSL3_GROUPS), ids=_ids(OPENSSL3_GROUPS))
def test_openssl_s_client_longtls_server_group(pki: Any, tmp_path: Path, group: NamedGroup) -> None:
    """s_client offers and shares only ``group``; the longtls server lists it
    after its defaults and takes it from the first ClientHello."""
    bundle, files = _pki(pki, "ecdsa-p256", tmp_path)
    name, temp_key = OPENSSL3_GROUPS[group]
    cfg = server_config(bundle.server, groups=[*DEFAULT_GROUPS, group])
    with LongtlsServer(cfg, serve_s_client) as server:
        cli = _run_s_client(server, s_client(files, server.port, "-groups", name))
    assert server.handshakes[0].group == group
    assert server.driver.conn.handshake.hrr_group is None  # type: ignore[attr-defined]
    assert "Verification: OK" in cli.stderr, cli.describe()
    assert f"Server Temp Key: {temp_key}" in cli.stderr, cli.describe()


@pytest.mark.parametrize("suite", CCM_SUITES, ids=_ids(CCM_SUITES))
def test_openssl_s_client_longtls_server_ccm(pki: Any, tmp_path: Path, suite: CipherSuite) -> None:
    bundle, files = _pki(pki, "ecdsa-p256", tmp_path)
    cfg = server_config(bundle.server, cipher_suites=[suite])
    with LongtlsServer(cfg, serve_s_client) as server:
        cli = _run_s_client(server, s_client(files, server.port, "-ciphersuites", suite.name))
    assert server.handshakes[0].cipher_suite == suite
    assert f"Ciphersuite: {suite.name}" in cli.stderr, cli.describe()


def test_openssl_s_client_p521_mutual_tls_with_longtls_server(pki: Any, tmp_path: Path) -> None:
    bundle, files = _pki(pki, "ecdsa-p521", tmp_path)
    cfg = server_config(bundle.server, client_ca=bundle.ca, client_auth=ClientAuth.REQUIRED)
    args = s_client(files, 0, "-cert", str(files.client.chain), "-key", str(files.client.key))
    with LongtlsServer(cfg, serve_s_client) as server:
        args[3] = f"{LOOPBACK}:{server.port}"
        cli = _run_s_client(server, args)
    done = server.handshakes[0]
    assert done.client_authenticated and done.peer_certificates[0] == bundle.client.cert
    assert done.signature_scheme == SignatureScheme.ecdsa_secp521r1_sha512  # s_client's CertificateVerify
    assert done.local_signature_scheme == SignatureScheme.ecdsa_secp521r1_sha512
    assert "Verification: OK" in cli.stderr, cli.describe()
    assert re.search(r"^Signature type: ECDSA$", cli.stderr, re.M), cli.describe()
    assert re.search(r"^Hash used: SHA512$", cli.stderr, re.M), cli.describe()


# ---------------------------------------------------------------- OpenSSL 4.0 (pyOpenSSL): brainpool


def _ssl() -> Any:
    return require_module("OpenSSL.SSL")


def _lib() -> Any:
    return require_module("OpenSSL._util").lib


def _bounded(sock: socket.socket) -> socket.socket:
    sock.settimeout(None)
    tv = struct.pack("ll", TIMEOUT, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
    return sock


def _context(method: str, files: PkiFiles, *, own: str | None = None, verify_peer: bool = False,
             groups: str | None = None, sigalgs: str | None = None) -> Any:
    """A TLS 1.3 pyOpenSSL context; ``own`` is "server" or "client" (whose
    certificate to load), ``verify_peer`` verifies the other side (required)."""
    SSL = _ssl()
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD if method == "server" else SSL.TLS_CLIENT_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
    if own is not None:
        credential = files.server if own == "server" else files.client
        ctx.use_certificate_chain_file(str(credential.chain))
        ctx.use_privatekey_file(str(credential.key))
    if verify_peer:
        ctx.load_verify_locations(str(files.ca))
        ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda *args: bool(args[-1]))
    if groups is not None:
        assert _lib().SSL_CTX_set1_curves_list(ctx._context, groups.encode()) == 1, groups
    if sigalgs is not None:
        assert _lib().SSL_CTX_set1_sigalgs_list(ctx._context, sigalgs.encode()) == 1, sigalgs
    return ctx


def _read_line(conn: Any) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        data += conn.recv(4096)
    return data


OPENSSL4 = KeyUpdatePeer("openssl")  # pyOpenSSL cannot start a KeyUpdate


def openssl4_side(conn: Any) -> dict[str, Any]:
    """The pyOpenSSL end of every brainpool conversation (either role)."""
    end = SocketEnd(conn.sendall, lambda: _read_line(conn))
    peer_side(end, OPENSSL4)
    peer = conn.get_peer_certificate()
    return {
        "group": conn.get_group_name(), "cipher": conn.get_cipher_name(), "lines": end.heard,
        "peer": peer.to_cryptography() if peer is not None else None,
    }


def converse_as_longtls(drv: SocketDriver) -> None:
    longtls_side(drv, OPENSSL4)


EXPECTED_LINES = OPENSSL4.lines_to_peer  # 2, 3 (after longtls' KeyUpdate), 5


class OpenSSL4Server(PeerServerThread):
    name = "pyOpenSSL"

    def __init__(self, ctx: Any, handler: Callable[[Any], Any] = openssl4_side) -> None:
        super().__init__(1, TIMEOUT)
        self.ctx = ctx
        self.handler = handler

    def serve(self, raw: socket.socket) -> Any:
        conn = _ssl().Connection(self.ctx, _bounded(raw))
        conn.set_accept_state()
        conn.do_handshake()
        result = self.handler(conn)
        conn.shutdown()
        return result


def openssl4_client(ctx: Any, port: int) -> dict[str, Any]:
    raw = _bounded(socket.create_connection((LOOPBACK, port), timeout=TIMEOUT))
    try:
        conn = _ssl().Connection(ctx, raw)
        conn.set_connect_state()
        conn.set_tlsext_host_name(b"localhost")
        conn.do_handshake()
        return openssl4_side(conn)
    finally:
        raw.close()


@pytest.mark.parametrize("group", BRAINPOOL_GROUPS, ids=_ids(BRAINPOOL_GROUPS))
def test_longtls_client_brainpool_group_with_openssl4(pki: Any, tmp_path: Path, group: NamedGroup) -> None:
    bundle, files = _pki(pki, "ecdsa-p256", tmp_path)
    cfg = client_config(bundle.ca, groups=[*DEFAULT_GROUPS, group])
    with OpenSSL4Server(_context("server", files, own="server", groups=group.name)) as server:
        drv = connect(cfg, server.port)
        try:
            done = drv.handshake()
            assert done.group == group, drv.describe()
            assert drv.conn.handshake.hello_retry_seen  # type: ignore[attr-defined]
            converse_as_longtls(drv)
        finally:
            drv.close()
    assert server.result["group"] == group.name  # type: ignore[index]
    assert server.result["lines"] == EXPECTED_LINES  # type: ignore[index]


@pytest.mark.parametrize("group", BRAINPOOL_GROUPS, ids=_ids(BRAINPOOL_GROUPS))
def test_openssl4_client_brainpool_group_with_longtls_server(pki: Any, tmp_path: Path, group: NamedGroup) -> None:
    bundle, files = _pki(pki, "ecdsa-p256", tmp_path)
    cfg = server_config(bundle.server, groups=[*DEFAULT_GROUPS, group])
    with LongtlsServer(cfg, converse_as_longtls) as server:
        info = openssl4_client(_context("client", files, verify_peer=True, groups=group.name), server.port)
    assert server.handshakes[0].group == group
    assert info["group"] == group.name
    assert info["lines"] == EXPECTED_LINES


@pytest.mark.parametrize("key_type", BRAINPOOL_KEYS)
def test_longtls_client_brainpool_certificates_with_openssl4(pki: Any, tmp_path: Path, key_type: str) -> None:
    """Mutual TLS with brainpool leaves: longtls verifies OpenSSL's brainpool
    CertificateVerify (OpenSSL signs with the scheme as longtls offered it by
    default) and OpenSSL verifies longtls' (OpenSSL offers only that scheme)."""
    scheme, name = BRAINPOOL_KEYS[key_type]
    bundle, files = _pki(pki, key_type, tmp_path, ca_key_type="ecdsa-p256")
    ctx = _context("server", files, own="server", verify_peer=True, sigalgs=name)
    with OpenSSL4Server(ctx) as server:
        drv = connect(client_config(bundle.ca, client_cert=bundle.client), server.port)
        try:
            done = drv.handshake()
            assert done.signature_scheme == scheme and done.local_signature_scheme == scheme
            assert done.client_authenticated and done.peer_certificates[0] == bundle.server.cert
            converse_as_longtls(drv)
        finally:
            drv.close()
    assert server.result["peer"] == bundle.client.cert  # type: ignore[index]
    assert server.result["lines"] == EXPECTED_LINES  # type: ignore[index]


@pytest.mark.parametrize("key_type", BRAINPOOL_KEYS)
def test_openssl4_client_brainpool_certificates_with_longtls_server(pki: Any, tmp_path: Path, key_type: str) -> None:
    scheme, name = BRAINPOOL_KEYS[key_type]
    bundle, files = _pki(pki, key_type, tmp_path, ca_key_type="ecdsa-p256")
    cfg = server_config(bundle.server, client_ca=bundle.ca, client_auth=ClientAuth.REQUIRED)
    ctx = _context("client", files, own="client", verify_peer=True, sigalgs=name)
    with LongtlsServer(cfg, converse_as_longtls) as server:
        info = openssl4_client(ctx, server.port)
    done = server.handshakes[0]
    assert done.signature_scheme == scheme and done.local_signature_scheme == scheme
    assert done.client_authenticated and done.peer_certificates[0] == bundle.client.cert
    assert info["peer"] == bundle.server.cert
    assert info["lines"] == EXPECTED_LINES


def test_brainpool_ca_chain_openssl4_accepts_longtls_refuses(pki: Any, tmp_path: Path) -> None:
    """The documented limitation, with a real peer: OpenSSL 4.0 verifies a
    chain whose CA key is brainpoolP256r1 (longtls serving it); longtls,
    verifying with the Web PKI profile, refuses the same chain from OpenSSL
    with unsupported_certificate and a message that says what works."""
    bundle, files = _pki(pki, "ecdsa-brainpoolP256r1", tmp_path)  # CA and leaves brainpool
    with LongtlsServer(server_config(bundle.server), converse_as_longtls) as server:
        info = openssl4_client(_context("client", files, verify_peer=True), server.port)
    assert info["peer"] == bundle.server.cert
    assert server.handshakes[0].local_signature_scheme == SignatureScheme.ecdsa_brainpoolP256r1tls13_sha256

    # OpenSSL's handshake is the thing that fails here (it gets our alert
    # before the client's Finished), so the thread is joined by hand.
    server_thread = OpenSSL4Server(_context("server", files, own="server"), handler=lambda conn: None)
    server_thread.thread.start()
    drv = connect(client_config(bundle.ca), server_thread.port)
    try:
        with pytest.raises(DriverError):
            drv.handshake()
    finally:
        drv.sock.close()
        server_thread.thread.join(TIMEOUT)
    assert isinstance(drv.error, RemoteProtocolError), drv.describe()
    assert drv.error.alert is AlertDescription.unsupported_certificate
    assert "brainpool" in str(drv.error)
    assert "tls alert unsupported certificate" in repr(server_thread.error), server_thread.error


# ---------------------------------------------------------------- GnuTLS 3.7 (gnutls-cli)

GNUTLS_TLS13 = "NORMAL:-VERS-ALL:+VERS-TLS1.3"
# longtls group -> GnuTLS priority name and its "- Description:" key exchange text.
GNUTLS_GROUPS = {
    G.secp521r1: ("GROUP-SECP521R1", "(ECDHE-SECP521R1)"),
    G.x448: ("GROUP-X448", "(ECDHE-X448)"),
    G.ffdhe2048: ("GROUP-FFDHE2048", "(DHE-FFDHE2048)"),
    G.ffdhe8192: ("GROUP-FFDHE8192", "(DHE-FFDHE8192)"),
}


def gnutls_cli(files: PkiFiles, port: int, priority: str) -> list[str]:
    return [
        "gnutls-cli", "--x509cafile", str(files.ca), "--port", str(port), "--priority", priority,
        "localhost",
    ]  # fmt: skip


def _run_gnutls_cli(server: LongtlsServer, args: list[str]) -> PeerProcess:
    with start_process(args, ready_pattern=r"Handshake was completed") as cli:
        converse_with_s_client(cli)  # serve_s_client's script, from gnutls-cli
        server.join()
    return cli


@pytest.mark.parametrize("group", list(GNUTLS_GROUPS), ids=_ids(GNUTLS_GROUPS))
def test_gnutls_cli_longtls_server_group_and_p521_certificate(
    pki: Any, tmp_path: Path, group: NamedGroup
) -> None:
    """gnutls-cli limited to one of the new groups, verifying longtls' P-521
    chain and ecdsa_secp521r1_sha512 CertificateVerify."""
    bundle, files = _pki(pki, "ecdsa-p521", tmp_path)
    name, description = GNUTLS_GROUPS[group]
    cfg = server_config(bundle.server, groups=[*DEFAULT_GROUPS, group])
    with LongtlsServer(cfg, serve_s_client) as server:
        cli = _run_gnutls_cli(server, gnutls_cli(files, server.port, f"{GNUTLS_TLS13}:-GROUP-ALL:+{name}"))
    assert server.handshakes[0].group == group
    assert server.handshakes[0].local_signature_scheme == SignatureScheme.ecdsa_secp521r1_sha512
    assert "The certificate is trusted" in cli.stdout, cli.describe()
    desc = re.search(r"- Description: (.*)", cli.stdout)
    assert desc and description in desc.group(1), cli.describe()
    assert "(ECDSA-SECP521R1-SHA512)" in desc.group(1), cli.describe()


@pytest.mark.parametrize("suite", CCM_SUITES, ids=_ids(CCM_SUITES))
def test_gnutls_cli_longtls_server_ccm(pki: Any, tmp_path: Path, suite: CipherSuite) -> None:
    bundle, files = _pki(pki, "ecdsa-p256", tmp_path)
    gnutls_name = {CipherSuite.TLS_AES_128_CCM_SHA256: "AES-128-CCM",
                   CipherSuite.TLS_AES_128_CCM_8_SHA256: "AES-128-CCM-8"}[suite]
    with LongtlsServer(server_config(bundle.server, cipher_suites=[suite]), serve_s_client) as server:
        priority = f"{GNUTLS_TLS13}:-CIPHER-ALL:+{gnutls_name}"
        cli = _run_gnutls_cli(server, gnutls_cli(files, server.port, priority))
    assert server.handshakes[0].cipher_suite == suite
    desc = re.search(r"- Description: (.*)", cli.stdout)
    assert desc and f"({gnutls_name})" in desc.group(1), cli.describe()
