"""Every interop peer the suite relies on is installed, runnable and capable.

These fail (never skip) when a peer is missing: run `make peers` / `make venv`.
They also show, in a few lines each, how to drive each peer from a test.
"""

from __future__ import annotations

import re
import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from helpers.peers import free_port, require_binary, require_module, run, start_process
from helpers.pki import make_pki

TLSLITE_VERSION = "0.9.0b2"


# --- command-line peers --------------------------------------------------------


def test_openssl_cli_is_3x() -> None:
    require_binary("openssl")
    out = run(["openssl", "version"]).stdout
    assert re.match(r"OpenSSL 3\.", out), out


def test_gnutls_tools_run() -> None:
    for tool in ("gnutls-cli", "gnutls-serv", "certtool"):
        require_binary(tool)
    out = run(["gnutls-cli", "--version"]).stdout
    assert re.search(r"gnutls-cli 3\.\d+", out), out
    run(["gnutls-serv", "--version"])
    run(["certtool", "--version"])


def test_tshark_runs_and_dissects_tls() -> None:
    require_binary("tshark")
    out = run(["tshark", "--version"]).stdout
    assert out.startswith("TShark"), out
    protocols = run(["tshark", "-G", "protocols"]).stdout
    filters = {line.split("\t")[2] for line in protocols.splitlines() if line.count("\t") >= 2}
    assert {"tls", "dtls"} <= filters


# --- Python peers -------------------------------------------------------------------


def test_tlslite_ng_has_ml_kem_and_ml_dsa() -> None:
    tlslite = require_module("tlslite")
    assert tlslite.__version__ == TLSLITE_VERSION
    compat = require_module("tlslite.utils.compat")
    # tlslite turns ML-KEM / ML-DSA on only when kyber-py / dilithium-py import.
    assert compat.ML_KEM_AVAILABLE, "kyber-py not importable: run `make venv`"
    assert compat.ML_DSA_AVAILABLE, "dilithium-py not importable: run `make venv`"
    hs = require_module("tlslite.handshakesettings")
    settings = hs.HandshakeSettings()
    assert settings.keyShares[0] == "x25519mlkem768"
    assert {"secp256r1mlkem768", "x25519mlkem768", "secp384r1mlkem1024"} <= set(settings.eccCurves)
    assert {"mldsa44", "mldsa65", "mldsa87"} <= set(hs.SIGNATURE_SCHEMES)


def _pyopenssl_memory_handshake(
    server_ctx: Any, client_ctx: Any, server_name: bytes = b"localhost"
) -> tuple[Any, Any]:
    """Handshake two pyOpenSSL Connections through memory BIOs."""
    SSL = require_module("OpenSSL.SSL")
    server = SSL.Connection(server_ctx, None)
    server.set_accept_state()
    client = SSL.Connection(client_ctx, None)
    client.set_connect_state()
    client.set_tlsext_host_name(server_name)
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, conn, peer in (("client", client, server), ("server", server, client)):
            if not done[name]:
                try:
                    conn.do_handshake()
                    done[name] = True
                except SSL.WantReadError:
                    pass
            try:
                data = conn.bio_read(1 << 16)
            except SSL.WantReadError:
                continue
            peer.bio_write(data)
        if all(done.values()):
            return client, server
    raise AssertionError("pyOpenSSL memory handshake did not complete")


def test_pyopenssl_is_openssl_4_with_x25519mlkem768_by_default(pki: Any, tmp_path: Path) -> None:
    SSL = require_module("OpenSSL.SSL")
    version = SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode()
    assert version.startswith("OpenSSL 4."), version

    files = pki("ecdsa-p256").write_pem(tmp_path)
    server_ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    server_ctx.use_certificate_chain_file(str(files.server.chain))
    server_ctx.use_privatekey_file(str(files.server.key))
    client_ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    client_ctx.load_verify_locations(str(files.ca))
    client_ctx.set_verify(SSL.VERIFY_PEER, lambda _c, _x, _e, _d, ok: bool(ok))

    client, server = _pyopenssl_memory_handshake(server_ctx, client_ctx)
    assert client.get_protocol_version_name() == "TLSv1.3"
    # Connection.get_group_name() wraps SSL_get0_group_name().
    assert client.get_group_name() == "X25519MLKEM768"
    assert server.get_group_name() == "X25519MLKEM768"


def test_tlslite_server_mldsa65_mlkem_with_pyopenssl_client(pki: Any, tmp_path: Path) -> None:
    """tlslite-ng (kyber-py, dilithium-py) serves a pki.py ML-DSA-65 chain and
    OpenSSL 4 (pyOpenSSL) verifies it over X25519MLKEM768."""
    SSL = require_module("OpenSSL.SSL")
    tlslite_api = require_module("tlslite.api")
    bundle = pki("mldsa65")
    files = bundle.write_pem(tmp_path)

    chain = tlslite_api.X509CertChain()
    chain.parsePemList(bundle.server.chain_pem().decode())
    key = tlslite_api.parsePEMKey(bundle.server.key_pem().decode(), private=True)

    server_sock, client_sock = socket.socketpair()
    # pyOpenSSL needs a blocking socket; if the tlslite side fails it closes
    # its end, so the client sees EOF instead of hanging.
    server_sock.settimeout(30)
    result: dict[str, Any] = {}

    def serve() -> None:
        try:
            conn = tlslite_api.TLSConnection(server_sock)
            conn.handshakeServer(
                certChain=chain, privateKey=key, settings=tlslite_api.HandshakeSettings()
            )
            result["version"] = conn.version
            result["sigalg"] = conn.serverSigAlg
            result["data"] = conn.read(max=4, min=4)
            conn.write(b"pong")
            conn.close()
        except Exception as exc:  # reported by the main thread
            result["error"] = exc
            server_sock.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
        ctx.load_verify_locations(str(files.ca))
        ctx.set_verify(SSL.VERIFY_PEER, lambda _c, _x, _e, _d, ok: bool(ok))
        client = SSL.Connection(ctx, client_sock)
        client.set_connect_state()
        client.set_tlsext_host_name(b"localhost")
        client.do_handshake()
        client.sendall(b"ping")
        assert client.recv(4) == b"pong"
        assert client.get_protocol_version_name() == "TLSv1.3"
        assert client.get_group_name() == "X25519MLKEM768"
    finally:
        thread.join(30)
        server_sock.close()
        client_sock.close()
    assert "error" not in result, result.get("error")
    assert result["version"] == (3, 4)
    assert result["data"] == b"ping"
    tls_constants = require_module("tlslite.constants")
    assert result["sigalg"] == tls_constants.SignatureScheme.mldsa65


# --- sanity: pki.py certificates work with the command-line peers ---------------------

# Debian 12's openssl 3.0 has no ML-DSA; those key types are covered by
# the pyOpenSSL/tlslite test above.
OPENSSL_CLI_KEY_TYPES = ["rsa-2048", "ecdsa-p256", "ecdsa-p384", "ed25519", "ed448"]


@pytest.mark.parametrize("key_type", OPENSSL_CLI_KEY_TYPES)
def test_openssl_s_server_and_s_client_with_pki_cert(key_type: str, tmp_path: Path) -> None:
    files = make_pki(key_type).write_pem(tmp_path)
    port = free_port()
    server_args = [
        "openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-naccept", "1",
        "-cert", str(files.server.cert), "-key", str(files.server.key),
        "-cert_chain", str(files.server.chain),
        "-Verify", "1", "-verify_return_error", "-CAfile", str(files.ca),
        "-tls1_3",
    ]  # fmt: skip
    client_args = [
        "openssl", "s_client", "-connect", f"127.0.0.1:{port}",
        "-servername", "localhost", "-verify_hostname", "localhost",
        "-CAfile", str(files.ca), "-verify_return_error",
        "-cert", str(files.client.cert), "-key", str(files.client.key),
        "-tls1_3", "-brief",
    ]  # fmt: skip
    with start_process(server_args, ready_pattern=r"^ACCEPT$") as server:
        client = run(client_args, input="hello from s_client\n", timeout=20)
        server.wait_for_output(r"hello from s_client", timeout=10)
    report = client.stdout + client.stderr
    assert "Protocol version: TLSv1.3" in report, report
    assert "Verification: OK" in report, report
    assert re.search(r"CN ?= ?localhost", server.output()), server.describe()  # client cert seen


def test_gnutls_serv_and_cli_with_pki_cert(tmp_path: Path) -> None:
    files = make_pki("ecdsa-p256").write_pem(tmp_path)
    port = free_port()
    server_args = [
        "gnutls-serv", "--echo", "--port", str(port),
        "--x509certfile", str(files.server.chain), "--x509keyfile", str(files.server.key),
        "--priority", "NORMAL:-VERS-ALL:+VERS-TLS1.3",
    ]  # fmt: skip
    client_args = [
        "gnutls-cli", "--x509cafile", str(files.ca), "--port", str(port),
        "--priority", "NORMAL:-VERS-ALL:+VERS-TLS1.3", "localhost",
    ]  # fmt: skip
    with start_process(server_args, ready_pattern=r"listening on IPv4") as server:
        client = run(client_args, input="", timeout=20)
    report = client.stdout + client.stderr
    assert "Handshake was completed" in report, report
    assert "TLS1.3" in report, report
    assert server.proc.returncode is not None  # stopped cleanly by start_process
