"""longtls against the RFC 8448 traces (../shared/specs/rfc8448-tls13-vectors.txt).

The client side is checked byte for byte: with the trace's random and x25519
key injected, longtls emits the trace's ClientHello, accepts the server's
recorded flight, derives every listed secret, and emits the trace's Finished,
application data and close_notify records.  The server side is checked as far
as randomised RSA-PSS allows.  The resumed and HelloRetryRequest traces check
longtls' key schedule.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from tests.vectors.rfc8448 import Trace, rsa_server_private_key, trace

from longtls.config import Configuration
from longtls.connection import Connection
from longtls.constants import CipherSuite, ExtensionType, NamedGroup, SignatureScheme
from longtls.crypto import key_schedule as ks
from longtls.crypto.groups import KeyShare, get_group
from longtls.crypto.suites import suite_info
from longtls.events import ApplicationData, HandshakeComplete, SessionTicketReceived
from longtls.wire.messages import Extension, HandshakeReassembler

SHA256_SUITE = suite_info(CipherSuite.TLS_AES_128_GCM_SHA256)


def _random_from(first: bytes) -> Callable[[int], bytes]:
    """A random source whose first 32-byte draw is ``first``."""
    state = {"used": False}

    def rand(n: int) -> bytes:
        if n == 32 and not state["used"]:
            state["used"] = True
            return first
        return os.urandom(n)

    return rand


def _x25519_factory(private_key: bytes) -> Callable[[NamedGroup], KeyShare]:
    def factory(group: NamedGroup) -> KeyShare:
        assert group == NamedGroup.x25519
        return get_group(NamedGroup.x25519).from_private_bytes(private_key)

    return factory


def _trace_client_extensions(tr: Trace) -> Callable[[list[Extension]], list[Extension]]:
    """Make longtls' ClientHello carry the trace client's extra offers.

    The trace client (an NSS build) also sends renegotiation_info and an empty
    session_ticket, and offers groups and signature schemes longtls does not
    implement; everything longtls negotiates itself (key share, versions, PSK
    modes, record size limit, server name) stays longtls' own.
    """
    from longtls.wire.messages import ClientHello

    recorded = {e.type: e for e in ClientHello.decode(tr.client_hello[4:]).extensions}

    def hook(exts: list[Extension]) -> list[Extension]:
        out: list[Extension] = []
        for e in exts:
            if e.type in (ExtensionType.supported_groups, ExtensionType.signature_algorithms):
                out.append(recorded[e.type])
            else:
                out.append(e)
            if e.type == ExtensionType.server_name:
                out.append(recorded[0xFF01])  # renegotiation_info
            if e.type == ExtensionType.supported_groups:
                out.append(recorded[35])  # session_ticket (empty)
        return out

    return hook


def _keylog() -> tuple[dict[str, bytes], Callable[[str], None]]:
    lines: dict[str, bytes] = {}

    def log(line: str) -> None:
        label, _random, secret = line.split()
        lines[label] = bytes.fromhex(secret)

    return lines, log


def _client(tr: Trace) -> tuple[Connection, dict[str, bytes]]:
    logged, log = _keylog()
    cfg = Configuration(
        is_client=True,
        server_name="server",
        cipher_suites=(
            CipherSuite.TLS_AES_128_GCM_SHA256,
            CipherSuite.TLS_CHACHA20_POLY1305_SHA256,
            CipherSuite.TLS_AES_256_GCM_SHA384,
        ),
        groups=(NamedGroup.x25519, NamedGroup.secp256r1, NamedGroup.secp384r1),
        key_share_groups=(NamedGroup.x25519,),
        middlebox_compatibility=False,
        extended_key_update=False,  # the trace's client predates EKU
        certificate_compression=(),  # ... and RFC 8879
        certificate_update=False,  # ... and Certificate Update (its request draws on random)
        verify_peer=False,  # the trace's certificate is self-signed; CertificateVerify is still checked
        random=_random_from(tr.client_random),
        key_share_factory=_x25519_factory(tr.ephemeral_private_key("client")),
        client_hello_hook=_trace_client_extensions(tr),
        keylog=log,
    )
    return Connection(cfg), logged


def test_client_emits_trace_client_hello() -> None:
    tr = trace("simple")
    conn, _ = _client(tr)
    conn.start_handshake()
    assert conn.data_to_send() == tr.records("client", "handshake")[0].complete


def test_client_full_simple_handshake_byte_for_byte() -> None:
    tr = trace("simple")
    conn, logged = _client(tr)
    # longtls wipes the early and handshake secrets once the handshake is done;
    # keep them here so they can be compared with the trace.
    conn.handshake.release_handshake_state = lambda: None  # type: ignore[method-assign]
    conn.start_handshake()
    conn.data_to_send()
    server_records = tr.records("server")
    conn.receive_data(server_records[0].complete + server_records[1].complete)

    # The client Finished record, byte for byte.
    assert conn.data_to_send() == tr.records("client", "handshake")[1].complete
    (done,) = [e for e in conn.events() if isinstance(e, HandshakeComplete)]
    assert done.cipher_suite == CipherSuite.TLS_AES_128_GCM_SHA256
    assert done.group == NamedGroup.x25519
    assert done.signature_scheme == SignatureScheme.rsa_pss_rsae_sha256
    assert done.peer_subject == "CN=rsa"

    # Every secret the trace lists, as longtls derived it.
    assert logged["CLIENT_HANDSHAKE_TRAFFIC_SECRET"] == tr.secret("client_handshake_traffic_secret")
    assert logged["SERVER_HANDSHAKE_TRAFFIC_SECRET"] == tr.secret("server_handshake_traffic_secret")
    assert logged["CLIENT_TRAFFIC_SECRET_0"] == tr.secret("client_application_traffic_secret_0")
    assert logged["SERVER_TRAFFIC_SECRET_0"] == tr.secret("server_application_traffic_secret_0")
    assert logged["EXPORTER_SECRET"] == tr.secret("exporter_master_secret")
    secrets = conn.handshake.secrets
    assert secrets is not None
    assert secrets.early_secret == tr.secret("early_secret")
    assert secrets.handshake_secret == tr.secret("handshake_secret")
    assert secrets.main_secret == tr.secret("master_secret")
    assert secrets.resumption_secret == tr.secret("resumption_master_secret")

    # The server's NewSessionTicket yields the trace's resumption PSK.
    conn.receive_data(server_records[2].complete)
    (ticket,) = [e for e in conn.events() if isinstance(e, SessionTicketReceived)]
    assert ticket.ticket.psk == tr.secret("resumption_psk")

    # Application data both ways, and close_notify, byte for byte.
    server_app = server_records[3]
    conn.receive_data(server_app.complete)
    (data,) = [e for e in conn.events() if isinstance(e, ApplicationData)]
    assert data.data == server_app.payload
    client_app = tr.records("client")[2]
    conn.send(client_app.payload)
    assert conn.data_to_send() == client_app.complete
    conn.close()
    assert conn.data_to_send() == tr.records("client")[3].complete


def _decrypt_records(data: bytes, key: bytes, iv: bytes) -> bytes:
    """Open protected records with the trace's keys (an independent AEAD check)."""
    out = b""
    seq = 0
    aead = AESGCM(key)
    while data:
        length = int.from_bytes(data[3:5], "big")
        header, body, data = data[:5], data[5 : 5 + length], data[5 + length :]
        nonce = (int.from_bytes(iv, "big") ^ seq).to_bytes(12, "big")
        seq += 1
        inner = aead.decrypt(nonce, body, header).rstrip(b"\x00")
        assert inner[-1] == 22
        out += inner[:-1]
    return out


def test_server_simple_handshake_as_far_as_trace_allows() -> None:
    tr = trace("simple")
    logged, log = _keylog()
    cert_msg = tr.handshake_message("Certificate", "server")
    cert_der = cert_msg[4 + 1 + 3 + 3 : 4 + 1 + 3 + 3 + int.from_bytes(cert_msg[8:11], "big")]
    cfg = Configuration(
        is_client=False,
        certificate_chain=[x509.load_der_x509_certificate(cert_der)],
        private_key=rsa_server_private_key(),
        groups=(NamedGroup.x25519, NamedGroup.secp256r1),
        random=_random_from(tr.server_random),
        key_share_factory=_x25519_factory(tr.ephemeral_private_key("server")),
        keylog=log,
    )
    server = Connection(cfg)
    server.receive_data(tr.records("client", "handshake")[0].complete)
    out = server.data_to_send()
    sh_record = tr.records("server", "handshake")[0].complete
    # ServerHello, byte for byte.
    assert out[: len(sh_record)] == sh_record
    assert logged["SERVER_HANDSHAKE_TRAFFIC_SECRET"] == tr.secret("server_handshake_traffic_secret")
    assert logged["CLIENT_HANDSHAKE_TRAFFIC_SECRET"] == tr.secret("client_handshake_traffic_secret")

    # Open longtls' encrypted flight with the trace's server handshake key:
    # the Certificate is the trace's; the CertificateVerify uses the trace's scheme.
    keys = tr.traffic_keys("server", "handshake")
    plaintext = _decrypt_records(out[len(sh_record) :], keys.key, keys.iv)
    reasm = HandshakeReassembler(1 << 20)
    reasm.feed(plaintext)
    messages = []
    while (m := reasm.pop()) is not None:
        messages.append(m)
    assert [m[0] for m in messages] == [8, 11, 15, 20]
    assert messages[1][2] == cert_msg
    assert messages[2][1][:2] == bytes.fromhex("0804")  # rsa_pss_rsae_sha256, as in the trace


def test_resumed_trace_key_schedule() -> None:
    simple, tr = trace("simple"), trace("resumed")
    suite = SHA256_SUITE
    psk = ks.resumption_psk(suite, simple.secret("resumption_master_secret"), simple.secret("ticket_nonce"))
    assert psk == simple.secret("resumption_psk") == tr.secret("psk")
    secrets = ks.HandshakeSecrets(suite, psk)
    assert secrets.early_secret == tr.secret("early_secret")
    assert secrets.binder_key() == tr.secret("binder_key")
    # The binder: HMAC over the truncated ClientHello (RFC 9846 §4.2.11.2).
    truncated = tr.find("client", "construct a ClientHello")["ClientHello"]
    binder = ks.finished_verify_data(suite, secrets.binder_key(), ks.transcript_digest(suite, truncated))
    assert binder == tr.secret("binder")
    transcript = ks.Transcript()
    transcript.start(suite)
    transcript.update(tr.client_hello)
    assert secrets.client_early_traffic_secret(transcript.digest()) == tr.secret("client_early_traffic_secret")
    transcript.update(tr.server_hello)
    secrets.derive_handshake(tr.secret("ecdhe"), transcript.digest())
    assert secrets.handshake_secret == tr.secret("handshake_secret")
    assert secrets.client_handshake_traffic_secret == tr.secret("client_handshake_traffic_secret")
    assert secrets.server_handshake_traffic_secret == tr.secret("server_handshake_traffic_secret")


@pytest.mark.parametrize("name", ["hrr", "client_auth", "simple"])
def test_trace_handshake_key_schedule(name: str) -> None:
    """longtls' Transcript (with message_hash after a HelloRetryRequest) and
    key schedule reproduce each trace's handshake and application secrets."""
    tr = trace(name)
    suite = SHA256_SUITE
    transcript = ks.Transcript()
    messages = tr.record_handshake_messages()
    transcript.start(suite)
    secrets = ks.HandshakeSecrets(suite)
    seen_hrr = False
    for message in messages:
        who, raw = message.who, message.data
        if raw[0] == 2 and raw[6:38] == bytes.fromhex(
            "cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c"
        ):
            transcript.restart_after_hello_retry(suite)
            transcript.update(raw)
            seen_hrr = True
            continue
        transcript.update(raw)
        if raw[0] == 2:
            secrets.derive_handshake(tr.secret("ecdhe"), transcript.digest())
        if raw[0] == 20 and who == "server":
            secrets.derive_application(transcript.digest())
        if raw[0] == 20 and who == "client":
            secrets.derive_resumption(transcript.digest())
            break
    assert seen_hrr == (name == "hrr")
    assert secrets.handshake_secret == tr.secret("handshake_secret")
    assert secrets.client_handshake_traffic_secret == tr.secret("client_handshake_traffic_secret")
    assert secrets.server_application_traffic_secret == tr.secret("server_application_traffic_secret_0")
    assert secrets.exporter_secret == tr.secret("exporter_master_secret")
    assert secrets.resumption_secret == tr.secret("resumption_master_secret")
