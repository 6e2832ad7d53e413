"""RFC 8879 certificate compression against other implementations.

tlslite-ng 0.9.0b2 implements RFC 8879 in full (zlib always; brotli and zstd
with the ``brotli`` and ``zstandard`` packages, both in the `test` extra): the
server's certificate and the client's, in the handshake and after it, both
directions, every algorithm.  longtls' HandshakeComplete / PeerAuthenticated
say which algorithm the peer's certificate arrived compressed with (set only
when a CompressedCertificate was received and decompressed), and the
handshake completing means each side verified a Finished over the
CompressedCertificate as sent.

GnuTLS has ``--compress-cert``, but Debian 12's 3.7.9 is built without any
compression library: ``gnutls-serv``/``gnutls-cli --compress-cert=zlib`` print
"Unknown compression method: zlib" and go on without it.  The GnuTLS tests
below ask for compression and read that message: against a build without it
they prove that longtls (which offers compression by default) falls back to a
plain Certificate both ways; against a build with it they require the
compressed one.

pyOpenSSL has no API for certificate compression, and the OpenSSL 4.0 inside
cryptography's wheel sends no compress_certificate extension (it is built
without zlib, brotli and zstd), so it is not a peer for this feature;
OpenSSL 3.0's s_client/s_server predate it (3.2 added it).
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from helpers.driver import LongtlsServer, SocketDriver, client_config, connect, server_config
from helpers.peers import LOOPBACK, PeerServerThread, free_port, require_module, start_process
from helpers.pki import Credential, Pki, make_ca, make_intermediate, make_leaf
from longtls.config import ClientAuth
from longtls.constants import CertificateCompressionAlgorithm
from longtls.events import PeerAuthenticated

pytestmark = pytest.mark.interop

TIMEOUT = 30.0
ALGORITHMS = list(CertificateCompressionAlgorithm)
IDS = [a.name for a in ALGORITHMS]
_DER = Encoding.DER

tlslite = require_module("tlslite.api")
tls_compression = require_module("tlslite.utils.compression")


@pytest.fixture(autouse=True)
def _tlslite_has_every_algorithm() -> None:
    impls = tls_compression.compression_algo_impls
    for name in ("brotli_compress", "brotli_decompress", "zstd_compress", "zstd_decompress"):
        assert impls[name] is not None, f"tlslite-ng lacks {name}: install brotli and zstandard (`make venv`)"


@pytest.fixture(scope="module")
def creds() -> Pki:
    """A root, and a server and a client certificate under an intermediate:
    each side sends leaf + intermediate (a single small leaf does not always
    shrink under brotli, and then rightly goes out uncompressed)."""
    ca = make_ca("ecdsa-p256")
    intermediate = make_intermediate(ca, "ecdsa-p256")
    return Pki(
        ca=ca, server=make_leaf(intermediate, "ecdsa-p256"),
        client=make_leaf(intermediate, "ecdsa-p256", client=True),
    )


def _chain(cred: Credential) -> Any:
    chain = tlslite.X509CertChain()
    chain.parsePemList(cred.chain_pem().decode())
    return chain


def _key(cred: Credential) -> Any:
    return tlslite.parsePEMKey(cred.key_pem().decode(), private=True)


def _settings(*, send: list[str] | None = None, receive: list[str] | None = None) -> Any:
    """TLS 1.3 only; ``send``: the algorithms tlslite may compress its own
    certificate with; ``receive``: the ones it offers to decompress."""
    s = tlslite.HandshakeSettings()
    s.minVersion = (3, 4)
    s.maxVersion = (3, 4)
    if send is not None:
        s.certificate_compression_send = send
    if receive is not None:
        s.certificate_compression_receive = receive
    return s


def _read_line(conn: Any) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.read(max=4096, min=1)
        if not chunk:
            raise AssertionError(f"tlslite saw EOF after {data!r}")
        data += bytes(chunk)
    return data


def _client_der(conn: Any) -> bytes | None:
    chain = conn.session.clientCertChain
    return bytes(chain.x509List[0].bytes) if chain is not None else None


class TlsliteServer(PeerServerThread):
    name = "tlslite-ng"

    def __init__(self, cred: Credential, settings: Any, *, req_cert: bool = False, pha: bool = False) -> None:
        super().__init__(1, TIMEOUT)
        self.chain, self.key = _chain(cred), _key(cred)
        self.settings = settings
        self.req_cert = req_cert
        self.pha = pha

    def serve(self, raw: socket.socket) -> Any:
        conn = tlslite.TLSConnection(raw)
        conn.handshakeServer(
            certChain=self.chain, privateKey=self.key, settings=self.settings, reqCert=self.req_cert,
        )
        in_handshake = _client_der(conn)
        if self.pha:
            # Post-handshake authentication: the client's answer is read with its next data.
            for _ in conn.request_post_handshake_auth(self.settings):
                pass
        conn.write(b"hello from tlslite\n")
        line = _read_line(conn)
        conn.close()
        return {"line": line, "client_der": in_handshake, "client_der_after": _client_der(conn)}


def _converse(drv: SocketDriver) -> None:
    assert drv.recv_until(b"\n") == b"hello from tlslite\n"
    drv.send(b"hello from longtls\n")


# ------------------------------------------------- tlslite server, longtls client


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=IDS)
def test_tlslite_server_certificate_compressed_to_longtls(creds: Pki, algorithm: CertificateCompressionAlgorithm) -> None:
    """longtls offers one algorithm; tlslite compresses its certificate with it."""
    bundle = creds
    with TlsliteServer(bundle.server, _settings(send=[algorithm.name])) as srv:
        drv = connect(client_config(bundle.ca, certificate_compression=(algorithm,)), srv.port, timeout=TIMEOUT)
        try:
            done = drv.handshake()
            _converse(drv)
        finally:
            drv.close()
    assert done.peer_certificate_compression == algorithm, drv.describe()
    assert done.peer_certificates[0] == bundle.server.cert
    assert srv.result["line"] == b"hello from longtls\n"


def test_longtls_client_without_compression_gets_a_plain_certificate_from_tlslite(creds: Pki) -> None:
    bundle = creds
    with TlsliteServer(bundle.server, _settings()) as srv:
        drv = connect(client_config(bundle.ca, certificate_compression=()), srv.port, timeout=TIMEOUT)
        try:
            done = drv.handshake()
            _converse(drv)
        finally:
            drv.close()
    assert done.peer_certificate_compression is None


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=IDS)
def test_longtls_client_certificate_compressed_to_tlslite(creds: Pki, algorithm: CertificateCompressionAlgorithm) -> None:
    """tlslite's CertificateRequest offers one algorithm; longtls compresses its
    client certificate with it and tlslite accepts the chain."""
    bundle = creds
    with TlsliteServer(bundle.server, _settings(receive=[algorithm.name]), req_cert=True) as srv:
        cfg = client_config(bundle.ca, client_cert=bundle.client)
        drv = connect(cfg, srv.port, timeout=TIMEOUT)
        try:
            done = drv.handshake()
            _converse(drv)
        finally:
            drv.close()
    assert done.client_authenticated
    assert done.local_certificate_compression == algorithm, drv.describe()
    assert srv.result["client_der"] == bundle.client.cert.public_bytes(_DER)


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=IDS)
def test_longtls_post_handshake_certificate_compressed_to_tlslite(
    creds: Pki, algorithm: CertificateCompressionAlgorithm
) -> None:
    """tlslite asks for client authentication after the handshake, offering one
    algorithm; longtls answers with a CompressedCertificate that tlslite
    decompresses and whose Finished it verifies."""
    bundle = creds
    with TlsliteServer(bundle.server, _settings(receive=[algorithm.name]), pha=True) as srv:
        cfg = client_config(bundle.ca, client_cert=bundle.client, post_handshake_auth=True)
        drv = connect(cfg, srv.port, timeout=TIMEOUT)
        try:
            drv.handshake()
            _converse(drv)
            sent_with = drv.conn.handshake.local_certificate_compression
        finally:
            drv.close()
    assert sent_with == algorithm, drv.describe()
    assert srv.result["client_der"] is None  # nothing in the handshake
    assert srv.result["client_der_after"] == bundle.client.cert.public_bytes(_DER)


# ------------------------------------------------- longtls server, tlslite client


def _tlslite_client(port: int, settings: Any, client: Credential | None = None) -> Any:
    raw = socket.create_connection((LOOPBACK, port), timeout=TIMEOUT)
    try:
        conn = tlslite.TLSConnection(raw)
        kwargs: dict[str, Any] = {}
        if client is not None:
            kwargs = {"certChain": _chain(client), "privateKey": _key(client)}
        conn.handshakeClientCert(settings=settings, serverName="localhost", **kwargs)
        server_der = bytes(conn.session.serverCertChain.x509List[0].bytes)
        line = _read_line(conn)
        conn.write(b"hello from tlslite\n")
        # Until longtls closes: post-handshake messages are processed while reading.
        while conn.read(max=4096, min=1):
            pass
        conn.close()
        return server_der, line
    finally:
        raw.close()


def _greet(drv: SocketDriver) -> None:
    drv.send(b"hello from longtls\n")
    assert drv.recv_until(b"\n") == b"hello from tlslite\n"


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=IDS)
def test_longtls_server_certificate_compressed_to_tlslite(creds: Pki, algorithm: CertificateCompressionAlgorithm) -> None:
    """tlslite offers one algorithm; longtls (default: all three) compresses with it."""
    bundle = creds
    with LongtlsServer(server_config(bundle.server), _greet, timeout=TIMEOUT) as server:
        server_der, line = _tlslite_client(server.port, _settings(receive=[algorithm.name]))
    assert server.handshakes[0].local_certificate_compression == algorithm
    assert server_der == bundle.server.cert.public_bytes(_DER)
    assert line == b"hello from longtls\n"


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=IDS)
def test_tlslite_client_certificate_compressed_to_longtls(creds: Pki, algorithm: CertificateCompressionAlgorithm) -> None:
    """longtls' CertificateRequest offers compression; tlslite compresses its
    client certificate with the algorithm it is limited to."""
    bundle = creds
    cfg = server_config(bundle.server, client_ca=bundle.ca, client_auth=ClientAuth.REQUIRED)
    with LongtlsServer(cfg, _greet, timeout=TIMEOUT) as server:
        _tlslite_client(server.port, _settings(send=[algorithm.name]), client=bundle.client)
    done = server.handshakes[0]
    assert done.client_authenticated
    assert done.peer_certificate_compression == algorithm
    assert done.peer_certificates[0] == bundle.client.cert


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=IDS)
def test_tlslite_post_handshake_certificate_compressed_to_longtls(
    creds: Pki, algorithm: CertificateCompressionAlgorithm
) -> None:
    """longtls asks for the client certificate after the handshake; tlslite
    answers compressed."""
    bundle = creds
    # tlslite-ng ignores its certificate_compression_send after the handshake
    # and takes the first algorithm offered: offer only the one under test.
    cfg = server_config(bundle.server, client_ca=bundle.ca, certificate_compression=(algorithm,))

    def authenticate(drv: SocketDriver) -> PeerAuthenticated:
        _greet(drv)
        drv.conn.request_client_authentication()
        drv.flush()
        return drv.wait_for(PeerAuthenticated)

    with LongtlsServer(cfg, authenticate, timeout=TIMEOUT) as server:
        _tlslite_client(server.port, _settings(send=[algorithm.name]), client=bundle.client)
    event = server.result
    assert event.certificate_compression == algorithm
    assert event.peer_certificates[0] == bundle.client.cert


# ------------------------------------------------- GnuTLS 3.7.9 (Debian 12: no compression)


def _gnutls_has(peer_output: str, algorithm: str) -> bool:
    """False when this GnuTLS build lacks the algorithm (it says so and goes on)."""
    return f"Unknown compression method: {algorithm}" not in peer_output


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=IDS)
def test_gnutls_serv_with_compress_cert(creds: Pki, tmp_path: Path, algorithm: CertificateCompressionAlgorithm) -> None:
    """longtls client (offering every algorithm) against gnutls-serv asked to
    compress with ``algorithm``: compressed if this GnuTLS can, else the plain
    Certificate; the connection works either way."""
    bundle = creds
    files = bundle.write_pem(tmp_path)
    port = free_port()
    args = [
        "gnutls-serv", "--echo", "--port", str(port), "--x509certfile", str(files.server.chain),
        "--x509keyfile", str(files.server.key), "--priority", "NORMAL:-VERS-ALL:+VERS-TLS1.3",
        f"--compress-cert={algorithm.name}",
    ]
    with start_process(args, ready_pattern=r"listening on IPv4") as srv:
        drv = connect(client_config(bundle.ca), port, timeout=TIMEOUT)
        try:
            done = drv.handshake()
            drv.send(b"echo me\n")
            assert drv.recv_until(b"\n") == b"echo me\n"
        finally:
            drv.close()
        output = srv.output()
    expected = algorithm if _gnutls_has(output, algorithm.name) else None
    assert done.peer_certificate_compression == expected, srv.describe()
    assert done.peer_certificates[0] == bundle.server.cert


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=IDS)
def test_gnutls_cli_with_compress_cert(creds: Pki, tmp_path: Path, algorithm: CertificateCompressionAlgorithm) -> None:
    """gnutls-cli offering ``algorithm`` (if its build has it) to a longtls
    server, which compresses exactly when it was offered."""
    bundle = creds
    files = bundle.write_pem(tmp_path)

    def greet(drv: SocketDriver) -> None:
        assert drv.recv_until(b"\n") == b"from gnutls-cli\n"
        drv.send(b"from longtls\n")

    with LongtlsServer(server_config(bundle.server), greet, timeout=TIMEOUT) as server:
        args = [
            "gnutls-cli", "--x509cafile", str(files.ca), "--port", str(server.port),
            "--priority", "NORMAL:-VERS-ALL:+VERS-TLS1.3", f"--compress-cert={algorithm.name}", "localhost",
        ]
        with start_process(args, ready_pattern=r"Handshake was completed") as cli:
            cli.write("from gnutls-cli\n")
            cli.wait_for_output(r"^from longtls$")
            output = cli.output()
        server.join()
    assert "The certificate is trusted" in output, output
    expected = algorithm if _gnutls_has(output, algorithm.name) else None
    assert server.handshakes[0].local_certificate_compression == expected, output
    assert re.search(r"Unknown compression method|Handshake was completed", output)
