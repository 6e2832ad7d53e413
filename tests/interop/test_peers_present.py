"""Every interop peer the suite relies on is installed, runnable and capable.

These fail (never skip) when a peer is missing: run `make peers` / `make venv`.
They also show, in a few lines each, how to drive each peer from a test.
"""

from __future__ import annotations

import re
import shutil
import socket
import threading
from pathlib import Path
from typing import Any

import pytest

import helpers.wolfssl as wolfssl_helper
from helpers.peers import free_port, require_binary, require_module, run, start_process
from helpers.pki import make_pki
from helpers.wolfssl import (
    CLIENT_MESSAGE,
    DTLS13_BANNER,
    GROUP_PRINTED,
    SERVER_REPLY,
    WOLFSSL_VERSION,
    RecordHeader,
    RecordingRelay,
    TrafficKeys,
    client_command,
    next_traffic_secret,
    open_record,
    read_keylog,
    run_client,
    server_command,
    split_records,
    start_server,
    wolfssl_build,
)
from vectors.rfc8448 import specs_dir

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


# --- wolfSSL 5.5.4 with DTLS 1.3 (scripts/build-wolfssl.sh) ---------------------------
# docs/interop-wolfssl.md: how the peer is built, its options, what it sends.

ALERT, HANDSHAKE, APPLICATION_DATA, ACK = 21, 22, 23, 26  # ContentType (RFC 9147 §4)
CLIENT_HELLO, SERVER_HELLO, ENCRYPTED_EXTENSIONS, CERTIFICATE, KEY_UPDATE = 1, 2, 8, 11, 24
# ServerHello.random of a HelloRetryRequest: SHA-256("HelloRetryRequest") (RFC 9846 §4.1.3)
HRR_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")
# the secrets wolfSSL's key log holds for one handshake (scripts/wolfssl-keylog.c)
HANDSHAKE_SECRETS = {
    "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
    "SERVER_HANDSHAKE_TRAFFIC_SECRET",
    "CLIENT_TRAFFIC_SECRET_0",
    "SERVER_TRAFFIC_SECRET_0",
}


def _records(relay: RecordingRelay, direction: str, cid_length: int = 0) -> list[RecordHeader]:
    """Every record one side sent ("c2s" or "s2c"), in order."""
    return [
        record
        for d, datagram in relay.datagrams
        if d == direction
        for record in split_records(datagram, cid_length)
    ]


def _ciphertexts(records: list[RecordHeader], epoch_bits: int) -> list[RecordHeader]:
    return [r for r in records if r.unified is not None and r.epoch_bits == epoch_bits]


def test_wolfssl_dtls13_peer_is_built() -> None:
    build = wolfssl_build()
    assert build.info.startswith(f"wolfSSL {WOLFSSL_VERSION}-"), build.info
    options = (build.source / "wolfssl" / "options.h").read_text()
    for define in (
        "WOLFSSL_DTLS13",
        "WOLFSSL_DTLS_CID",
        "WOLFSSL_SEND_HRR_COOKIE",
        "HAVE_CURVE25519",
        "WOLFSSL_DTLS_MTU",
        "WOLFSSL_POST_HANDSHAKE_AUTH",
        "HAVE_SESSION_TICKET",
        "HAVE_SECRET_CALLBACK",
    ):
        assert f"#define {define}\n" in options, f"{define} missing from {build.info}"


def test_wolfssl_missing_build_fails_loudly(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LONGTLS_PEERS_DIR", str(tmp_path / "no-peers-here"))
    wolfssl_helper._build_directory.cache_clear()
    try:
        with pytest.raises(pytest.fail.Exception, match=r"not built.*Run `make peers`"):
            wolfssl_build()
    finally:
        wolfssl_helper._build_directory.cache_clear()


@pytest.mark.parametrize(
    ("key_type", "group", "hello_retry"),
    [
        ("ecdsa-p256", "secp256r1", False),
        ("rsa-2048", "x25519", False),
        # no key share offered: the HelloRetryRequest also names the group
        ("ecdsa-p256", None, True),
    ],
)
def test_wolfssl_dtls13_server_and_client_with_pki_cert(
    pki: Any, tmp_path: Path, key_type: str, group: str | None, hello_retry: bool
) -> None:
    """Handshake (mutual authentication with pki.py certificates, stateless
    HRR cookie), data both ways (the server echoes), and the key logs: the
    records on the wire open with the logged secrets and "dtls13" labels."""
    build = wolfssl_build()
    files = pki(key_type).write_pem(tmp_path)
    port = free_port(socket.SOCK_DGRAM)
    server_log, client_log = tmp_path / "server.keylog", tmp_path / "client.keylog"
    server_args = server_command(build, port, files.server, echo=True, group=group)
    with start_server(server_args, keylog=server_log) as server, RecordingRelay(port) as relay:
        client_args = client_command(
            build, relay.port, files.client, group=group, hello_retry=hello_retry
        )
        client = run_client(client_args, keylog=client_log)
        assert server.wait(10) == 0, server.describe()  # one connection, then it exits
    assert client.returncode == 0, client.description
    printed = GROUP_PRINTED[group or "secp256r1"]
    for output in (client.stdout, server.stdout):
        assert DTLS13_BANNER in output, client.description + server.describe()
        assert f"SSL curve name is {printed}" in output, output
    assert CLIENT_MESSAGE in client.stdout.splitlines(), client.description  # echoed

    c2s, s2c = _records(relay, "c2s"), _records(relay, "s2c")
    # RFC 9147 §5.1: ClientHello, HelloRetryRequest with a cookie, ClientHello again
    hellos = [r for r in c2s if r.content_type == HANDSHAKE]
    assert [r.raw[13] for r in hellos] == [CLIENT_HELLO, CLIENT_HELLO]
    assert s2c[0].content_type == HANDSHAKE and s2c[0].raw[13] == SERVER_HELLO
    assert s2c[0].raw[13 + 12 + 2 : 13 + 12 + 2 + 32] == HRR_RANDOM

    secrets = read_keylog(client_log)
    assert set(secrets) == HANDSHAKE_SECRETS
    assert read_keylog(server_log) == secrets
    # epoch 2: the server's first encrypted message is EncryptedExtensions
    handshake_keys = TrafficKeys.from_secret(secrets["SERVER_HANDSHAKE_TRAFFIC_SECRET"])
    first = open_record(_ciphertexts(s2c, 2)[0], handshake_keys)
    assert (first.content_type, first.content[0]) == (HANDSHAKE, ENCRYPTED_EXTENSIONS)
    # epoch 3: the message the client sent, and the server's echo of it
    for records, label in ((c2s, "CLIENT_TRAFFIC_SECRET_0"), (s2c, "SERVER_TRAFFIC_SECRET_0")):
        keys = TrafficKeys.from_secret(secrets[label])
        opened = [open_record(r, keys) for r in _ciphertexts(records, 3)]
        data = [o.content for o in opened if o.content_type == APPLICATION_DATA]
        assert data == [CLIENT_MESSAGE.encode()], (label, opened)


def test_wolfssl_dtls13_key_update_from_both_sides(pki: Any, tmp_path: Path) -> None:
    """Server -U and client -I each send a KeyUpdate; afterwards each sends in
    epoch 4, whose keys come from "traffic upd" (RFC 9846 §7.2, "dtls13" labels)."""
    build = wolfssl_build()
    files = pki("ecdsa-p256").write_pem(tmp_path)
    port = free_port(socket.SOCK_DGRAM)
    client_log = tmp_path / "client.keylog"
    server_args = server_command(build, port, files.server, key_update=True)
    with start_server(server_args) as server, RecordingRelay(port) as relay:
        client_args = client_command(build, relay.port, files.client, key_update=True)
        client = run_client(client_args, keylog=client_log)
        assert server.wait(10) == 0, server.describe()
    assert client.returncode == 0, client.description
    assert SERVER_REPLY in client.stdout.splitlines(), client.description

    secrets = read_keylog(client_log)
    for direction, label in (
        ("c2s", "CLIENT_TRAFFIC_SECRET_0"),
        ("s2c", "SERVER_TRAFFIC_SECRET_0"),
    ):
        records = _records(relay, direction)
        epoch3 = TrafficKeys.from_secret(secrets[label])
        epoch4 = TrafficKeys.from_secret(next_traffic_secret(secrets[label]))
        opened3 = [open_record(r, epoch3) for r in _ciphertexts(records, 3)]
        # epoch 4 travels as epoch bits 0 (RFC 9147 §4: the low two bits)
        opened4 = [open_record(r, epoch4) for r in _ciphertexts(records, 0)]
        key_updates = [
            o for o in opened3 if o.content_type == HANDSHAKE and o.content[0] == KEY_UPDATE
        ]
        assert key_updates, (direction, opened3)
        assert opened4, f"{direction}: nothing sent in epoch 4 after the KeyUpdate"
        if direction == "c2s":  # -I sends its message again after the update
            assert (APPLICATION_DATA, CLIENT_MESSAGE.encode()) in [
                (o.content_type, o.content) for o in opened4
            ]
        else:  # the server's close_notify (RFC 9846 §6.1) goes in epoch 4
            assert (ALERT, b"\x01\x00") in [(o.content_type, o.content) for o in opened4]


def test_wolfssl_dtls13_fragments_to_a_300_byte_mtu(pki: Any, tmp_path: Path) -> None:
    """Both sides at MTU 300: no datagram is larger, and the RSA Certificate
    arrives in several fragments (RFC 9147 §5.5). wolfSSL 5.5.4's server drops
    a fragmented ClientHello, so the ClientHello must fit in one record:
    X25519 key share only, no HelloRetryRequest cookie (docs/interop-wolfssl.md)."""
    mtu = 300
    build = wolfssl_build()
    files = pki("rsa-2048").write_pem(tmp_path)
    port = free_port(socket.SOCK_DGRAM)
    client_log = tmp_path / "client.keylog"
    server_args = server_command(
        build, port, files.server, echo=True, mtu=mtu, group="x25519", cookie=False
    )
    with start_server(server_args) as server, RecordingRelay(port) as relay:
        client_args = client_command(build, relay.port, files.client, mtu=mtu, group="x25519")
        client = run_client(client_args, keylog=client_log)
        assert server.wait(10) == 0, server.describe()
    assert client.returncode == 0, client.description
    assert CLIENT_MESSAGE in client.stdout.splitlines(), client.description
    sizes = [len(datagram) for _, datagram in relay.datagrams]
    assert max(sizes) <= mtu, sizes

    keys = TrafficKeys.from_secret(read_keylog(client_log)["SERVER_HANDSHAKE_TRAFFIC_SECRET"])
    fragments = []  # (msg_type, length, fragment_offset, fragment_length) of the DTLS header
    for record in _ciphertexts(_records(relay, "s2c"), 2):
        body = open_record(record, keys).content
        fragments.append(
            (
                body[0],
                int.from_bytes(body[1:4], "big"),
                int.from_bytes(body[6:9], "big"),
                int.from_bytes(body[9:12], "big"),
            )
        )
    certificate = [f for f in fragments if f[0] == CERTIFICATE]
    assert len(certificate) >= 3, fragments
    offset = 0
    for _, _, fragment_offset, fragment_length in certificate:
        assert fragment_offset == offset
        offset += fragment_length
    assert offset == certificate[0][1]


def test_wolfssl_dtls13_connection_ids(pki: Any, tmp_path: Path) -> None:
    """Each side asks for a CID (RFC 9147 §9; at most 2 bytes in wolfSSL 5.5.4):
    every encrypted record then carries the receiver's CID after the first byte."""
    build = wolfssl_build()
    files = pki("ecdsa-p256").write_pem(tmp_path)
    port = free_port(socket.SOCK_DGRAM)
    server_args = server_command(build, port, files.server, echo=True, cid="sv")
    with start_server(server_args) as server, RecordingRelay(port) as relay:
        client = run_client(client_command(build, relay.port, files.client, cid="cl"))
        assert server.wait(10) == 0, server.describe()
    assert client.returncode == 0, client.description
    assert "CID extension was negotiated" in client.stdout, client.description
    assert "Sending CID is 7376" in client.stdout  # b"sv".hex()
    assert "Sending CID is 636c" in server.stdout, server.describe()  # b"cl".hex()
    for direction, cid in (("c2s", b"sv"), ("s2c", b"cl")):
        encrypted = [r for r in _records(relay, direction, cid_length=2) if r.unified is not None]
        assert encrypted, direction
        assert all(r.cid_present and r.raw[1:3] == cid for r in encrypted), direction


# --- SPIN (the working group's EKU models) ------------------------------------------------


@pytest.mark.slow
@pytest.mark.time_limit(240)  # two model checks, CPU-bound: minutes on a loaded machine
def test_spin_checks_the_eku_models(tmp_path: Path) -> None:
    """spin-check.sh from ../shared/specs/eku-spin-model runs: the TLS model in
    full, the DTLS model with fewer drops and retries (the full DTLS and
    crossed searches need tens of GB and minutes: docs/interop-wolfssl.md)."""
    require_binary("spin")
    require_binary("gcc")
    models = specs_dir() / "eku-spin-model"
    # spin-check.sh expects <root>/scripts/spin-check.sh and <root>/model/*.pml;
    # the shared copy keeps everything in one read-only folder, so lay out that tree.
    root = tmp_path / "eku-spin"
    (root / "scripts").mkdir(parents=True)
    (root / "model").mkdir()
    shutil.copy(models / "spin-check.sh", root / "scripts" / "spin-check.sh")
    for model in models.glob("*.pml"):
        (root / "model" / model.name).symlink_to(model)

    def spin_check(*args: str) -> str:
        # pan exits 0 even when it runs out of memory: cap it and look for that
        script = str(root / "scripts" / "spin-check.sh")
        capped = ["bash", "-c", 'ulimit -v 3000000; exec bash "$0" "$@"', script, *args]
        result = run(capped, timeout=180)
        output = result.stdout + result.stderr
        assert "out of memory" not in output, output[-3000:]
        return output

    fewer = ["DROPS=0", "REQ_RETRIES=1", "FIN_RETRIES=1", "RESP_RETRIES=1"]
    for mode, defines, claims in (("tls", [], 2), ("dtls", fewer, 2)):
        args = [mode] + [arg for define in defines for arg in ("--define", define)]
        output = spin_check(*args)
        errors = re.findall(r"errors: (\d+)", output)
        assert errors == ["0"] * claims, output[-3000:]
