"""External PSKs (RFC 9846 §4.2.11, RFC 9257, RFC 9258) between two longtls peers in memory.

Expected secrets are computed here from the spec formulas with plain HKDF/HMAC
(tests/vectors/rfc8448's independent helpers), never with longtls' key schedule.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import re
import socket
import struct
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from tests.vectors.rfc8448 import derive_secret, expand_label, hkdf_extract, transcript_hash

from helpers.cli import LONGTLS, assert_one_error_line, summary
from helpers.cli import longtls as cli_longtls
from helpers.echo import EchoBackend
from helpers.pair import Pair, configs
from helpers.peers import LOOPBACK, free_port, start_process
from longtls.config import ClientAuth, Configuration
from longtls.connection import Connection
from longtls.constants import (
    AlertDescription,
    CipherSuite,
    ExtensionType,
    HandshakeType,
    NamedGroup,
    PskKeyExchangeMode,
)
from longtls.crypto.groups import get_group
from longtls.errors import ConfigurationError, LocalProtocolError, RemoteProtocolError
from longtls.events import (
    ConnectionClosed,
    HandshakeComplete,
    KeyUpdateCompleted,
    SessionTicketReceived,
)
from longtls.psk import ExternalPsk, ImportedIdentity, imported_psk
from longtls.wire import extensions as X
from longtls.wire.messages import CertificateRequest, ClientHello, Extension, encode_handshake

KE, DHE = PskKeyExchangeMode.psk_ke, PskKeyExchangeMode.psk_dhe_ke
MODES = {"psk_ke": (KE,), "psk_dhe_ke": (DHE,)}
KEY = bytes.fromhex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
PSK = ExternalPsk(b"meter-17", KEY)
CLIENT_PRIVATE = bytes(range(1, 33))
SERVER_PRIVATE = bytes(range(101, 133))

CH, SH, NST, EE, CERT, CR, CV, FIN, COMPRESSED_CERT = (1, 2, 4, 8, 11, 13, 15, 20, 25)


def psk_configs(
    *, client_modes: tuple[PskKeyExchangeMode, ...] = (DHE,), server_modes: tuple[PskKeyExchangeMode, ...] = (DHE,),
    server_cert: bool = False, client_psks: tuple[ExternalPsk, ...] = (PSK,),
    server_psks: tuple[ExternalPsk, ...] = (PSK,), **kw: Any,
) -> tuple[Configuration, Configuration]:
    """A client and a server sharing external PSKs; the server has a certificate only if asked."""
    client, server, _ = configs(
        client_external_psks=client_psks, server_external_psks=server_psks,
        client_psk_key_exchange_modes=client_modes, server_psk_key_exchange_modes=server_modes,
        client_groups=[NamedGroup.x25519], client_key_share_groups=[NamedGroup.x25519], **kw,
    )
    if not server_cert:
        server.certificate_chain, server.private_key = [], None
    return client, server


class Wire:
    """Every handshake message each side queues, in order, with its 4-byte header."""

    def __init__(self, pair: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sent: dict[str, list[bytes]] = {"client": [], "server": []}
        for side, conn in (("client", pair.client), ("server", pair.server)):
            original = conn.queue_handshake

            def queue(message: bytes, _orig: Any = original, _side: str = side) -> None:
                self.sent[_side].append(bytes(message))
                _orig(message)

            monkeypatch.setattr(conn, "queue_handshake", queue)

    def types(self, side: str) -> list[int]:
        return [m[0] for m in self.sent[side]]

    def first(self, side: str, msg_type: int) -> bytes:
        return next(m for m in self.sent[side] if m[0] == msg_type)


def start(client: Configuration, server: Configuration, monkeypatch: pytest.MonkeyPatch) -> tuple[Pair, Wire]:
    pair = Pair(Connection(client), Connection(server))
    wire = Wire(pair, monkeypatch)
    pair.client.start_handshake()
    pair.pump()
    return pair, wire


def done(events: list[Any]) -> HandshakeComplete:
    (event,) = [e for e in events if isinstance(e, HandshakeComplete)]
    return event


def fail(client: Configuration, server: Configuration) -> tuple[RemoteProtocolError, bytes]:
    """Run until the server refuses the ClientHello; its error and the bytes it sent."""
    pair = Pair(Connection(client), Connection(server))
    pair.client.start_handshake()
    with pytest.raises(RemoteProtocolError) as info:
        pair.server.receive_data(pair.client.data_to_send())
    sent = pair.server.data_to_send()
    pair.client.receive_data(sent)
    closed = [e for e in pair.client.events() if isinstance(e, ConnectionClosed)]
    assert closed and closed[0].alert == info.value.alert and closed[0].by_peer
    return info.value, sent


def plaintext_alert(description: AlertDescription) -> bytes:
    """A fatal alert record before any keys (RFC 9846 §5.1, §6)."""
    return bytes([21, 3, 3, 0, 2, 2, description])


def offered_identities(client_hello: bytes) -> list[bytes]:
    body = ClientHello.decode(client_hello[4:])
    assert body.extensions[-1].type == ExtensionType.pre_shared_key  # §4.2.11: last
    return [i.identity for i in X.decode_pre_shared_key_client(body.extensions[-1].data).identities]


# -- handshakes ------------------------------------------------------------------------


@pytest.mark.parametrize("server_cert", [False, True], ids=["psk-only-server", "server-with-certificate"])
@pytest.mark.parametrize("mode", list(MODES))
def test_external_psk_handshake(mode: str, server_cert: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    client, server = psk_configs(client_modes=MODES[mode], server_modes=MODES[mode], server_cert=server_cert)
    pair, wire = start(client, server, monkeypatch)
    for events in (pair.client_events, pair.server_events):
        hs = done(events)
        assert (hs.psk, hs.psk_identity) == ("external", b"meter-17")
        assert hs.psk_key_exchange_mode == MODES[mode][0]
        assert hs.group == (None if mode == "psk_ke" else NamedGroup.x25519)
        assert not hs.resumed and hs.signature_scheme is None and hs.peer_certificates == ()
        assert hs.cipher_suite == CipherSuite.TLS_AES_128_GCM_SHA256
    # §2.2: authenticated by the PSK, so no Certificate, CertificateVerify or
    # CertificateRequest, even from a server that has a certificate.
    assert wire.types("server")[:3] == [SH, EE, FIN]
    assert not {CERT, COMPRESSED_CERT, CV, CR} & set(wire.types("server"))
    pair.client.send(b"ping")
    pair.server.send(b"pong")
    pair.pump()
    assert (pair.received("server"), pair.received("client")) == (b"ping", b"pong")


def _sh_extension_types(server_hello: bytes) -> set[int]:
    body = server_hello[4:]
    offset = 2 + 32
    offset += 1 + body[offset]  # legacy_session_id_echo
    offset += 3  # cipher_suite, legacy_compression_method
    end = offset + 2 + int.from_bytes(body[offset : offset + 2], "big")
    offset += 2
    types = set()
    while offset < end:
        ext_type, length = struct.unpack_from(">HH", body, offset)
        types.add(ext_type)
        offset += 4 + length
    return types


@pytest.mark.parametrize("mode", list(MODES))
def test_server_hello_has_key_share_only_in_psk_dhe_ke(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    client, server = psk_configs(client_modes=MODES[mode], server_modes=MODES[mode])
    _, wire = start(client, server, monkeypatch)
    types = _sh_extension_types(wire.first("server", SH))
    assert ExtensionType.pre_shared_key in types
    # §4.2.9: psk_ke "the server MUST NOT supply a key_share"; psk_dhe_ke it must.
    assert (ExtensionType.key_share in types) == (mode == "psk_dhe_ke")


@pytest.mark.parametrize(
    ("client_modes", "server_modes", "chosen"),
    [
        ((DHE, KE), (DHE, KE), DHE),
        ((DHE, KE), (KE, DHE), KE),  # the server's preference order decides
        ((KE, DHE), (DHE, KE), DHE),
        ((KE,), (DHE, KE), KE),
    ],
)
def test_psk_mode_negotiation(
    client_modes: tuple[PskKeyExchangeMode, ...], server_modes: tuple[PskKeyExchangeMode, ...],
    chosen: PskKeyExchangeMode, monkeypatch: pytest.MonkeyPatch,
) -> None:
    pair, _ = start(*psk_configs(client_modes=client_modes, server_modes=server_modes), monkeypatch)
    assert done(pair.client_events).psk_key_exchange_mode == chosen
    assert done(pair.server_events).psk_key_exchange_mode == chosen


@pytest.mark.parametrize(("client_mode", "server_mode"), [(KE, DHE), (DHE, KE)])
def test_mode_mismatch(client_mode: PskKeyExchangeMode, server_mode: PskKeyExchangeMode) -> None:
    # §4.2.9: the server never selects a mode the client did not list.
    # Without a certificate to fall back on: handshake_failure.
    error, sent = fail(*psk_configs(client_modes=(client_mode,), server_modes=(server_mode,)))
    assert error.alert == AlertDescription.handshake_failure
    assert sent == plaintext_alert(AlertDescription.handshake_failure)


def test_mode_mismatch_falls_back_to_the_certificate(monkeypatch: pytest.MonkeyPatch) -> None:
    pair, wire = start(*psk_configs(client_modes=(KE,), server_modes=(DHE,), server_cert=True), monkeypatch)
    hs = done(pair.client_events)
    assert hs.psk is None and hs.peer_certificates and hs.group == NamedGroup.x25519
    assert CV in wire.types("server")  # (Certificate may be compressed: RFC 8879)


def test_wrong_key_fails_the_binder_with_decrypt_error() -> None:
    wrong = ExternalPsk(b"meter-17", bytes(32))
    # §4.2.11: "If this value ... does not validate, the server MUST abort".
    for server_cert in (False, True):
        error, sent = fail(*psk_configs(server_psks=(wrong,), server_cert=server_cert))
        assert error.alert == AlertDescription.decrypt_error
        assert sent == plaintext_alert(AlertDescription.decrypt_error)


def test_unknown_identity_psk_only_server() -> None:
    other = ExternalPsk(b"meter-18", KEY)
    error, sent = fail(*psk_configs(server_psks=(other,)))
    assert error.alert == AlertDescription.unknown_psk_identity
    assert sent == plaintext_alert(AlertDescription.unknown_psk_identity)


def test_unknown_identity_is_skipped_by_a_server_with_a_certificate(monkeypatch: pytest.MonkeyPatch) -> None:
    other = ExternalPsk(b"meter-18", KEY)
    pair, wire = start(*psk_configs(server_psks=(other,), server_cert=True), monkeypatch)
    hs = done(pair.client_events)
    assert hs.psk is None and hs.peer_certificates  # a full certificate handshake
    assert ExtensionType.pre_shared_key not in _sh_extension_types(wire.first("server", SH))


def test_second_identity_is_chosen_when_the_first_is_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    first = ExternalPsk(b"old-id", bytes(range(50, 82)))
    pair, wire = start(*psk_configs(client_psks=(first, PSK)), monkeypatch)
    assert offered_identities(wire.first("client", CH)) == [b"old-id", b"meter-17"]
    assert done(pair.server_events).psk_identity == b"meter-17"


def test_client_without_psk_to_a_psk_only_server() -> None:
    client, server = psk_configs(client_psks=())
    error, sent = fail(client, server)
    assert error.alert == AlertDescription.handshake_failure
    assert sent == plaintext_alert(AlertDescription.handshake_failure)


def test_server_lookup_callable(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[bytes] = []

    def lookup(identity: bytes) -> ExternalPsk | None:
        asked.append(identity)
        return PSK if identity == PSK.identity else None

    client, server = psk_configs(server_psks=())
    server.external_psk_lookup = lookup
    pair, _ = start(client, server, monkeypatch)
    assert done(pair.server_events).psk_identity == b"meter-17"
    assert b"meter-17" in asked


def test_psk_after_hello_retry_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """The second ClientHello offers the PSK again, its binder over
    message_hash(CH1) || HRR || Truncate(CH2) (§4.2.11.2)."""
    client, server = psk_configs(server_groups=[NamedGroup.secp256r1])
    client.groups = [NamedGroup.x25519, NamedGroup.secp256r1]
    pair, wire = start(client, server, monkeypatch)
    assert wire.types("client")[:2] == [CH, CH]
    hs = done(pair.client_events)
    assert (hs.psk, hs.group) == ("external", NamedGroup.secp256r1)


# -- hashes ----------------------------------------------------------------------------


def test_sha384_psk_steers_the_cipher_suite(monkeypatch: pytest.MonkeyPatch) -> None:
    psk = ExternalPsk(b"meter-384", KEY + KEY[:16], hash_name="sha384")
    pair, wire = start(*psk_configs(client_psks=(psk,), server_psks=(psk,)), monkeypatch)
    # The server prefers TLS_AES_128_GCM_SHA256 but the PSK is bound to SHA-384:
    # "externally established PSKs SHOULD influence cipher suite selection" (§4.2.11).
    assert done(pair.server_events).cipher_suite == CipherSuite.TLS_AES_256_GCM_SHA384
    # Its binder is a SHA-384 HMAC: 48 bytes at the end of the ClientHello.
    ch = wire.first("client", CH)
    assert ch[-51:-49] == (49).to_bytes(2, "big") and ch[-49] == 48


def test_hash_disagreement_fails_the_binder() -> None:
    """Both ends must provision the same hash (§2.2): if they do not, the binder fails."""
    client_psk = ExternalPsk(b"meter-17", KEY, hash_name="sha384")
    error, _ = fail(*psk_configs(client_psks=(client_psk,)))
    assert error.alert == AlertDescription.decrypt_error


def test_configuration_checks() -> None:
    with pytest.raises(ConfigurationError, match="at least 16"):
        ExternalPsk(b"id", bytes(15))
    with pytest.raises(ConfigurationError, match="unsupported PSK hash"):
        ExternalPsk(b"id", KEY, hash_name="sha1")
    with pytest.raises(ConfigurationError, match="must be bytes"):
        ExternalPsk("id", KEY)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="1 to 65535"):
        ExternalPsk(b"", KEY)
    with pytest.raises(ConfigurationError, match="certificate chain and a private key, or external PSKs"):
        Configuration(is_client=False).validate()
    Configuration(is_client=False, external_psks=[PSK]).validate()  # no certificate needed
    with pytest.raises(ConfigurationError, match="none of the configured cipher suites"):
        Configuration(
            external_psks=[ExternalPsk(b"x", KEY, hash_name="sha384")],
            cipher_suites=[CipherSuite.TLS_AES_128_GCM_SHA256],
        ).validate()
    with pytest.raises(ConfigurationError, match="psk_key_exchange_modes"):
        Configuration(external_psks=[PSK], psk_key_exchange_modes=()).validate()
    with pytest.raises(ConfigurationError, match="two external PSKs"):
        Configuration(external_psks=[PSK, PSK]).validate()


# -- the key schedule, from the spec formulas --------------------------------------------


def _fixed_share(private: bytes) -> Callable[[NamedGroup], Any]:
    return lambda group: get_group(group).from_private_bytes(private)


def _binder_ok(client_hello: bytes, psk: bytes, label: str, hash_name: str = "sha256") -> bool:
    """RFC 9846 §4.2.11.2 for a ClientHello offering one PSK: the binder is the
    HMAC, under binder_key's finished_key, of Hash(Truncate(ClientHello))."""
    n = hashlib.new(hash_name).digest_size
    binders_length = 2 + 1 + n
    assert client_hello[-binders_length:-n - 1] == (1 + n).to_bytes(2, "big")
    early = hkdf_extract(hash_name, None, psk)
    binder_key = derive_secret(hash_name, early, label, b"")
    finished_key = expand_label(hash_name, binder_key, "finished", b"", n)
    truncated = client_hello[:-binders_length]
    expected = hmac.new(finished_key, transcript_hash(hash_name, truncated), hash_name).digest()
    return hmac.compare_digest(expected, client_hello[-n:])


@pytest.mark.parametrize("mode", list(MODES))
def test_secrets_and_eku_match_the_spec_formulas(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The "ext binder" binder, the handshake and application secrets from
    Early Secret = HKDF-Extract(0, PSK) (§7.1) with (psk_dhe_ke) or without
    (psk_ke) an x25519 secret, then two extended key updates (draft-13 §6:
    the chained transcript), each secret compared with the key log."""
    logged: dict[str, bytes] = {}

    def log(line: str) -> None:
        label, _random, secret = line.split()
        logged[label] = bytes.fromhex(secret)

    client, server = psk_configs(
        client_modes=MODES[mode], server_modes=MODES[mode], client_keylog=log,
        client_key_share_factory=_fixed_share(CLIENT_PRIVATE), server_key_share_factory=_fixed_share(SERVER_PRIVATE),
    )
    pair, wire = start(client, server, monkeypatch)
    hs = done(pair.client_events)
    assert hs.extended_key_update, "EKU must work over an external PSK connection"
    ch, cfin = wire.first("client", CH), wire.first("client", FIN)
    sh, ee, sfin = (wire.first("server", t) for t in (SH, EE, FIN))

    assert _binder_ok(ch, KEY, "ext binder")
    assert not _binder_ok(ch, KEY, "res binder")  # the label matters

    shared = None
    if mode == "psk_dhe_ke":
        server_public = X25519PrivateKey.from_private_bytes(SERVER_PRIVATE).public_key()
        shared = X25519PrivateKey.from_private_bytes(CLIENT_PRIVATE).exchange(server_public)
    early = hkdf_extract("sha256", None, KEY)
    handshake = hkdf_extract("sha256", derive_secret("sha256", early, "derived", b""), shared)
    main = hkdf_extract("sha256", derive_secret("sha256", handshake, "derived", b""), None)
    hello, server_flight = [ch, sh], [ch, sh, ee, sfin]
    assert logged["CLIENT_HANDSHAKE_TRAFFIC_SECRET"] == derive_secret("sha256", handshake, "c hs traffic", hello)
    assert logged["SERVER_HANDSHAKE_TRAFFIC_SECRET"] == derive_secret("sha256", handshake, "s hs traffic", hello)
    assert logged["CLIENT_TRAFFIC_SECRET_0"] == derive_secret("sha256", main, "c ap traffic", server_flight)
    assert logged["SERVER_TRAFFIC_SECRET_0"] == derive_secret("sha256", main, "s ap traffic", server_flight)
    assert logged["EXPORTER_SECRET"] == derive_secret("sha256", main, "exp master", server_flight)

    # Extended Key Update: the responder's shared secret, spied from the group
    # both ends use (under psk_ke: the client's first supported group).
    assert pair.client.eku is not None and pair.client.eku.group.code == NamedGroup.x25519
    group = pair.client.eku.group
    shared_secrets: list[bytes] = []
    original_respond = group.respond

    def respond(peer: bytes, ephemeral: Any = None) -> Any:
        out = original_respond(peer, ephemeral)
        shared_secrets.append(out[1])
        return out

    monkeypatch.setattr(group, "respond", respond)
    th = transcript_hash("sha256", [ch, sh, ee, sfin, cfin])
    for generation, initiator, responder in ((1, "client", "server"), (2, "server", "client")):
        marks = {side: len(wire.sent[side]) for side in wire.sent}
        (pair.client if initiator == "client" else pair.server).extended_key_update()
        pair.pump()
        request, response = (
            next(m for m in wire.sent[side][marks[side]:] if m[0] == HandshakeType.extended_key_update)
            for side in (initiator, responder)
        )
        main = hkdf_extract("sha256", derive_secret("sha256", main, "derived", b""), shared_secrets[-1])
        th = hashlib.sha256(th + request + response).digest()
        assert logged[f"CLIENT_TRAFFIC_SECRET_{generation}"] == expand_label("sha256", main, "c ap traffic", th, 32)
        assert logged[f"SERVER_TRAFFIC_SECRET_{generation}"] == expand_label("sha256", main, "s ap traffic", th, 32)
    assert [e.generation for e in pair.client_events if isinstance(e, KeyUpdateCompleted)] == [1, 2]
    pair.client.send(b"after two updates")
    pair.pump()
    assert pair.received("server") == b"after two updates"


def test_eku_not_negotiated_under_psk_ke_when_the_server_lacks_the_clients_first_group(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, server = psk_configs(client_modes=(KE,), server_modes=(KE,), server_groups=[NamedGroup.secp256r1])
    client.groups = [NamedGroup.x25519, NamedGroup.secp256r1]
    pair, _ = start(client, server, monkeypatch)
    assert not done(pair.client_events).extended_key_update
    assert not done(pair.server_events).extended_key_update
    pair.client.update_keys()  # the standard KeyUpdate still works
    pair.client.send(b"ok")
    pair.pump()
    assert pair.received("server") == b"ok"


# -- tickets and external PSKs together --------------------------------------------------


def _ticket(client: Configuration, server: Configuration, monkeypatch: pytest.MonkeyPatch) -> Any:
    pair, _ = start(client, server, monkeypatch)
    tickets = [e.ticket for e in pair.client_events if isinstance(e, SessionTicketReceived)]
    assert tickets
    return tickets[0]


def test_ticket_is_offered_before_the_external_psk(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tickets need EKU off (draft-13 §6 disables them with EKU).
    client, server = psk_configs(
        server_cert=True, client_extended_key_update=False, server_extended_key_update=False
    )
    ticket = _ticket(client, server, monkeypatch)
    client.session_ticket = ticket
    pair, wire = start(client, server, monkeypatch)
    assert offered_identities(wire.first("client", CH)) == [ticket.ticket, b"meter-17"]
    hs = done(pair.server_events)
    assert (hs.psk, hs.resumed, hs.psk_identity) == ("resumption", True, None)

    # A server that cannot open the ticket (new ticket key) takes the external PSK.
    server.ticket_key = bytes(32)
    pair, _ = start(client, server, monkeypatch)
    hs = done(pair.client_events)
    assert (hs.psk, hs.resumed, hs.psk_identity) == ("external", False, b"meter-17")


def test_no_psk_offered_without_psk_modes(monkeypatch: pytest.MonkeyPatch) -> None:
    # §4.2.9: a client that offers pre_shared_key MUST send psk_key_exchange_modes;
    # with no modes configured a ticket is not offered at all.
    client, server, _ = configs(client_extended_key_update=False, server_extended_key_update=False)
    client.session_ticket = _ticket(client, server, monkeypatch)
    client.psk_key_exchange_modes = ()
    pair, wire = start(client, server, monkeypatch)
    extensions = {e.type for e in ClientHello.decode(wire.first("client", CH)[4:]).extensions}
    assert not {ExtensionType.pre_shared_key, ExtensionType.psk_key_exchange_modes} & extensions
    assert done(pair.client_events).psk is None


@pytest.mark.parametrize(
    ("client_modes", "server_modes", "expected"),
    [
        ((DHE,), (DHE,), DHE),  # the default: forward secrecy first
        ((KE,), (DHE,), None),  # psk_ke only if the server allows it: a full handshake
        ((KE,), (KE,), KE),
        ((DHE, KE), (KE, DHE), KE),
    ],
)
def test_resumption_uses_psk_ke_only_when_configured(
    client_modes: tuple[PskKeyExchangeMode, ...], server_modes: tuple[PskKeyExchangeMode, ...],
    expected: PskKeyExchangeMode | None, monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Configuration().psk_key_exchange_modes == (DHE,)
    kw = {"client_extended_key_update": False, "server_extended_key_update": False}
    client, server, _ = configs(
        client_psk_key_exchange_modes=client_modes, server_psk_key_exchange_modes=server_modes, **kw,  # type: ignore[arg-type]
    )
    client.session_ticket = _ticket(client, server, monkeypatch)
    pair, _ = start(client, server, monkeypatch)
    hs = done(pair.client_events)
    assert hs.resumed == (expected is not None)
    assert hs.psk_key_exchange_mode == expected
    assert (hs.group is None) == (expected == KE)


# -- RFC 9258 importer ---------------------------------------------------------------------


def _expected_import(epsk: bytes, external_identity: bytes, context: bytes, kdf_id: int, length: int) -> tuple[bytes, bytes]:
    """ImportedIdentity and ipskx, from RFC 9258 §5.1 written out by hand."""
    identity = (
        len(external_identity).to_bytes(2, "big") + external_identity
        + len(context).to_bytes(2, "big") + context
        + (0x0304).to_bytes(2, "big")  # target_protocol: TLS 1.3
        + kdf_id.to_bytes(2, "big")  # target_kdf: HKDF_SHA256 = 1, HKDF_SHA384 = 2
    )
    epskx = hkdf_extract("sha256", None, epsk)  # the EPSK's hash: SHA-256 (the default)
    ipskx = expand_label("sha256", epskx, "derived psk", hashlib.sha256(identity).digest(), length)
    return identity, ipskx


def test_importer_vector() -> None:
    epsk = ExternalPsk(b"meter-17", KEY, importer=True, context=b"client=meter-17;server=gw-2")
    for target, kdf_id, length in (("sha256", 1, 32), ("sha384", 2, 48)):
        identity, ipskx = _expected_import(KEY, b"meter-17", b"client=meter-17;server=gw-2", kdf_id, length)
        assert imported_psk(epsk, target) == ipskx
        decoded = ImportedIdentity.decode(identity)
        assert decoded == ImportedIdentity(b"meter-17", b"client=meter-17;server=gw-2", 0x0304, kdf_id)
        assert decoded.encode() == identity
    assert ImportedIdentity.decode(b"meter-17") is None  # a plain identity is not one


def test_imported_psk_handshake(monkeypatch: pytest.MonkeyPatch) -> None:
    context = b"client=meter-17;server=gw-2"
    epsk = ExternalPsk(b"meter-17", KEY, importer=True, context=context)
    client, server = psk_configs(
        client_psks=(epsk,), server_psks=(epsk,), client_cipher_suites=[CipherSuite.TLS_AES_128_GCM_SHA256],
    )
    pair, wire = start(client, server, monkeypatch)
    identity, ipskx = _expected_import(KEY, b"meter-17", context, 1, 32)
    ch = wire.first("client", CH)
    assert offered_identities(ch) == [identity]  # only the imported form, never the raw EPSK
    assert _binder_ok(ch, ipskx, "imp binder")  # RFC 9258 §5.2
    assert not _binder_ok(ch, ipskx, "ext binder")
    for events in (pair.client_events, pair.server_events):
        hs = done(events)
        assert (hs.psk, hs.psk_identity) == ("imported", b"meter-17")


def test_imported_psk_offered_for_each_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    epsk = ExternalPsk(b"meter-17", KEY, importer=True)
    client, server = psk_configs(client_psks=(epsk,), server_psks=(epsk,))
    pair, wire = start(client, server, monkeypatch)
    offered = [ImportedIdentity.decode(i) for i in offered_identities(wire.first("client", CH))]
    # One per hash of the client's suites, in their order (SHA-256, then SHA-384).
    assert [(i.external_identity, i.target_kdf) for i in offered if i] == [(b"meter-17", 1), (b"meter-17", 2)]
    assert done(pair.server_events).psk == "imported"


@pytest.mark.parametrize(
    "server_psk",
    [
        ExternalPsk(b"meter-17", KEY, importer=True, context=b"other context"),
        ExternalPsk(b"meter-17", KEY),  # configured for direct use only
    ],
    ids=["context-mismatch", "not-imported-on-server"],
)
def test_imported_identity_the_server_does_not_import(server_psk: ExternalPsk) -> None:
    epsk = ExternalPsk(b"meter-17", KEY, importer=True, context=b"client=meter-17;server=gw-2")
    error, _ = fail(*psk_configs(client_psks=(epsk,), server_psks=(server_psk,)))
    assert error.alert == AlertDescription.unknown_psk_identity


# -- what an external PSK connection refuses, and what it never shows -----------------------


def test_no_certificate_request_after_an_external_psk(monkeypatch: pytest.MonkeyPatch) -> None:
    client, server = psk_configs(
        server_cert=True, server_client_auth=ClientAuth.REQUIRED, client_post_handshake_auth=True,
    )
    pair, wire = start(client, server, monkeypatch)
    assert CR not in wire.types("server")  # §4.3.2: not in the main handshake
    with pytest.raises(LocalProtocolError, match="external PSK"):
        pair.server.request_client_authentication()  # nor after it
    # A server that sends one anyway gets unexpected_message.
    sigalgs = Extension(ExtensionType.signature_algorithms, X.encode_signature_algorithms([0x0403]))
    pair.server.queue_handshake(encode_handshake(HandshakeType.certificate_request, CertificateRequest(b"c", (sigalgs,)).encode()))
    with pytest.raises(RemoteProtocolError) as info:
        pair.client.receive_data(pair.server.data_to_send())
    assert info.value.alert == AlertDescription.unexpected_message


def test_key_never_in_reprs_or_logs(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    epsk = ExternalPsk(b"meter-17-imported", KEY, importer=True)
    caplog.set_level(logging.DEBUG)
    client, server = psk_configs(client_psks=(PSK, epsk), server_psks=(PSK,))
    pair, _ = start(client, server, monkeypatch)
    texts = [repr(PSK), repr(epsk), repr(client), repr(server), repr(done(pair.client_events)),
             repr(pair.client.handshake), caplog.text]
    secrets = [KEY, imported_psk(epsk, "sha256"), imported_psk(epsk, "sha384")]
    for text in texts:
        for secret in secrets:
            assert secret.hex() not in text and secret.hex().upper() not in text and repr(secret) not in text
    # The handshake drops its PSK candidates once it is over.
    assert pair.client.handshake.offered_psks == []  # type: ignore[attr-defined]


# -- the command line: serve, connect and tunnel with --psk-identity/--psk-file ------------


@pytest.fixture
def psk_file(tmp_path: Path) -> Path:
    path = tmp_path / "psk.hex"
    path.write_text(KEY.hex() + "\n")  # as `openssl s_server -psk` takes it
    path.chmod(0o600)
    return path


def _cli_psk(psk_file: Path, *modes: str) -> list[str]:
    return ["--psk-identity", "meter-17", "--psk-file", str(psk_file), *(["--psk-modes", ",".join(modes)] if modes else [])]


def test_cli_serve_and_connect_with_psk_ke_and_extended_key_updates(psk_file: Path) -> None:
    """A certificate-less ``longtls serve`` and ``longtls connect`` on a psk_ke
    link: the handshake line names the PSK and mode, and the updates are EKUs."""
    port = free_port()
    serve = [*LONGTLS, "serve", "--echo", "--port", str(port), *_cli_psk(psk_file, "psk_ke")]
    with start_process(serve, ready_pattern=r"^longtls: serving \(echo\)"):
        result = cli_longtls(
            "connect", f"{LOOPBACK}:{port}", *_cli_psk(psk_file, "psk_ke"), "--summary", "json",
            "--rekey-count", "2",
        )
    assert result.returncode == 0, result.stderr
    records = summary(result.stderr)
    handshake = records[0]
    assert handshake["event"] == "handshake"
    assert (handshake["psk"], handshake["psk_identity"], handshake["psk_mode"]) == ("external", "meter-17", "psk_ke")
    assert handshake["group"] is None and handshake["peer_subject"] is None
    updates = [r for r in records if r["event"] == "key_update"]
    assert [(u["kind"], u["generation"], u["group"]) for u in updates] == [
        ("extended", 1, "X25519MLKEM768"), ("extended", 2, "X25519MLKEM768"),
    ]  # psk_ke: the client's first supported group (docs/external-psk.md)


def test_cli_www_page_names_the_psk(psk_file: Path) -> None:
    port = free_port()
    serve = [*LONGTLS, "serve", "--www", "--port", str(port), *_cli_psk(psk_file)]
    with start_process(serve, ready_pattern=r"^longtls: serving \(www\)"):
        result = cli_longtls("connect", f"{LOOPBACK}:{port}", *_cli_psk(psk_file), input="GET / HTTP/1.0\r\n\r\n")
    assert result.returncode == 0, result.stderr
    fields = dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)
    assert fields["PSK"].strip() == "external 'meter-17', psk_dhe_ke"
    assert fields["Signature scheme"].strip() == "none (PSK)"
    assert fields["Client certificate"].strip() == "none"


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["serve", "--echo"], ("--cert FILE --key FILE, or --psk-identity ID --psk-file FILE",)),
        (["serve", "--echo", "--psk-identity", "x"], ("--psk-identity and --psk-file go together",)),
        (["connect", f"{LOOPBACK}:1", "--psk-file", "{short}", "--psk-identity", "x"], ("at least 16",)),
        (["connect", f"{LOOPBACK}:1", "--psk-file", "{nothex}", "--psk-identity", "x"], ("hexadecimal",)),
        (["connect", f"{LOOPBACK}:1", "--psk-file", "{missing}", "--psk-identity", "x"], ("cannot read PSK file",)),
    ],
)
def test_cli_psk_errors(args: list[str], fragments: tuple[str, ...], tmp_path: Path) -> None:
    paths = {"short": tmp_path / "short", "nothex": tmp_path / "nothex", "missing": tmp_path / "missing"}
    paths["short"].write_text("1a2b3c4d\n")  # the openssl manual's example: 4 bytes
    paths["nothex"].write_text("not a key\n")
    result = cli_longtls(*(a.format(**{k: str(v) for k, v in paths.items()}) for a in args))
    assert_one_error_line(result, *fragments)


def test_cli_tunnel_over_an_external_psk(psk_file: Path) -> None:
    """``tunnel server`` with only a PSK (no certificate) and ``tunnel client``
    with the same PSK, psk_ke, rekeying by EKU every 16 KiB of traffic."""
    backend = EchoBackend()
    server_port, client_port, metrics_port = free_port(), free_port(), free_port()
    try:
        with contextlib.ExitStack() as stack:
            for args in (
                ["server", "--listen", f"{LOOPBACK}:{server_port}", "--forward", f"{LOOPBACK}:{backend.port}"],
                ["client", "--listen", f"{LOOPBACK}:{client_port}", "--connect", f"{LOOPBACK}:{server_port}",
                 "--rekey-bytes", "16K", "--metrics", f"{LOOPBACK}:{metrics_port}"],
            ):
                stack.enter_context(start_process(
                    [*LONGTLS, "tunnel", *args, *_cli_psk(psk_file, "psk_ke")], ready_pattern=r"^longtls: tunnel "
                ))
            payload = bytes(range(256)) * 1024  # 256 KiB
            with socket.create_connection((LOOPBACK, client_port), timeout=10) as app:
                received = bytearray()
                for offset in range(0, len(payload), 8192):
                    app.sendall(payload[offset:offset + 8192])
                    while len(received) < offset + 8192:
                        data = app.recv(1 << 16)
                        assert data, f"the tunnel closed after {len(received)} bytes"
                        received += data
            assert bytes(received) == payload
            with urllib.request.urlopen(f"http://{LOOPBACK}:{metrics_port}/metrics", timeout=5) as response:
                text = response.read().decode()
        local = re.search(r'^longtls_key_updates_total\{initiator="local",result="completed"\} (\d+)', text, re.M)
        assert local and int(local.group(1)) >= 1, text  # the server paces peer-started EKUs
        assert 'longtls_handshakes_total{result="ok"} 1' in text, text
    finally:
        backend.shutdown()
        backend.server_close()
