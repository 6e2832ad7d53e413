"""longtls against GnuTLS 3.7 (`gnutls-serv`, `gnutls-cli`).

gnutls-serv --echo answers a KeyUpdate but cannot start one; gnutls-cli can
with --inline-commands: "^rekey^" updates its keys and requests ours,
"^rekey1^" updates only its own.  GnuTLS 3.7 has no ML-KEM, so the classic
groups are exercised.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from helpers.driver import (
    Handler,
    LongtlsServer,
    SocketDriver,
    client_config,
    connect,
    server_config,
)
from helpers.keyupdate import KeyUpdatePeer, ProcessEnd, longtls_side, peer_side
from helpers.peers import PeerProcess, free_port, start_process
from helpers.pki import Pki, PkiFiles
from longtls.config import ClientAuth, Configuration
from longtls.constants import CipherSuite, NamedGroup, SignatureScheme

KEY_TYPES = ["rsa-2048", "ecdsa-p256", "ed25519"]
# longtls refuses Ed25519 CA keys (Web PKI profile): Ed25519 leaves get an ECDSA CA.
CA_KEY_TYPE = {"ed25519": "ecdsa-p256"}
EXPECTED_SCHEME = {
    "rsa-2048": SignatureScheme.rsa_pss_rsae_sha256,
    "ecdsa-p256": SignatureScheme.ecdsa_secp256r1_sha256,
    "ed25519": SignatureScheme.ed25519,
}
GNUTLS_GROUPS = {
    NamedGroup.x25519: "GROUP-X25519",
    NamedGroup.secp256r1: "GROUP-SECP256R1",
    NamedGroup.secp384r1: "GROUP-SECP384R1",
}
GNUTLS_KX = {NamedGroup.x25519: "ECDHE-X25519", NamedGroup.secp256r1: "ECDHE-SECP256R1",
             NamedGroup.secp384r1: "ECDHE-SECP384R1"}
GNUTLS_SIG = {"rsa-2048": "RSA-PSS-RSAE-SHA256", "ecdsa-p256": "ECDSA-SECP256R1-SHA256", "ed25519": "EdDSA-Ed25519"}
TLS13 = "NORMAL:-VERS-ALL:+VERS-TLS1.3"


def _priority(*groups: NamedGroup) -> str:
    if not groups:
        return TLS13
    return TLS13 + ":-GROUP-ALL" + "".join(f":+{GNUTLS_GROUPS[g]}" for g in groups)


def _pki(pki: Any, key_type: str, tmp_path: Path) -> tuple[Pki, PkiFiles]:
    bundle: Pki = pki(key_type, ca_key_type=CA_KEY_TYPE.get(key_type))
    return bundle, bundle.write_pem(tmp_path / key_type)


# ------------------------------------------------------------- gnutls-serv


def gnutls_serv(files: PkiFiles, port: int, priority: str, *extra: str) -> list[str]:
    return [
        "gnutls-serv", "--echo", "--port", str(port),
        "--x509certfile", str(files.server.chain), "--x509keyfile", str(files.server.key),
        "--priority", priority, *extra,
    ]  # fmt: skip


def converse_with_echo(drv: SocketDriver) -> None:
    """Data both ways (echoed), a KeyUpdate from longtls asking for one back,
    more data both ways."""
    drv.send(b"1 longtls to gnutls-serv\n")
    assert drv.recv_until(b"\n") == b"1 longtls to gnutls-serv\n"
    drv.update_keys(request_peer_update=True)
    drv.send(b"2 longtls after its KeyUpdate\n")
    # The echo comes back under gnutls' updated key: it answered the request.
    assert drv.recv_until(b"\n") == b"2 longtls after its KeyUpdate\n"
    assert [(e.generation, e.requested_by_peer) for e in drv.key_updates("send")] == [(1, False)]
    assert [e.generation for e in drv.key_updates("receive")] == [1], drv.describe()
    # and once more without asking
    drv.update_keys(request_peer_update=False)
    drv.send(b"3 longtls after a KeyUpdate not requesting one\n")
    assert drv.recv_until(b"\n") == b"3 longtls after a KeyUpdate not requesting one\n"
    assert [e.generation for e in drv.key_updates("send")] == [1, 2]
    assert [e.generation for e in drv.key_updates("receive")] == [1], drv.describe()


@pytest.mark.parametrize("group", list(GNUTLS_GROUPS), ids=[g.name for g in GNUTLS_GROUPS])
@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_longtls_client_gnutls_serv(pki: Any, tmp_path: Path, key_type: str, group: NamedGroup) -> None:
    """Default longtls client (shares X25519MLKEM768 + x25519) against a
    gnutls-serv limited to one group: the NIST curves need a HelloRetryRequest."""
    bundle, files = _pki(pki, key_type, tmp_path)
    port = free_port()
    with start_process(gnutls_serv(files, port, _priority(group)), ready_pattern=r"listening on IPv4"):
        drv = connect(client_config(bundle.ca), port)
        try:
            done = drv.handshake()
            assert not done.extended_key_update  # the peer does not offer EKU
            assert done.version == "TLSv1.3"
            assert done.group == group, drv.describe()
            assert drv.conn.handshake.hello_retry_seen == (group != NamedGroup.x25519)  # type: ignore[attr-defined]
            assert done.signature_scheme == EXPECTED_SCHEME[key_type]
            assert done.peer_certificates[0] == bundle.server.cert
            converse_with_echo(drv)
        finally:
            drv.close()


@pytest.mark.parametrize("suite", list(CipherSuite), ids=[s.name for s in CipherSuite])
def test_longtls_client_gnutls_serv_cipher_suites(pki: Any, tmp_path: Path, suite: CipherSuite) -> None:
    bundle, files = _pki(pki, "ecdsa-p256", tmp_path)
    port = free_port()
    # GnuTLS' NORMAL priority leaves CCM-8 out; ask for it.
    priority = TLS13 + (":+AES-128-CCM-8" if suite == CipherSuite.TLS_AES_128_CCM_8_SHA256 else "")
    with start_process(gnutls_serv(files, port, priority), ready_pattern=r"listening on IPv4"):
        drv = connect(client_config(bundle.ca, cipher_suites=[suite]), port)
        try:
            assert drv.handshake().cipher_suite == suite
            converse_with_echo(drv)
        finally:
            drv.close()


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_longtls_client_mutual_tls_with_gnutls_serv(pki: Any, tmp_path: Path, key_type: str) -> None:
    bundle, files = _pki(pki, key_type, tmp_path)
    port = free_port()
    args = gnutls_serv(
        files, port, TLS13, "--require-client-cert", "--verify-client-cert", "--x509cafile", str(files.ca)
    )
    with start_process(args, ready_pattern=r"listening on IPv4") as srv:
        drv = connect(client_config(bundle.ca, client_cert=bundle.client), port)
        try:
            done = drv.handshake()
            assert done.client_authenticated
            converse_with_echo(drv)
        finally:
            drv.close()
    assert "Error" not in srv.output(), srv.describe()


def test_longtls_client_resumption_with_gnutls_serv(pki: Any, tmp_path: Path) -> None:
    bundle, files = _pki(pki, "ecdsa-p256", tmp_path)
    port = free_port()
    cfg = client_config(bundle.ca)
    with start_process(gnutls_serv(files, port, TLS13), ready_pattern=r"listening on IPv4"):
        first = connect(cfg, port)
        try:
            assert not first.handshake().resumed
            tickets = first.wait_for_tickets(1)
            converse_with_echo(first)
        finally:
            first.close()
        second = connect(dataclasses.replace(cfg, session_ticket=tickets[0].ticket), port)
        try:
            done = second.handshake()
            assert done.resumed, second.describe()
            assert done.signature_scheme is None
            assert done.group is not None
            converse_with_echo(second)
        finally:
            second.close()


# ------------------------------------------------------------- gnutls-cli


def gnutls_cli(files: PkiFiles, port: int, priority: str, *extra: str) -> list[str]:
    return [
        "gnutls-cli", "--x509cafile", str(files.ca), "--port", str(port),
        "--priority", priority, "--inline-commands", *extra, "localhost",
    ]  # fmt: skip


# The whole KeyUpdate conversation of helpers.keyupdate: gnutls-cli's "^rekey^"
# sends update_requested, "^rekey1^" update_not_requested.
GNUTLS_CLI = KeyUpdatePeer("gnutls-cli", starts_key_update=True, sends_not_requested=True)


def serve_gnutls_cli(drv: SocketDriver) -> None:
    """longtls side of converse_with_gnutls_cli (runs in the server thread)."""
    longtls_side(drv, GNUTLS_CLI)


def converse_with_gnutls_cli(cli: PeerProcess) -> None:
    commands = {True: "^rekey^", False: "^rekey1^"}
    peer_side(ProcessEnd(cli, commands, confirmation="Rekey was completed"), GNUTLS_CLI)


def gnutls_cli_to_longtls(
    cfg: Configuration, files: PkiFiles, priority: str, *extra: str,
    handler: Handler | Sequence[Handler] = serve_gnutls_cli, ready: str = r"Handshake was completed",
) -> tuple[LongtlsServer, PeerProcess]:
    """gnutls-cli against a longtls server, holding the KeyUpdate conversation;
    returns the joined server and the finished gnutls-cli."""
    with LongtlsServer(cfg, handler) as server:
        with start_process(gnutls_cli(files, server.port, priority, *extra), ready_pattern=ready) as cli:
            converse_with_gnutls_cli(cli)
        server.join()
    return server, cli


@pytest.mark.parametrize("group", list(GNUTLS_GROUPS), ids=[g.name for g in GNUTLS_GROUPS])
@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_gnutls_cli_longtls_server(pki: Any, tmp_path: Path, key_type: str, group: NamedGroup) -> None:
    bundle, files = _pki(pki, key_type, tmp_path)
    server, cli = gnutls_cli_to_longtls(server_config(bundle.server), files, _priority(group))
    done = server.handshakes[0]
    assert done.group == group
    assert done.server_name == "localhost"
    assert server.driver.conn.handshake.hrr_group is None  # type: ignore[attr-defined]
    out = cli.stdout
    assert "The certificate is trusted" in out, cli.describe()
    desc = re.search(r"- Description: (.*)", out)
    assert desc, cli.describe()
    assert GNUTLS_KX[group] in desc.group(1) and GNUTLS_SIG[key_type] in desc.group(1), cli.describe()


def test_gnutls_cli_hello_retry_request_from_longtls(pki: Any, tmp_path: Path) -> None:
    """gnutls-cli shares x25519 (and its first NIST curve); longtls accepts
    only secp384r1, its third group, and asks for it."""
    bundle, files = _pki(pki, "ecdsa-p256", tmp_path)
    cfg = server_config(bundle.server, groups=[NamedGroup.secp384r1])
    priority = _priority(NamedGroup.x25519, NamedGroup.secp256r1, NamedGroup.secp384r1)
    server, cli = gnutls_cli_to_longtls(cfg, files, priority)
    assert server.driver.conn.handshake.hrr_group == NamedGroup.secp384r1  # type: ignore[attr-defined]
    assert server.handshakes[0].group == NamedGroup.secp384r1
    assert "ECDHE-SECP384R1" in cli.stdout, cli.describe()


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_gnutls_cli_mutual_tls_with_longtls_server(pki: Any, tmp_path: Path, key_type: str) -> None:
    bundle, files = _pki(pki, key_type, tmp_path)
    cfg = server_config(bundle.server, client_ca=bundle.ca, client_auth=ClientAuth.REQUIRED)
    server, _ = gnutls_cli_to_longtls(
        cfg, files, TLS13, "--x509certfile", str(files.client.chain), "--x509keyfile", str(files.client.key)
    )
    done = server.handshakes[0]
    assert done.client_authenticated
    assert done.signature_scheme == EXPECTED_SCHEME[key_type]
    assert done.peer_certificates[0] == bundle.client.cert


def test_gnutls_cli_resumption_with_longtls_server(pki: Any, tmp_path: Path) -> None:
    """gnutls-cli --resume: a full handshake, then a resumed one with longtls' ticket."""
    bundle, files = _pki(pki, "ecdsa-p256", tmp_path)
    server, _ = gnutls_cli_to_longtls(
        server_config(bundle.server), files, TLS13, "--resume", "--waitresumption",
        handler=[SocketDriver.wait_for_peer_close, serve_gnutls_cli], ready=r"This is a resumed session",
    )
    first, second = server.handshakes
    assert not first.resumed
    assert second.resumed
    assert second.signature_scheme is None
    assert second.group is not None


# ----------------------------------------------------------- edge cases
#
# GnuTLS implements RFC 8449 record_size_limit, post-handshake authentication
# (gnutls-serv's "**REAUTH**" echo command, gnutls-cli --post-handshake-auth),
# exporters (--keymatexport) and ALPN.  gnutls-cli reads stdin with a 1 KB
# line buffer, so lines sent through it stay short.


def test_longtls_client_record_size_limit_with_gnutls_serv(pki: Any, tmp_path: Path) -> None:
    """Both sides advertise a limit: gnutls-serv 512, longtls 600.  longtls must
    send records of at most 512 bytes (gnutls refuses larger ones) and gnutls'
    records to longtls carry at most 599 bytes of data."""
    from longtls.events import ApplicationData

    bundle, files = _pki(pki, "ecdsa-p256", tmp_path)
    port = free_port()
    with start_process(gnutls_serv(files, port, TLS13, "--recordsize", "512"), ready_pattern=r"listening on IPv4"):
        drv = connect(client_config(bundle.ca, record_size_limit=600), port)
        try:
            drv.handshake()
            assert drv.conn.peer_record_size_limit == 513  # gnutls counts the content type
            big = b"5" * 5000 + b"\n"
            drv.send(big)
            assert drv.recv_until(b"\n") == big
            sizes = [len(e.data) for e in drv.of_type(ApplicationData)]
            assert max(sizes) == 599, sizes
            converse_with_echo(drv)
        finally:
            drv.close()


def test_gnutls_cli_record_size_limit_with_longtls_server(pki: Any, tmp_path: Path) -> None:
    """gnutls-cli --recordsize 512: longtls splits its 6000-byte reply into
    records gnutls accepts."""
    bundle, files = _pki(pki, "ecdsa-p256", tmp_path)
    reply = b"6" * 6000 + b"\n"

    def handler(drv: SocketDriver) -> int:
        assert drv.recv_until(b"\n") == b"1 gnutls-cli to longtls\n"
        drv.send(reply)
        assert drv.recv_until(b"\n") == b"2 gnutls-cli got it\n"
        return drv.conn.peer_record_size_limit

    with LongtlsServer(server_config(bundle.server), handler) as server:
        args = gnutls_cli(files, server.port, TLS13, "--recordsize", "512")
        with start_process(args, ready_pattern=r"Handshake was completed") as cli:
            cli.write("1 gnutls-cli to longtls\n")
            cli.wait_for_output(r"^6{6000}$")
            cli.write("2 gnutls-cli got it\n")
            server.join()  # before gnutls-cli is stopped
    assert server.result == 513


def test_gnutls_cli_post_handshake_auth_by_longtls_server(pki: Any, tmp_path: Path) -> None:
    from longtls.events import PeerAuthenticated

    bundle, files = _pki(pki, "ed25519", tmp_path)

    def handler(drv: SocketDriver) -> PeerAuthenticated:
        assert drv.recv_until(b"\n") == b"1 gnutls-cli to longtls\n"
        drv.conn.request_client_authentication()
        drv.flush()
        event = drv.wait_for(PeerAuthenticated)
        drv.send(b"2 longtls authenticated you\n")
        assert drv.recv_until(b"\n") == b"3 gnutls-cli after re-auth\n"
        return event

    cfg = server_config(bundle.server, client_ca=bundle.ca)
    with LongtlsServer(cfg, handler) as server:
        args = gnutls_cli(files, server.port, TLS13, "--post-handshake-auth",
                          "--x509certfile", str(files.client.chain), "--x509keyfile", str(files.client.key))
        with start_process(args, ready_pattern=r"Handshake was completed") as cli:
            cli.write("1 gnutls-cli to longtls\n")
            cli.wait_for_output(r"^2 longtls authenticated you$")
            cli.write("3 gnutls-cli after re-auth\n")
            server.join()  # before gnutls-cli is stopped
    assert not server.handshakes[0].client_authenticated
    event = server.result
    assert event.peer_certificates[0] == bundle.client.cert
    assert event.signature_scheme == SignatureScheme.ed25519
    assert "Re-auth was performed" in cli.output(), cli.describe()


def test_longtls_client_post_handshake_auth_by_gnutls_serv(pki: Any, tmp_path: Path) -> None:
    """gnutls-serv's echo "**REAUTH**" command runs gnutls_reauth(), which
    only reports success after checking longtls' Certificate,
    CertificateVerify and Finished."""
    bundle, files = _pki(pki, "ecdsa-p256", tmp_path)
    port = free_port()
    args = gnutls_serv(
        files, port, TLS13, "--disable-client-cert", "--verify-client-cert", "--x509cafile", str(files.ca)
    )
    cfg = client_config(bundle.ca, client_cert=bundle.client, post_handshake_auth=True)
    with start_process(args, ready_pattern=r"listening on IPv4") as srv:
        drv = connect(cfg, port)
        try:
            assert not drv.handshake().client_authenticated
            drv.send(b"**REAUTH**\n")
            assert drv.recv_until(b"\n") == b"Successfully executed command\n"
            converse_with_echo(drv)
        finally:
            drv.close()
        srv.wait_for_output(r"Sending re-auth request")


def test_gnutls_cli_exporter_matches_longtls(pki: Any, tmp_path: Path) -> None:
    bundle, files = _pki(pki, "ecdsa-p256", tmp_path)
    label = "EXPERIMENTAL-longtls-interop"

    def handler(drv: SocketDriver) -> bytes:
        serve_gnutls_cli(drv)
        return drv.conn.export_keying_material(label, b"", 20)

    server, cli = gnutls_cli_to_longtls(
        server_config(bundle.server), files, TLS13, "--keymatexport", label, "--keymatexportsize", "20",
        handler=handler,
    )
    m = re.search(r"- Key material: ([0-9a-f]+)", cli.stdout)
    assert m, cli.describe()
    assert bytes.fromhex(m.group(1)) == server.result


def test_gnutls_alpn_both_directions(pki: Any, tmp_path: Path) -> None:
    bundle, files = _pki(pki, "ecdsa-p256", tmp_path)
    port = free_port()
    with start_process(
        gnutls_serv(files, port, TLS13, "--alpn", "h2", "--alpn", "http/1.1"), ready_pattern=r"listening on IPv4"
    ):
        drv = connect(client_config(bundle.ca, alpn_protocols=["http/1.1"]), port)
        try:
            assert drv.handshake().alpn_protocol == "http/1.1"
            converse_with_echo(drv)
        finally:
            drv.close()
    cfg = server_config(bundle.server, alpn_protocols=["h2", "http/1.1"])
    server, cli = gnutls_cli_to_longtls(cfg, files, TLS13, "--alpn", "http/1.1", "--alpn", "h2")
    assert server.handshakes[0].alpn_protocol == "h2"  # longtls' preference
    assert re.search(r"- Application protocol: h2", cli.stdout), cli.describe()
