"""The TLS handshake engines speak DTLS 1.3 (RFC 9147 §5) given the DTLS transport.

The engines run over an in-memory host that hands whole handshake messages
(TLS form: the 4-byte header the transcript uses, RFC 9147 §5.2) to the
peer: no records, no DTLS framing.  What is checked is what a DTLS peer
sees or relies on:

- the ClientHello and ServerHello bytes (legacy_version 0xfefd, an empty
  legacy_cookie and legacy_session_id, supported_versions 0xfefc);
- every secret, Finished, exporter, ticket PSK and PSK binder against a key
  schedule written out here with cryptography's HMAC (RFC 5869) and the
  "dtls13" label prefix (RFC 9147 §5.9), not the library's key schedule;
- the stateless cookie exchange (RFC 9147 §5.1): one server engine answers
  the first ClientHello with a HelloRetryRequest and is thrown away, a fresh
  one completes the handshake from the second; tampered, expired, rotated
  and other-address cookies;
- the version checks both ways (protocol_version, illegal_parameter).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from helpers.dtls_engines import (
    ADDRESS,
    CLIENT_X25519,
    SERVER_X25519,
    MessageHost,
)
from helpers.dtls_engines import as_host as _as_host
from helpers.dtls_engines import drive_handshake as _handshake
from helpers.dtls_engines import engine_configs as _configs
from helpers.dtls_engines import feed as _feed
from helpers.dtls_engines import parse_dtls_client_hello as _parse_dtls_client_hello
from helpers.dtls_engines import parse_server_hello as _parse_server_hello
from longtls.config import Configuration
from longtls.constants import (
    HELLO_RETRY_REQUEST_RANDOM,
    AlertDescription,
    CipherSuite,
    EKUProfileName,
    ExtensionType,
    HandshakeType,
    KeyUpdateRequest,
    NamedGroup,
    PskKind,
)
from longtls.crypto.groups import get_group
from longtls.crypto.suites import SUITES
from longtls.errors import RemoteProtocolError
from longtls.events import Event, HandshakeComplete, SessionTicket, SessionTicketReceived
from longtls.handshake.client import ClientHandshake
from longtls.handshake.eku import EKUAdmission, ExtendedKeyUpdate
from longtls.handshake.eku_profiles import PROFILES
from longtls.handshake.key_update import KeyUpdateProtocol
from longtls.handshake.server import ServerHandshake, stateless_hello_retry
from longtls.handshake.transport import DTLS, TLS, Transport
from longtls.psk import (
    ExternalPsk,
    ImportedIdentity,
    find_external,
    imported_identity,
    imported_psk,
)
from longtls.wire import extensions as X
from longtls.wire.messages import ClientHello, Extension, ServerHello, encode_handshake

SUITE = SUITES[CipherSuite.TLS_AES_128_GCM_SHA256]
OTHER_ADDRESS = b"\x7f\x00\x00\x02\x13\x88"


# -- an independent key schedule (RFC 5869, RFC 9846 §7.1 with RFC 9147 §5.9) --


def _hmac(key: bytes, data: bytes) -> bytes:
    h = hmac.HMAC(key, hashes.SHA256())
    h.update(data)
    return h.finalize()


def _sha256(data: bytes) -> bytes:
    h = hashes.Hash(hashes.SHA256())
    h.update(data)
    return h.finalize()


def extract(salt: bytes, ikm: bytes) -> bytes:
    return _hmac(salt or bytes(32), ikm)


def expand(prk: bytes, info: bytes, length: int) -> bytes:
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = _hmac(prk, block + info + bytes((counter,)))
        out += block
        counter += 1
    return out[:length]


def expand_label(secret: bytes, label: bytes, context: bytes, length: int) -> bytes:
    full = b"dtls13" + label  # RFC 9147 §5.9: "dtls13", no trailing space
    info = struct.pack(">HB", length, len(full)) + full + bytes((len(context),)) + context
    return expand(secret, info, length)


def derive_secret(secret: bytes, label: bytes, transcript_hash: bytes) -> bytes:
    return expand_label(secret, label, transcript_hash, 32)


def finished(base_key: bytes, transcript_hash: bytes) -> bytes:
    return _hmac(expand_label(base_key, b"finished", b"", 32), transcript_hash)


@dataclass
class Schedule:
    """Every secret of one (EC)DHE handshake, from the messages exchanged."""

    client_handshake: bytes
    server_handshake: bytes
    client_application: bytes
    server_application: bytes
    exporter: bytes
    resumption: bytes
    main: bytes

    @classmethod
    def of(cls, messages: list[bytes], shared: bytes, psk: bytes | None = None) -> Schedule:
        """``messages``: the transcript (TLS form) from ClientHello on; what
        follows client Finished (tickets) is ignored."""
        types = [m[0] for m in messages]
        sh = max(i for i, t in enumerate(types) if t == HandshakeType.server_hello)
        server_fin = types.index(HandshakeType.finished)
        client_fin = types.index(HandshakeType.finished, server_fin + 1)
        early = extract(b"", psk or bytes(32))
        handshake = extract(derive_secret(early, b"derived", _sha256(b"")), shared)
        hello_hash = _sha256(b"".join(messages[: sh + 1]))
        main = extract(derive_secret(handshake, b"derived", _sha256(b"")), bytes(32))
        server_fin_hash = _sha256(b"".join(messages[: server_fin + 1]))
        return cls(
            client_handshake=derive_secret(handshake, b"c hs traffic", hello_hash),
            server_handshake=derive_secret(handshake, b"s hs traffic", hello_hash),
            client_application=derive_secret(main, b"c ap traffic", server_fin_hash),
            server_application=derive_secret(main, b"s ap traffic", server_fin_hash),
            exporter=derive_secret(main, b"exp master", server_fin_hash),
            resumption=derive_secret(main, b"res master", _sha256(b"".join(messages[: client_fin + 1]))),
            main=main,
        )


def exporter(exporter_secret: bytes, label: bytes, context: bytes, length: int) -> bytes:
    """TLS-Exporter (RFC 9846 §7.5) under dtls13 labels."""
    secret = derive_secret(exporter_secret, label, _sha256(b""))
    return expand_label(secret, b"exporter", _sha256(context), length)


def message_hash(client_hello1: bytes) -> bytes:
    """RFC 9846 §4.4.1: the synthetic message replacing ClientHello1."""
    return bytes((HandshakeType.message_hash, 0, 0, 32)) + _sha256(client_hello1)


def _shared() -> bytes:
    server_public = X25519PrivateKey.from_private_bytes(SERVER_X25519).public_key()
    return X25519PrivateKey.from_private_bytes(CLIENT_X25519).exchange(
        X25519PublicKey.from_public_bytes(server_public.public_bytes_raw())
    )


def _raises(alert: AlertDescription, action: Callable[[], object]) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        action()
    assert info.value.alert == alert, info.value
    return info.value


# -- the ClientHello and ServerHello on the wire ----------------------------------


def test_dtls_client_hello_bytes() -> None:
    client_cfg, _ = _configs()
    host = MessageHost()
    ClientHandshake(_as_host(host), client_cfg, DTLS).start()
    (raw,) = host.outbox
    version, sid, cookie, exts = _parse_dtls_client_hello(raw)
    assert version == 0xFEFD  # RFC 9147 §5.3: {254, 253}
    assert sid == b""  # no compatibility mode (§5), no pre-DTLS 1.3 session
    assert cookie == b""  # "A DTLS 1.3-only client MUST set the legacy_cookie field to zero length"
    assert exts[ExtensionType.supported_versions] == b"\x02\xfe\xfc"  # only DTLS 1.3
    assert ExtensionType.cookie not in exts  # no cookie before a HelloRetryRequest
    # The codec reads it back and writes it again byte for byte.
    hello = ClientHello.decode(raw[4:], dtls=True)
    assert hello.legacy_cookie == b"" and hello.legacy_version == 0xFEFD
    assert encode_handshake(HandshakeType.client_hello, hello.encode()) == raw


def test_tls_client_hello_is_unchanged() -> None:
    """The TLS form has no legacy_cookie, legacy_version 0x0303, a 32-byte
    session id (compatibility mode) and supported_versions 0x0304."""
    client_cfg, _ = _configs()
    host = MessageHost()
    ClientHandshake(_as_host(host), client_cfg).start()
    (raw,) = host.outbox
    body = raw[4:]
    assert body[:2] == b"\x03\x03" and body[34] == 32
    hello = ClientHello.decode(body)
    assert hello.legacy_cookie is None
    assert dict((e.type, e.data) for e in hello.extensions)[ExtensionType.supported_versions] == b"\x02\x03\x04"
    assert encode_handshake(HandshakeType.client_hello, hello.encode()) == raw


def test_dtls_handshake_secrets_finished_and_exporter_follow_the_dtls13_schedule() -> None:
    client_cfg, server_cfg = _configs(server_dtls_cookie=False)
    run = _handshake(client_cfg, server_cfg)
    assert run.client.complete and run.server.complete
    # ServerHello: legacy_version 0xfefd, nothing echoed, DTLS 1.3 selected.
    server_hello = next(m for m in run.wire if m[0] == HandshakeType.server_hello)
    version, random, echo, exts = _parse_server_hello(server_hello)
    assert version == 0xFEFD and echo == b"" and random != HELLO_RETRY_REQUEST_RANDOM
    assert exts[ExtensionType.supported_versions] == b"\xfe\xfc"
    # No ChangeCipherSpec anywhere in DTLS 1.3 (RFC 9147 §5): none sent, none accepted.
    assert run.client_host.ccs_points == 0 and run.server_host.ccs_points == 0
    fresh = ClientHandshake(_as_host(MessageHost()), client_cfg, DTLS)
    fresh.start()
    assert not fresh.change_cipher_spec_allowed

    expected = Schedule.of(run.wire, _shared())
    assert run.client_host.write_secrets == [expected.client_handshake, expected.client_application]
    assert run.client_host.read_secrets == [expected.server_handshake, expected.server_application]
    assert run.server_host.write_secrets == [expected.server_handshake, expected.server_application]
    assert run.server_host.read_secrets == [expected.client_handshake, expected.client_application]

    # Both Finished messages are HMACs under dtls13 "finished" keys.
    fins = [i for i, m in enumerate(run.wire) if m[0] == HandshakeType.finished]
    server_fin, client_fin = fins
    assert run.wire[server_fin][4:] == finished(expected.server_handshake, _sha256(b"".join(run.wire[:server_fin])))
    assert run.wire[client_fin][4:] == finished(expected.client_handshake, _sha256(b"".join(run.wire[:client_fin])))

    want = exporter(expected.exporter, b"EXPERIMENTAL dtls test", b"context", 42)
    assert run.client.export(b"EXPERIMENTAL dtls test", b"context", 42) == want
    assert run.server.export(b"EXPERIMENTAL dtls test", b"context", 42) == want
    complete = [e for e in run.client_host.events if isinstance(e, HandshakeComplete)]
    assert [e.version for e in complete] == ["DTLSv1.3"]


def test_the_same_handshake_over_tls_derives_other_keys() -> None:
    """Key separation (RFC 9147 §5.9): the TLS engines keep "tls13 ", so
    their secrets are not the dtls13 ones."""
    client_cfg, server_cfg = _configs(client_middlebox_compatibility=False)
    run = _handshake(client_cfg, server_cfg, TLS)
    assert run.client.complete
    dtls_view = Schedule.of(run.wire, _shared())
    assert run.client_host.write_secrets[0] != dtls_view.client_handshake
    assert [e.version for e in run.client_host.events if isinstance(e, HandshakeComplete)] == ["TLSv1.3"]


# -- the stateless cookie exchange (RFC 9147 §5.1) ---------------------------------


@dataclass
class CookieRun:
    client: ClientHandshake
    client_host: MessageHost
    client_hello1: bytes
    hello_retry_request: bytes
    client_hello2: bytes
    cookie: bytes


def _cookie_exchange(client_cfg: Configuration, server_cfg: Configuration) -> CookieRun:
    """ClientHello1 to a throwaway server engine, its HelloRetryRequest back to
    the client, and the client's ClientHello2 (not yet delivered)."""
    client_host, first_host = MessageHost(), MessageHost()
    client = ClientHandshake(_as_host(client_host), client_cfg, DTLS)
    client.start()
    (ch1,) = client_host.take()
    first = ServerHandshake(_as_host(first_host), server_cfg, DTLS, ADDRESS)
    _feed(first, [ch1])
    (hrr,) = first_host.take()
    # It kept nothing: no suite, no transcript, still at the start, nothing installed.
    assert first.awaiting_cookie and first.suite is None and first.state.name == "START"
    assert first_host.read_secrets == first_host.write_secrets == [] and not first_host.events
    _feed(client, [hrr])
    (ch2,) = client_host.take()
    _, _, _, exts = _parse_server_hello(hrr)
    cookie = X.decode_cookie(exts[ExtensionType.cookie])
    return CookieRun(client, client_host, ch1, hrr, ch2, cookie)


def _second_server(server_cfg: Configuration, address: bytes = ADDRESS) -> tuple[ServerHandshake, MessageHost]:
    host = MessageHost()
    return ServerHandshake(_as_host(host), server_cfg, DTLS, address), host


def _finish(run: CookieRun, server: ServerHandshake, server_host: MessageHost, ch2: bytes | None = None) -> list[bytes]:
    """Deliver ClientHello2 to ``server`` and play out the handshake; the transcript."""
    wire = [message_hash(run.client_hello1), run.hello_retry_request, ch2 or run.client_hello2]
    _feed(server, [wire[-1]])
    for _ in range(5):
        to_client = server_host.take()
        wire += to_client
        _feed(run.client, to_client)
        to_server = run.client_host.take()
        wire += to_server
        _feed(server, to_server)
        if not to_client and not to_server:
            break
    return wire


def test_stateless_cookie_a_fresh_server_engine_completes_the_handshake() -> None:
    client_cfg, server_cfg = _configs()
    run = _cookie_exchange(client_cfg, server_cfg)
    version, random, echo, exts = _parse_server_hello(run.hello_retry_request)
    assert random == HELLO_RETRY_REQUEST_RANDOM and version == 0xFEFD and echo == b""
    assert exts[ExtensionType.supported_versions] == b"\xfe\xfc"
    # The client sent an x25519 share the server takes: the retry is for the cookie only.
    assert set(exts) == {ExtensionType.supported_versions, ExtensionType.cookie}
    # ClientHello2 echoes the cookie, keeps legacy_cookie empty.
    _, _, legacy_cookie, ch2_exts = _parse_dtls_client_hello(run.client_hello2)
    assert legacy_cookie == b"" and X.decode_cookie(ch2_exts[ExtensionType.cookie]) == run.cookie

    server, server_host = _second_server(server_cfg)
    wire = _finish(run, server, server_host)
    assert run.client.complete and server.complete and not server.awaiting_cookie
    # The transcript both sides used starts message_hash(ClientHello1), HelloRetryRequest.
    expected = Schedule.of(wire, _shared())
    assert run.client_host.write_secrets == [expected.client_handshake, expected.client_application]
    assert server_host.write_secrets == [expected.server_handshake, expected.server_application]
    assert run.client.export(b"label", b"", 16) == server.export(b"label", b"", 16) == exporter(
        expected.exporter, b"label", b"", 16
    )


def test_stateless_cookie_and_a_group_mismatch_share_one_hello_retry_request() -> None:
    # The client sends an x25519 share; the server takes only secp256r1.
    client_cfg, server_cfg = _configs(server_groups=(NamedGroup.secp256r1,))
    run = _cookie_exchange(client_cfg, server_cfg)
    _, _, _, exts = _parse_server_hello(run.hello_retry_request)
    assert X.decode_key_share_hrr(exts[ExtensionType.key_share]) == NamedGroup.secp256r1
    assert ExtensionType.cookie in exts
    server, server_host = _second_server(server_cfg)
    _finish(run, server, server_host)
    assert run.client.complete and server.complete
    assert run.client.group == server.group == NamedGroup.secp256r1
    assert run.client_host.write_secrets == server_host.read_secrets


def test_stateless_helper_answers_without_an_engine() -> None:
    clock = [5000.25]
    client_cfg, server_cfg = _configs(server_now=lambda: clock[0])
    run = _cookie_exchange(client_cfg, server_cfg)
    retry = stateless_hello_retry(server_cfg, ADDRESS, run.client_hello1)
    # A retransmitted ClientHello1 gets the same HelloRetryRequest, byte for byte.
    assert retry == run.hello_retry_request
    assert retry is not None and retry[0] == HandshakeType.server_hello
    _, random, _, exts = _parse_server_hello(retry)
    assert random == HELLO_RETRY_REQUEST_RANDOM and ExtensionType.cookie in exts
    # ClientHello2 with a valid cookie: start an engine.
    assert stateless_hello_retry(server_cfg, ADDRESS, run.client_hello2) is None
    _raises(AlertDescription.illegal_parameter, lambda: stateless_hello_retry(server_cfg, OTHER_ADDRESS, run.client_hello2))
    server_cfg.dtls_cookie = False
    assert stateless_hello_retry(server_cfg, ADDRESS, run.client_hello1) is None


def _tamper(message: bytes, cookie: bytes, index: int) -> bytes:
    at = message.index(cookie) + index
    return message[:at] + bytes((message[at] ^ 1,)) + message[at + 1:]


@pytest.mark.parametrize("index", [0, 3, 12, 20, -1], ids=["format", "time", "suite", "hash", "mac"])
def test_a_tampered_cookie_is_illegal_parameter(index: int) -> None:
    client_cfg, server_cfg = _configs()
    run = _cookie_exchange(client_cfg, server_cfg)
    bad = _tamper(run.client_hello2, run.cookie, index % len(run.cookie))
    server, _ = _second_server(server_cfg)
    _raises(AlertDescription.illegal_parameter, lambda: _feed(server, [bad]))


def test_a_cookie_from_another_address_is_illegal_parameter() -> None:
    client_cfg, server_cfg = _configs()
    run = _cookie_exchange(client_cfg, server_cfg)
    server, _ = _second_server(server_cfg, OTHER_ADDRESS)
    _raises(AlertDescription.illegal_parameter, lambda: _feed(server, [run.client_hello2]))


def test_an_expired_cookie_is_illegal_parameter() -> None:
    clock = [1_000_000.0]
    client_cfg, server_cfg = _configs(server_now=lambda: clock[0])
    run = _cookie_exchange(client_cfg, server_cfg)
    clock[0] += server_cfg.cookie_lifetime + 0.5
    server, _ = _second_server(server_cfg)
    _raises(AlertDescription.illegal_parameter, lambda: _feed(server, [run.client_hello2]))
    # Within its lifetime it is fine.
    clock[0] -= 1.0
    server, server_host = _second_server(server_cfg)
    _finish(run, server, server_host)
    assert server.complete


def test_cookie_secret_rotation_accepts_the_current_and_the_previous_secret() -> None:
    client_cfg, server_cfg = _configs()
    run = _cookie_exchange(client_cfg, server_cfg)
    server_cfg.rotate_cookie_secret()
    server, server_host = _second_server(server_cfg)
    _finish(run, server, server_host)
    assert server.complete
    server_cfg.rotate_cookie_secret()  # the cookie's secret is now two rotations old
    server, _ = _second_server(server_cfg)
    _raises(AlertDescription.illegal_parameter, lambda: _feed(server, [run.client_hello2]))


def test_a_first_client_hello_with_a_made_up_cookie_is_illegal_parameter() -> None:
    def add_cookie(exts: list[Extension]) -> list[Extension]:
        return [*exts, Extension(ExtensionType.cookie, X.encode_cookie(b"\x01" * 80))]
    client_cfg, server_cfg = _configs(client_client_hello_hook=add_cookie)
    host = MessageHost()
    ClientHandshake(_as_host(host), client_cfg, DTLS).start()
    server, _ = _second_server(server_cfg)
    _raises(AlertDescription.illegal_parameter, lambda: _feed(server, host.outbox))


def test_a_second_client_hello_without_the_requested_share_is_illegal_parameter() -> None:
    client_cfg, server_cfg = _configs(server_groups=(NamedGroup.secp256r1,))
    run = _cookie_exchange(client_cfg, server_cfg)
    # Put ClientHello1's key_share (x25519) back in place of the secp256r1 one.
    ch2 = ClientHello.decode(run.client_hello2[4:], dtls=True)
    ch1 = ClientHello.decode(run.client_hello1[4:], dtls=True)
    old_share = next(e for e in ch1.extensions if e.type == ExtensionType.key_share)
    exts = tuple(old_share if e.type == ExtensionType.key_share else e for e in ch2.extensions)
    forged = encode_handshake(HandshakeType.client_hello, ClientHello(
        ch2.random, ch2.legacy_session_id, ch2.cipher_suites, exts,
        legacy_version=ch2.legacy_version, legacy_cookie=b"",
    ).encode())
    server, _ = _second_server(server_cfg)
    _raises(AlertDescription.illegal_parameter, lambda: _feed(server, [forged]))


# -- version checks both ways --------------------------------------------------------


def _hello_with_versions(transport: Transport, versions: list[int]) -> bytes:
    def swap(exts: list[Extension]) -> list[Extension]:
        return [
            Extension(e.type, X.encode_supported_versions_client(versions))
            if e.type == ExtensionType.supported_versions else e
            for e in exts
        ]
    client_cfg, _ = _configs(client_client_hello_hook=swap)
    host = MessageHost()
    ClientHandshake(_as_host(host), client_cfg, transport).start()
    return host.outbox[0]


def test_a_dtls_server_refuses_tls_versions_and_a_tls_server_dtls_ones() -> None:
    _, server_cfg = _configs()
    dtls_server = ServerHandshake(_as_host(MessageHost()), server_cfg, DTLS, ADDRESS)
    _raises(AlertDescription.protocol_version, lambda: _feed(dtls_server, [_hello_with_versions(DTLS, [0x0304])]))
    tls_server = ServerHandshake(_as_host(MessageHost()), server_cfg)
    _raises(AlertDescription.protocol_version, lambda: _feed(tls_server, [_hello_with_versions(TLS, [0xFEFC])]))


def test_a_non_empty_legacy_cookie_is_illegal_parameter() -> None:
    client_cfg, server_cfg = _configs()
    host = MessageHost()
    ClientHandshake(_as_host(host), client_cfg, DTLS).start()
    hello = ClientHello.decode(host.outbox[0][4:], dtls=True)
    forged = encode_handshake(HandshakeType.client_hello, ClientHello(
        hello.random, b"", hello.cipher_suites, hello.extensions, legacy_version=0xFEFD, legacy_cookie=b"\x00" * 8,
    ).encode())
    server, _ = _second_server(server_cfg)
    _raises(AlertDescription.illegal_parameter, lambda: _feed(server, [forged]))


def _server_hello_variant(**changes: object) -> tuple[ClientHandshake, bytes]:
    """A DTLS client after ClientHello, and the server's real ServerHello with ``changes``."""
    client_cfg, server_cfg = _configs(server_dtls_cookie=False)
    client_host, server_host = MessageHost(), MessageHost()
    client = ClientHandshake(_as_host(client_host), client_cfg, DTLS)
    client.start()
    server = ServerHandshake(_as_host(server_host), server_cfg, DTLS, ADDRESS)
    _feed(server, client_host.take())
    real = ServerHello.decode(server_host.outbox[0][4:])
    fields = {
        "random": real.random, "legacy_session_id_echo": real.legacy_session_id_echo,
        "cipher_suite": real.cipher_suite, "extensions": real.extensions, "legacy_version": real.legacy_version,
    }
    fields.update(changes)
    forged = ServerHello(**fields)  # type: ignore[arg-type]
    return client, encode_handshake(HandshakeType.server_hello, forged.encode())


@pytest.mark.parametrize(
    ("changes", "alert"),
    [
        ({"legacy_version": 0x0303}, AlertDescription.protocol_version),
        ({"legacy_session_id_echo": b"\x07" * 32}, AlertDescription.illegal_parameter),
        (
            {"extensions": (Extension(ExtensionType.supported_versions, X.encode_supported_versions_server(0x0304)),)},
            AlertDescription.illegal_parameter,
        ),
    ],
    ids=["legacy_version-0x0303", "session-id-echoed", "tls13-selected"],
)
def test_a_dtls_client_checks_the_server_hello(changes: dict[str, object], alert: AlertDescription) -> None:
    client, forged = _server_hello_variant(**changes)
    _raises(alert, lambda: _feed(client, [forged]))


# -- tickets, binders, KeyUpdate, EKU under dtls13 labels ----------------------------


def test_dtls_tickets_resume_over_dtls_with_dtls13_binders_and_not_over_tls() -> None:
    client_cfg, server_cfg = _configs(server_session_tickets=1, server_dtls_cookie=False)
    run = _handshake(client_cfg, server_cfg)
    expected = Schedule.of(run.wire, _shared())
    (nst,) = [m for m in run.wire if m[0] == HandshakeType.new_session_ticket]
    (received,) = [e for e in run.client_host.events if isinstance(e, SessionTicketReceived)]
    ticket: SessionTicket = received.ticket
    nonce = nst[4 + 8 + 1: 4 + 8 + 1 + nst[4 + 8]]
    assert ticket.psk == expand_label(expected.resumption, b"resumption", nonce, 32)

    # Resumption over DTLS: the binder is an HMAC under the dtls13 "res binder" key
    # over the TLS-form truncated ClientHello (RFC 9147 §5.2; RFC 9846 §4.2.11.2).
    client_cfg.session_ticket = ticket
    resumed = _handshake(client_cfg, server_cfg)
    assert resumed.client.resumed and resumed.server.resumed
    ch = resumed.wire[0]
    binders_length = 2 + 1 + 32
    truncated = ch[: len(ch) - binders_length]
    early = extract(b"", ticket.psk)
    binder_key = derive_secret(early, b"res binder", _sha256(b""))
    assert ch[-32:] == finished(binder_key, _sha256(truncated))
    assert resumed.client_host.write_secrets[0] == Schedule.of(resumed.wire, _shared(), ticket.psk).client_handshake

    # The same ticket at a TLS server: it does not open there, a full handshake follows.
    over_tls = _handshake(client_cfg, server_cfg, TLS)
    assert over_tls.client.complete and not over_tls.server.resumed


def test_external_psk_after_a_stateless_retry_binds_message_hash_and_the_retry() -> None:
    """The binder of ClientHello2 covers message_hash(ClientHello1), the
    HelloRetryRequest and the truncated ClientHello2 (RFC 9846 §4.2.11.2),
    under the dtls13 "ext binder" key; a fresh server engine verifies it."""
    key = bytes(range(32))
    psk = ExternalPsk(b"meter-17", key)
    client_cfg, server_cfg = _configs(client_external_psks=(psk,), server_external_psks=(psk,))
    run = _cookie_exchange(client_cfg, server_cfg)
    ch2 = run.client_hello2
    truncated = ch2[: len(ch2) - (2 + 1 + 32)]
    binder_key = derive_secret(extract(b"", key), b"ext binder", _sha256(b""))
    transcript = message_hash(run.client_hello1) + run.hello_retry_request + truncated
    assert ch2[-32:] == finished(binder_key, _sha256(transcript))
    server, server_host = _second_server(server_cfg)
    wire = _finish(run, server, server_host)
    assert server.complete and server.psk_kind is PskKind.EXTERNAL and run.client.psk_kind is PskKind.EXTERNAL
    assert server_host.read_secrets[0] == Schedule.of(wire, _shared(), key).client_handshake


@dataclass
class _KeyUpdateHost:
    """The least a KeyUpdateProtocol needs."""

    configuration: Configuration
    write: bytes
    read: bytes
    is_client: bool = True
    close_sent: bool = False
    close_received: bool = False
    handshake_data_pending: bool = False
    read_generation: int = 0
    write_generation: int = 0
    sent: list[bytes] = field(default_factory=list)

    @property
    def current_read_secret(self) -> bytes:
        return self.read

    @property
    def current_write_secret(self) -> bytes:
        return self.write

    def queue_handshake(self, message: bytes) -> None:
        self.sent.append(message)

    def advance_write_secret(self, secret: bytes) -> None:
        self.write, self.write_generation = secret, self.write_generation + 1

    def advance_read_secret(self, secret: bytes) -> None:
        self.read, self.read_generation = secret, self.read_generation + 1

    def log_secret(self, label: str, secret: bytes) -> None:
        pass

    def emit(self, event: Event) -> None:
        pass

    def rekeyed(self) -> None:
        pass


def test_key_update_uses_dtls13_traffic_upd() -> None:
    client_cfg, _ = _configs()
    host = _KeyUpdateHost(client_cfg, write=b"\x01" * 32, read=b"\x02" * 32)
    protocol = KeyUpdateProtocol(host, SUITE, DTLS.label_prefix)
    protocol.send(KeyUpdateRequest.update_not_requested)
    assert host.write == expand_label(b"\x01" * 32, b"traffic upd", b"", 32)


@dataclass
class _EKUHost:
    configuration: Configuration
    is_client: bool
    close_sent: bool = False
    sent: list[bytes] = field(default_factory=list)
    send_secret: bytes = b""
    receive_secret: bytes = b""

    def queue_handshake(self, message: bytes) -> None:
        self.sent.append(message)

    def emit(self, event: Event) -> None:
        pass

    def log_secret(self, label: str, secret: bytes) -> None:
        pass

    def request_send_switch(self, secret: bytes) -> None:
        self.send_secret = secret
        self.eku.send_switch_done()

    def switch_receive(self, secret: bytes) -> None:
        self.receive_secret = secret

    def eku_admission(self) -> EKUAdmission:
        return EKUAdmission.ACCEPT

    def eku_wait_seconds(self) -> float:
        return 0.0

    def eku_completed(self) -> None:
        pass

    eku: ExtendedKeyUpdate = field(init=False)


def test_extended_key_update_draft13_derives_under_dtls13_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    """EKU draft-13 §6 over DTLS: main_N+1 and the traffic secrets with "dtls13" labels."""
    client_cfg, server_cfg = _configs()
    main, transcript_hash = b"\x11" * 32, b"\x22" * 32
    group = get_group(NamedGroup.x25519)
    shares = iter([group.from_private_bytes(CLIENT_X25519), group.from_private_bytes(SERVER_X25519)])
    monkeypatch.setattr(group, "generate", lambda: next(shares))
    hosts = []
    for cfg in (client_cfg, server_cfg):
        host = _EKUHost(cfg, cfg.is_client)
        host.eku = ExtendedKeyUpdate(
            host, PROFILES[EKUProfileName.draft_13], SUITE, NamedGroup.x25519, main, transcript_hash,
            b"\x33" * 32, b"\x44" * 32, prefix=DTLS.label_prefix,
        )
        hosts.append(host)
    client, server = hosts
    client.eku.start()
    request = client.sent[0]
    response = b""
    for _ in range(3):
        for sender, receiver in ((client, server), (server, client)):
            messages, sender.sent = sender.sent, []
            if sender is server and messages and not response:
                response = messages[0]
            for raw in messages:
                receiver.eku.handle(raw[0], raw[4:], raw)
    assert client.eku.generation == server.eku.generation == 1
    # draft-13 §6, written out: salt from main_N, main_N+1 = HKDF-Extract(salt, shared).
    salt = derive_secret(main, b"derived", _sha256(b""))
    next_main = extract(salt, _shared())
    context = _sha256(transcript_hash + request + response)
    assert client.send_secret == server.receive_secret == derive_secret(next_main, b"c ap traffic", context)
    assert server.send_secret == client.receive_secret == derive_secret(next_main, b"s ap traffic", context)



def test_imported_psk_targets_dtls13_over_dtls() -> None:
    """RFC 9258 §5.1: ImportedIdentity.target_protocol is the protocol the PSK is
    imported for: 0xfefc over DTLS 1.3, so the PSK (Hash(ImportedIdentity) is in
    its derivation) differs from the one imported for TLS 1.3."""
    epsk = ExternalPsk(b"meter-17", bytes(range(32)), importer=True)
    client_cfg, server_cfg = _configs(client_external_psks=(epsk,), server_external_psks=(epsk,))
    run = _handshake(client_cfg, server_cfg)
    assert run.client.complete and run.server.psk_kind is PskKind.IMPORTED
    _, _, _, exts = _parse_dtls_client_hello(run.wire[0])
    identities = X.decode_pre_shared_key_client(exts[ExtensionType.pre_shared_key]).identities
    imported = [ImportedIdentity.decode(i.identity) for i in identities]
    assert imported and all(i is not None and i.target_protocol == 0xFEFC for i in imported)
    assert imported_psk(epsk, "sha256", 0xFEFC) != imported_psk(epsk, "sha256")
    # A server over DTLS does not take an identity imported for TLS 1.3.
    tls_identity = imported_identity(epsk, "sha256").encode()
    assert find_external((epsk,), None, tls_identity, 0xFEFC) is None
    assert find_external((epsk,), None, tls_identity) is not None
