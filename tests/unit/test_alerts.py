"""At least one negative test for every alert longtls can send.

Each test feeds a longtls Connection hostile bytes and checks, through
:func:`expect_fatal`, that

1. ``receive_data`` raises a longtls ``ProtocolError`` of the right class
   (``RemoteProtocolError`` or a subclass when the peer is at fault) whose
   ``.alert`` is the alert the spec names -- any other exception type fails
   the test as an error;
2. the bytes queued in ``data_to_send()`` end with that alert, at level fatal,
   in the clear or sealed under the sender's current key (opened with the key
   log), and a second longtls Connection fed those bytes reports
   ``ConnectionClosed(alert=X, by_peer=True)``;
3. the connection is closed, has queued exactly one ``ConnectionClosed``
   event, and further ``receive_data`` is a no-op;
4. nothing but a longtls ``ProtocolError`` escapes (anything else propagates
   and errors the test).

A few tests at the end check the opposite: input the spec says to ignore or
answer without an alert.

Section numbers are those of the spec text in
../shared/specs/rfc9846-tls13-rfc8446bis.md (RFC 9846); where RFC 8446
numbered a section differently the RFC 9846 number is used (e.g. Key Share is
§4.3.8 here, §4.2.8 in RFC 8446).

Hostile input is built with the wire codecs, by rewriting a real peer's
records (``helpers.tamper``; protected records are opened and re-sealed with
the secrets from ``Configuration.keylog``), or with the public
``client_hello_hook``.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.x509.oid import NameOID

from helpers.pair import Pair, configs, connect
from helpers.pki import Credential, generate_key, make_ca, make_leaf
from helpers.tamper import (
    KeyLog,
    Message,
    body_of,
    decode_last_record,
    flip,
    negotiated_suite,
    open_protected,
    plaintext_messages,
    replace,
    rewrite_flight,
    rewrite_plaintext,
    seal,
    split_messages,
    split_records,
)
from longtls.config import ClientAuth, Configuration
from longtls.connection import Connection
from longtls.constants import (
    HELLO_RETRY_REQUEST_RANDOM,
    AlertDescription,
    AlertLevel,
    CipherSuite,
    ContentType,
    ExtensionType,
    HandshakeType,
    NamedGroup,
    SignatureScheme,
)
from longtls.crypto.suites import suite_info
from longtls.errors import (
    CertificateError,
    DecodeError,
    ProtocolError,
    RemoteProtocolError,
)
from longtls.events import (
    ApplicationData,
    ConnectionClosed,
    HandshakeComplete,
    SessionTicketReceived,
)
from longtls.record.tls import plaintext_record
from longtls.wire import extensions as X
from longtls.wire.messages import (
    Certificate,
    CertificateEntry,
    CertificateRequest,
    CertificateVerify,
    ClientHello,
    EncryptedExtensions,
    Extension,
    NewSessionTicket,
    ServerHello,
    encode_handshake,
)

A = AlertDescription
AES128 = CipherSuite.TLS_AES_128_GCM_SHA256
SUITE = suite_info(AES128)

# --------------------------------------------------------------------------- harness


def expect_fatal(
    victim: Connection,
    data: bytes,
    alert: AlertDescription,
    *,
    peer: Connection | None = None,
    peer_prefix: bytes = b"",
    error: type[ProtocolError] = RemoteProtocolError,
) -> ProtocolError:
    """Feed ``data`` to ``victim`` and check what a fatal error promises (module docstring).

    A protected alert is opened with the secrets from the victim's KeyLog;
    ``peer`` is the other end, fed ``peer_prefix`` (bytes the victim sent
    earlier that the peer has not seen yet) and then the victim's output.
    """
    side = "client" if victim.is_client else "server"
    log = victim.configuration.keylog if isinstance(victim.configuration.keylog, KeyLog) else None
    try:
        victim.receive_data(data)
    except ProtocolError as exc:
        error_raised = exc
    else:
        pytest.fail(f"the {side} accepted the input; the spec requires a fatal {alert.name} alert")
    # (1) the right longtls error, carrying the alert the spec names
    assert isinstance(error_raised, error), (
        f"{type(error_raised).__name__} raised, expected {error.__name__}: {error_raised}"
    )
    assert error_raised.alert is alert, (
        f"the {side} sent {error_raised.alert.name}, the spec names {alert.name}: {error_raised}"
    )
    # (3) closed, with one ConnectionClosed naming the alert we sent
    assert victim.is_closed
    closed = [(e.alert, e.by_peer) for e in victim.events() if isinstance(e, ConnectionClosed)]
    assert closed == [(alert, False)]
    # (2) the alert is on the wire, fatal, as the last record
    out = victim.data_to_send()
    assert out, "no alert was queued"
    content_type, content = decode_last_record(out, log, side)
    assert (content_type, content) == (ContentType.ALERT, bytes((AlertLevel.FATAL, alert))), (
        f"last record is type {content_type} carrying {content.hex()}"
    )
    # (3) further input is ignored: no exception, no output, no event
    victim.receive_data(data)
    victim.receive_data(plaintext_record(ContentType.ALERT, bytes((AlertLevel.FATAL, A.decode_error))))
    assert victim.data_to_send() == b""
    assert victim.events() == []
    # (2) the peer reads the alert
    if peer is not None:
        peer.receive_data(peer_prefix + out)
        seen = [(e.alert, e.by_peer) for e in peer.events() if isinstance(e, ConnectionClosed)]
        assert seen == [(alert, True)], f"the peer saw {seen}"
        assert peer.is_closed
    return error_raised


def make_configs(**kwargs: object) -> tuple[Configuration, Configuration, KeyLog, KeyLog]:
    """helpers.pair.configs() with a key log on each side and one cipher suite."""
    kwargs.setdefault("client_cipher_suites", [AES128])
    c, s, _ca = configs(**kwargs)
    c.keylog, s.keylog = KeyLog(), KeyLog()
    return c, s, c.keylog, s.keylog


def hello(c: Configuration, s: Configuration) -> tuple[Connection, Connection, bytes]:
    """A client that sent its ClientHello, a server that has not read it yet, the bytes."""
    client, server = Connection(c), Connection(s)
    client.start_handshake()
    return client, server, client.data_to_send()


def server_flight(c: Configuration, s: Configuration) -> tuple[Connection, Connection, bytes]:
    """... and the server's first flight, not yet given to the client."""
    client, server, ch = hello(c, s)
    server.receive_data(ch)
    return client, server, server.data_to_send()


def client_flight(c: Configuration, s: Configuration) -> tuple[Connection, Connection, bytes]:
    """... and the client's second flight (CCS, [Certificate, CertificateVerify,] Finished)."""
    client, server, flight = server_flight(c, s)
    client.receive_data(flight)
    return client, server, client.data_to_send()


def client_hello_of(data: bytes) -> ClientHello:
    ((msg_type, body),) = plaintext_messages(data)
    assert msg_type == HandshakeType.client_hello
    return ClientHello.decode(body)


def handshake_record(msg_type: int, body: bytes, version: int = 0x0303) -> bytes:
    return plaintext_record(ContentType.HANDSHAKE, encode_handshake(msg_type, body), version)


def edit_server_hello(edit: Callable[[ServerHello], ServerHello]) -> Callable[[list[Message]], list[Message]]:
    def apply(messages: list[Message]) -> list[Message]:
        sh = ServerHello.decode(body_of(messages, HandshakeType.server_hello))
        return replace(messages, HandshakeType.server_hello, edit(sh).encode())

    return apply


def with_extensions(sh: ServerHello, exts: list[Extension], **changes: object) -> ServerHello:
    fields = {
        "random": sh.random, "legacy_session_id_echo": sh.legacy_session_id_echo,
        "cipher_suite": sh.cipher_suite, "extensions": tuple(exts),
        "legacy_compression_method": sh.legacy_compression_method, "legacy_version": sh.legacy_version,
    }
    fields.update(changes)
    return ServerHello(**fields)  # type: ignore[arg-type]


def tampered_server_flight(
    c: Configuration, s: Configuration, slog: KeyLog,
    edit: Callable[[list[Message]], list[Message]],
) -> tuple[Connection, Connection, bytes]:
    """The server's first flight with its protected handshake messages edited."""
    client, server, flight = server_flight(c, s)
    suite = negotiated_suite(flight)
    flight = rewrite_flight(flight, suite, slog.secret("SERVER_HANDSHAKE_TRAFFIC_SECRET"), edit)
    return client, server, flight


def edit_ee(extra: list[Extension]) -> Callable[[list[Message]], list[Message]]:
    def apply(messages: list[Message]) -> list[Message]:
        ee = EncryptedExtensions.decode(body_of(messages, HandshakeType.encrypted_extensions))
        new = EncryptedExtensions((*ee.extensions, *extra))
        return replace(messages, HandshakeType.encrypted_extensions, new.encode())

    return apply


def hook_drop(*types: int) -> Callable[[list[Extension]], list[Extension]]:
    return lambda exts: [e for e in exts if e.type not in types]


def hook_set(ext_type: int, data: bytes) -> Callable[[list[Extension]], list[Extension]]:
    return lambda exts: [Extension(ext_type, data) if e.type == ext_type else e for e in exts]


def no_eku(**kwargs: object) -> dict[str, object]:
    """Classic KeyUpdate and ticket resumption need Extended Key Update off."""
    return {"client_extended_key_update": False, "server_extended_key_update": False, **kwargs}


def connected(**kwargs: object) -> tuple[Pair, KeyLog, KeyLog]:
    c, s, clog, slog = make_configs(**kwargs)
    pair = connect(c, s)
    assert pair.client.handshake_complete and pair.server.handshake_complete
    return pair, clog, slog


# =========================================================================== unexpected_message


def test_plaintext_application_data_before_the_handshake() -> None:
    """§5 and §5.1: application data is never sent unprotected; an unexpected
    record type is answered with unexpected_message (§6.2: "premature
    Application Data")."""
    c, s, _, _ = make_configs()
    client, server, _ch = hello(c, s)
    expect_fatal(server, plaintext_record(ContentType.APPLICATION_DATA, b"GET /"), A.unexpected_message, peer=client)


def test_protected_application_data_before_the_peers_finished() -> None:
    """§4.5.3: Application Data may flow only after Finished; §6.2
    unexpected_message covers "premature Application Data".  Sealed under the
    server's handshake key, so it authenticates but comes too early."""
    c, s, _, slog = make_configs()
    client, server, flight = server_flight(c, s)
    clear = b"".join(r.raw for r in split_records(flight) if not r.protected)
    early = seal(SUITE, slog.secret("SERVER_HANDSHAKE_TRAFFIC_SECRET"), ContentType.APPLICATION_DATA, b"hi")
    expect_fatal(client, clear + early, A.unexpected_message, peer=server)


def test_finished_in_place_of_server_hello() -> None:
    """§4: "A peer which receives a handshake message in an unexpected order
    MUST abort the handshake with an unexpected_message alert"."""
    c, s, _, _ = make_configs()
    client, server, ch = hello(c, s)
    server.receive_data(ch)
    server.data_to_send()
    expect_fatal(client, handshake_record(HandshakeType.finished, bytes(32)), A.unexpected_message, peer=server)


def test_server_hello_to_a_server() -> None:
    """§4 (unexpected order): a ServerHello is never a server's input."""
    c, s, _, _ = make_configs()
    client, server, _ch = hello(c, s)
    hello_back = ServerHello(bytes(32), b"", AES128, (
        Extension(ExtensionType.supported_versions, X.encode_supported_versions_server(0x0304)),
    ))
    expect_fatal(server, handshake_record(HandshakeType.server_hello, hello_back.encode()), A.unexpected_message, peer=client)


@pytest.mark.parametrize("victim", ["client", "server"])
def test_change_cipher_spec_after_the_handshake(victim: str) -> None:
    """§5: a change_cipher_spec received after the peer's Finished "MUST be
    treated as an unexpected record type" -> unexpected_message."""
    pair, _, _ = connected()
    me, peer = (pair.client, pair.server) if victim == "client" else (pair.server, pair.client)
    expect_fatal(me, plaintext_record(ContentType.CHANGE_CIPHER_SPEC, b"\x01"), A.unexpected_message, peer=peer)


def test_change_cipher_spec_before_client_hello() -> None:
    """§5: a change_cipher_spec before the first ClientHello is an unexpected
    record type -> unexpected_message."""
    c, s, _, _ = make_configs()
    client, server, _ch = hello(c, s)
    expect_fatal(server, plaintext_record(ContentType.CHANGE_CIPHER_SPEC, b"\x01"), A.unexpected_message, peer=client)


@pytest.mark.parametrize("value", [b"\x02", b"\x00", b"\x01\x01"], ids=["0x02", "0x00", "two-bytes"])
def test_change_cipher_spec_other_than_a_single_0x01(value: bytes) -> None:
    """§5: "An implementation which receives any other change_cipher_spec
    value ... MUST abort the handshake with an unexpected_message alert"."""
    c, s, _, _ = make_configs()
    client, server, ch = hello(c, s)
    server.receive_data(ch)
    server.data_to_send()
    expect_fatal(client, plaintext_record(ContentType.CHANGE_CIPHER_SPEC, value), A.unexpected_message, peer=server)


def test_protected_change_cipher_spec() -> None:
    """§5: "... or which receives a protected change_cipher_spec record MUST
    abort the handshake with an unexpected_message alert"."""
    c, s, _, slog = make_configs()
    client, server, flight = server_flight(c, s)
    clear = b"".join(r.raw for r in split_records(flight) if not r.protected)
    ccs = seal(SUITE, slog.secret("SERVER_HANDSHAKE_TRAFFIC_SECRET"), ContentType.CHANGE_CIPHER_SPEC, b"\x01")
    expect_fatal(client, clear + ccs, A.unexpected_message, peer=server)


def test_handshake_message_spanning_the_key_change() -> None:
    """§5.1: handshake messages MUST NOT span key changes; a receiver MUST
    verify that the messages before a key change align with a record
    boundary, else unexpected_message.  Here the ClientHello record carries
    the first bytes of a further message."""
    c, s, _, _ = make_configs()
    client, server, ch = hello(c, s)
    ((_, body),) = plaintext_messages(ch)
    stream = encode_handshake(HandshakeType.client_hello, body) + encode_handshake(HandshakeType.finished, bytes(32))[:10]
    out = expect_fatal(server, plaintext_record(ContentType.HANDSHAKE, stream), A.unexpected_message, peer=client)
    assert "key change" in str(out)


def test_complete_message_after_client_hello_in_the_same_record() -> None:
    """§5.1: the ClientHello can precede a key change, so it "MUST" end its
    record; a whole second message in the same record does not align with
    the record boundary either -> unexpected_message (not processed as if it
    had been protected)."""
    c, s, _, _ = make_configs()
    client, server, ch = hello(c, s)
    ((_, body),) = plaintext_messages(ch)
    stream = encode_handshake(HandshakeType.client_hello, body) + encode_handshake(HandshakeType.finished, bytes(32))
    expect_fatal(server, plaintext_record(ContentType.HANDSHAKE, stream), A.unexpected_message, peer=client)


def test_encrypted_extensions_in_the_server_hello_record() -> None:
    """§5.1: ServerHello precedes a key change and MUST end its record.  An
    EncryptedExtensions sent in the clear right after it, in the same record,
    must be refused with unexpected_message, not accepted as if protected."""
    c, s, _, slog = make_configs()
    client, server, flight = server_flight(c, s)
    records = split_records(flight)
    inner = open_protected(negotiated_suite(flight), slog.secret("SERVER_HANDSHAKE_TRAFFIC_SECRET"), records)
    ee = [m for m in split_messages(b"".join(c for _, c in inner)) if m[0] == HandshakeType.encrypted_extensions]
    sh = body_of(plaintext_messages(flight), HandshakeType.server_hello)
    stream = encode_handshake(HandshakeType.server_hello, sh) + encode_handshake(*ee[0])
    expect_fatal(client, plaintext_record(ContentType.HANDSHAKE, stream), A.unexpected_message, peer=server)


def test_key_update_before_finished() -> None:
    """§4.7.3: "Implementations that receive a KeyUpdate message prior to
    receiving a Finished message MUST terminate the connection with an
    unexpected_message alert"."""
    c, s, _, slog = make_configs(**no_eku())
    client, server, flight = server_flight(c, s)
    key_update = seal(
        SUITE, slog.secret("CLIENT_HANDSHAKE_TRAFFIC_SECRET"), ContentType.HANDSHAKE,
        encode_handshake(HandshakeType.key_update, b"\x00"),
    )
    expect_fatal(server, key_update, A.unexpected_message, peer=client, peer_prefix=flight)


def test_key_update_not_ending_its_record() -> None:
    """§5.1: KeyUpdate precedes a key change, so it MUST align with a record
    boundary; more handshake bytes after it in the record -> unexpected_message."""
    pair, clog, _ = connected(**no_eku())
    stream = encode_handshake(HandshakeType.key_update, b"\x00") + encode_handshake(HandshakeType.key_update, b"\x00")[:2]
    record = seal(SUITE, clog.secret("CLIENT_TRAFFIC_SECRET_0"), ContentType.HANDSHAKE, stream)
    expect_fatal(pair.server, record, A.unexpected_message, peer=pair.client)


def test_post_handshake_certificate_request_without_the_offer() -> None:
    """§4.7.2: "A client that receives a post-handshake CertificateRequest
    message without having sent the post_handshake_auth extension MUST send an
    unexpected_message fatal alert"."""
    pair, _, slog = connected(server_session_tickets=0)
    cr = CertificateRequest(b"\x07" * 8, (
        Extension(ExtensionType.signature_algorithms, X.encode_signature_algorithms([SignatureScheme.ed25519])),
    ))
    record = seal(
        SUITE, slog.secret("SERVER_TRAFFIC_SECRET_0"), ContentType.HANDSHAKE,
        encode_handshake(HandshakeType.certificate_request, cr.encode()),
    )
    expect_fatal(pair.client, record, A.unexpected_message, peer=pair.server)


def test_client_hello_after_the_handshake() -> None:
    """§4.2.2: "if a server has negotiated TLS 1.3 and receives a ClientHello
    at any other time, it MUST terminate the connection with an
    unexpected_message alert" (no renegotiation)."""
    c, s, clog, _ = make_configs()
    pair = connect(c, s)
    again = Connection(Configuration(is_client=True, server_name="localhost", cipher_suites=[AES128]))
    again.start_handshake()
    ((_, body),) = plaintext_messages(again.data_to_send())
    record = seal(
        SUITE, clog.secret("CLIENT_TRAFFIC_SECRET_0"), ContentType.HANDSHAKE,
        encode_handshake(HandshakeType.client_hello, body),
    )
    expect_fatal(pair.server, record, A.unexpected_message, peer=pair.client)


@pytest.mark.parametrize(
    ("victim", "msg_type", "body"),
    [
        ("server", HandshakeType.new_session_ticket, NewSessionTicket(60, 0, b"\x00", b"ticket").encode()),
        ("server", HandshakeType.finished, bytes(32)),
        ("server", HandshakeType.end_of_early_data, b""),
        ("server", HandshakeType.certificate_verify, CertificateVerify(SignatureScheme.ed25519, bytes(64)).encode()),
        ("server", 99, b"\x00"),
        ("client", HandshakeType.end_of_early_data, b""),
        ("client", HandshakeType.finished, bytes(32)),
        ("client", HandshakeType.encrypted_extensions, EncryptedExtensions(()).encode()),
        ("client", 99, b"\x00"),
    ],
    ids=[
        "server-new_session_ticket", "server-finished", "server-end_of_early_data",
        "server-certificate_verify", "server-type-99", "client-end_of_early_data", "client-finished",
        "client-encrypted_extensions", "client-type-99",
    ],
)
def test_unexpected_handshake_message_after_the_handshake(victim: str, msg_type: int, body: bytes) -> None:
    """§4: a handshake message out of order -> unexpected_message; §4.6 for
    EndOfEarlyData ("Servers MUST NOT send this message, and clients receiving
    it MUST terminate the connection with an unexpected_message alert"; a
    client sends it only after early data was accepted)."""
    pair, clog, slog = connected(server_session_tickets=0)
    if victim == "client":
        me, peer, secret = pair.client, pair.server, slog.secret("SERVER_TRAFFIC_SECRET_0")
    else:
        me, peer, secret = pair.server, pair.client, clog.secret("CLIENT_TRAFFIC_SECRET_0")
    record = seal(SUITE, secret, ContentType.HANDSHAKE, encode_handshake(msg_type, body))
    expect_fatal(me, record, A.unexpected_message, peer=peer)


def test_plaintext_handshake_record_after_keys_are_in_use() -> None:
    """§5.1/§5.2: once record protection is engaged, handshake messages come
    in TLSCiphertext records; a TLSPlaintext handshake record then is an
    unexpected record -> unexpected_message (§5)."""
    c, s, _, _ = make_configs()
    client, server, flight = server_flight(c, s)
    clear = b"".join(r.raw for r in split_records(flight) if not r.protected)
    ee = handshake_record(HandshakeType.encrypted_extensions, EncryptedExtensions(()).encode())
    expect_fatal(client, clear + ee, A.unexpected_message, peer=server)


def test_second_hello_retry_request() -> None:
    """§4.2.4: "If a client receives a second HelloRetryRequest in the same
    connection ... it MUST abort the handshake with an unexpected_message alert"."""
    c, s, _, _ = make_configs(
        client_groups=[NamedGroup.x25519, NamedGroup.secp256r1], client_key_share_groups=[NamedGroup.x25519],
        server_groups=[NamedGroup.secp256r1],
    )
    client, server, ch = hello(c, s)
    server.receive_data(ch)
    hrr = server.data_to_send()
    assert ServerHello.decode(body_of(plaintext_messages(hrr), HandshakeType.server_hello)).is_hello_retry_request
    client.receive_data(hrr)
    server.receive_data(client.data_to_send())
    flight = server.data_to_send()
    assert flight  # the server answered the second ClientHello; now the HRR comes again
    hrr_only = b"".join(r.raw for r in split_records(hrr) if r.type == ContentType.HANDSHAKE)
    expect_fatal(client, hrr_only, A.unexpected_message, peer=server)


@pytest.mark.parametrize("content_type", [ContentType.HANDSHAKE, ContentType.ALERT], ids=lambda t: t.name)
def test_zero_length_plaintext_record(content_type: ContentType) -> None:
    """§5.1: "Implementations MUST NOT send zero-length fragments of Handshake
    types"; §5.4: a zero-length Handshake or Alert record "MUST" be answered
    with unexpected_message."""
    c, s, _, _ = make_configs()
    client, server, _ch = hello(c, s)
    expect_fatal(server, plaintext_record(content_type, b""), A.unexpected_message, peer=client)


@pytest.mark.parametrize("content_type", [ContentType.HANDSHAKE, ContentType.ALERT], ids=lambda t: t.name)
def test_zero_length_protected_record(content_type: ContentType) -> None:
    """§5.4: "Implementations MUST NOT send Handshake and Alert records that
    have a zero-length TLSInnerPlaintext.content; if such a message is
    received, the receiving implementation MUST terminate the connection with
    an unexpected_message alert" -- padding does not make it non-empty."""
    c, s, _, slog = make_configs()
    client, server, flight = server_flight(c, s)
    clear = b"".join(r.raw for r in split_records(flight) if not r.protected)
    empty = seal(SUITE, slog.secret("SERVER_HANDSHAKE_TRAFFIC_SECRET"), content_type, b"", padding=16)
    expect_fatal(client, clear + empty, A.unexpected_message, peer=server)


def test_unknown_outer_record_type() -> None:
    """§5: "If a TLS implementation receives an unexpected record type, it MUST
    terminate the connection with an unexpected_message alert"."""
    c, s, _, _ = make_configs()
    client, server, _ch = hello(c, s)
    expect_fatal(server, plaintext_record(24, b"\x01\x00\x01"), A.unexpected_message, peer=client)


@pytest.mark.parametrize("inner_type", [24, 26, 99], ids=["heartbeat", "ack", "99"])
def test_unknown_inner_content_type(inner_type: int) -> None:
    """§5: an unexpected record type -- here the TLSInnerPlaintext.type of an
    authentic protected record -- is answered with unexpected_message."""
    pair, _, slog = connected(server_session_tickets=0)
    record = seal(SUITE, slog.secret("SERVER_TRAFFIC_SECRET_0"), inner_type, b"\x01\x00\x01")
    expect_fatal(pair.client, record, A.unexpected_message, peer=pair.server)


def test_protected_record_without_a_content_type() -> None:
    """§5.4: "If a receiving implementation does not find a non-zero octet in
    the cleartext, it MUST terminate the connection with an unexpected_message
    alert"."""
    pair, _, slog = connected(server_session_tickets=0)
    record = seal(SUITE, slog.secret("SERVER_TRAFFIC_SECRET_0"), 0, b"", padding=20)
    expect_fatal(pair.client, record, A.unexpected_message, peer=pair.server)


# =========================================================================== bad_record_mac


# header bytes 1-2 (legacy_record_version, part of the AAD), the first byte of
# the encrypted record, one in the middle, and the last byte of the tag.
POSITIONS: dict[str, Callable[[int], int]] = {
    "version-hi": lambda n: 1,
    "version-lo": lambda n: 2,
    "first": lambda n: 5,
    "middle": lambda n: 5 + (n - 5) // 2,
    "tag": lambda n: n - 1,
}
# A flipped high version byte (0x03 -> 0x02) is judged from the header before
# any decryption: a record version below 0x0300 is not TLS (Appendix E.5,
# docs/conformance.md) -> protocol_version.  Every other flip fails the AEAD.
POSITION_ALERT = {"version-hi": A.protocol_version}


def _session(
    tamper: tuple[str, int, str] | None, suite: CipherSuite, eku: bool,
) -> tuple[dict[str, int], ProtocolError | None]:
    """Run one scripted session, delivering one record at a time.

    ``tamper`` = (step, index of the protected record within the step,
    position name): that record arrives with one byte flipped, and the
    receiver must fail with bad_record_mac, or protocol_version for the
    version's high byte (checked with expect_fatal).
    Returns how many protected records each step carried, and the error.
    """
    # The server lists the suite too: the CCM suites are on request only.
    kwargs: dict[str, object] = {"client_cipher_suites": [suite], "server_cipher_suites": [suite]}
    if not eku:
        kwargs.update(no_eku())
    c, s, clog, slog = make_configs(**kwargs)
    client, server = Connection(c), Connection(s)
    ends = {"client": (client, clog), "server": (server, slog)}
    counts: dict[str, int] = {}

    def transfer(step: str, sender: str) -> ProtocolError | None:
        src, _ = ends[sender]
        dst, _dst_log = ends["server" if sender == "client" else "client"]
        counts[step] = 0
        for record in split_records(src.data_to_send()):
            if record.protected:
                index = counts[step]
                counts[step] += 1
                if tamper is not None and tamper[:2] == (step, index):
                    byte = POSITIONS[tamper[2]](len(record.raw))
                    src.events()
                    # after close_notify both ways the sender is closed and reads no more
                    witness = None if src.is_closed else src
                    alert = POSITION_ALERT.get(tamper[2], A.bad_record_mac)
                    return expect_fatal(dst, flip(record.raw, byte), alert, peer=witness)
            dst.receive_data(record.raw)
        return None

    steps: list[tuple[str, str, Callable[[], object] | None]] = [
        ("client hello", "client", client.start_handshake),
        ("server flight", "server", None),
        ("client flight", "client", None),
        ("tickets", "server", None),
        ("client data", "client", lambda: client.send(b"ping")),
        ("server data", "server", lambda: server.send(b"pong" * 5000)),  # two records
    ]
    if eku:
        steps += [
            ("eku request", "client", client.extended_key_update),
            ("eku response", "server", None),
            ("eku finish", "client", None),
        ]
    else:
        steps += [
            ("client key update", "client", client.update_keys),
            ("server key update", "server", None),
        ]
    steps += [
        ("client data 2", "client", lambda: client.send(b"after")),
        ("server data 2", "server", lambda: server.send(b"after")),
        ("client close", "client", client.close),
        ("server close", "server", server.close),
    ]
    for step, sender, action in steps:
        if action is not None:
            action()
        error = transfer(step, sender)
        if error is not None:
            return counts, error
    assert client.is_closed and server.is_closed
    return counts, None


PROTECTED_STEPS = {
    False: [
        "server flight", "client flight", "tickets", "client data", "server data",
        "client key update", "server key update", "client data 2", "server data 2",
        "client close", "server close",
    ],
    True: [
        "server flight", "client flight", "client data", "server data",
        "eku request", "eku response", "eku finish", "client data 2", "server data 2",
        "client close", "server close",
    ],
}


@pytest.mark.parametrize("eku", [False, True], ids=["classic", "eku"])
def test_scripted_session_is_clean(eku: bool) -> None:
    """The session the fuzz-lite test tampers with works untouched, and every
    step it names carries protected records (the ClientHello none)."""
    counts, error = _session(None, AES128, eku)
    assert error is None
    assert all(counts[step] >= 1 for step in PROTECTED_STEPS[eku]), counts
    assert counts["server data"] == 2
    assert counts["client hello"] == 0


@pytest.mark.parametrize("position", list(POSITIONS))
@pytest.mark.parametrize("suite", list(CipherSuite), ids=lambda s: s.name)
@pytest.mark.parametrize(
    ("eku", "step"),
    [(False, step) for step in PROTECTED_STEPS[False]]
    + [(True, step) for step in PROTECTED_STEPS[True] if step.startswith("eku")],
    ids=lambda v: v if isinstance(v, str) else ("eku" if v else "classic"),
)
def test_flipped_byte_in_a_protected_record(eku: bool, step: str, suite: CipherSuite, position: str) -> None:
    """§5.2: "If the decryption fails, the receiver MUST terminate the
    connection with a bad_record_mac alert" (also §6.2).  Fuzz-lite: one
    flipped byte in each protected record of a scripted session (handshake
    flights, tickets, data, key updates, close_notify), in the header (part of
    the AAD), the encrypted record and the tag.  The version's high byte is
    judged before decryption (protocol_version, docs/conformance.md)."""
    counts, _ = _session(None, suite, eku)
    assert counts[step] >= 1
    for index in range(counts[step]):
        _, error = _session((step, index, position), suite, eku)
        assert error is not None and error.alert is POSITION_ALERT.get(position, A.bad_record_mac)


# =========================================================================== record_overflow


def test_record_longer_than_2_14_plus_256() -> None:
    """§5.2: "An endpoint that receives a record from its peer with
    TLSCiphertext.length larger than 2^14 + 256 octets MUST terminate the
    connection with a record_overflow alert" -- judged from the header alone.
    (After the ClientHello: an application_data record cannot come first.)"""
    c, s, _, _ = make_configs()
    client, server, ch = hello(c, s)
    server.receive_data(ch)
    header = bytes((ContentType.APPLICATION_DATA, 3, 3)) + (2**14 + 257).to_bytes(2, "big")
    expect_fatal(server, header, A.record_overflow, peer=client, peer_prefix=server.data_to_send())


def test_plaintext_record_longer_than_2_14() -> None:
    """§5.1: TLSPlaintext.length "MUST NOT exceed 2^14 bytes. An endpoint that
    receives a record that exceeds this length MUST terminate the connection
    with a record_overflow alert"."""
    c, s, _, _ = make_configs()
    client, server, ch = hello(c, s)
    ((_, body),) = plaintext_messages(ch)
    big = encode_handshake(HandshakeType.client_hello, body)
    big += bytes(2**14 + 1 - len(big))
    expect_fatal(server, plaintext_record(ContentType.HANDSHAKE, big), A.record_overflow, peer=client)


def test_protected_record_decrypting_to_more_than_2_14_bytes() -> None:
    """§6.2 record_overflow: "a record decrypted to a TLSPlaintext record with
    more than 2^14 bytes"."""
    pair, _, slog = connected(server_session_tickets=0)
    record = seal(SUITE, slog.secret("SERVER_TRAFFIC_SECRET_0"), ContentType.APPLICATION_DATA, bytes(2**14 + 1))
    expect_fatal(pair.client, record, A.record_overflow, peer=pair.server)


def test_protected_record_over_our_record_size_limit() -> None:
    """§5.4 and §6.2 ("... or some other negotiated limit"), RFC 8449 §4: a
    record larger than the record_size_limit we advertised is record_overflow.
    The server ignores the client's limit of 256 (the record is forged)."""
    pair, _, slog = connected(client_record_size_limit=256, server_session_tickets=0)
    record = seal(SUITE, slog.secret("SERVER_TRAFFIC_SECRET_0"), ContentType.APPLICATION_DATA, bytes(300))
    expect_fatal(pair.client, record, A.record_overflow, peer=pair.server)


@pytest.mark.parametrize(("limit", "padding"), [(256, 200), (2**14 + 1, 2**14)], ids=["limit-256", "limit-16385"])
def test_padding_counts_toward_our_record_size_limit(limit: int, padding: int) -> None:
    """§5.4: "the full encoded TLSInnerPlaintext MUST NOT exceed 2^14 + 1
    octets. If the maximum fragment length is reduced -- as for example by the
    record_size_limit extension from RFC 8449 -- then the reduced limit
    applies to the full plaintext, including the content type and padding."
    (RFC 8449 §4: a record larger than the advertised limit -> record_overflow;
    longtls always advertises record_size_limit.)  100 bytes of content, the
    type byte and ``padding`` zeros exceed ``limit``; the ciphertext itself is
    within 2^14 + 256."""
    pair, _, slog = connected(client_record_size_limit=limit, server_session_tickets=0)
    record = seal(
        SUITE, slog.secret("SERVER_TRAFFIC_SECRET_0"), ContentType.APPLICATION_DATA, bytes(100), padding=padding,
    )
    assert 100 + 1 + padding > limit and len(record) - 5 <= 2**14 + 256
    expect_fatal(pair.client, record, A.record_overflow, peer=pair.server)


# =========================================================================== handshake_failure


def test_no_common_cipher_suite() -> None:
    """§4.2.1: "If the server is unable to negotiate a supported set of
    parameters (i.e., there is no overlap between the client and server
    parameters), it MUST abort the handshake with either a handshake_failure
    or insufficient_security fatal alert"."""
    c, s, _, _ = make_configs(
        client_cipher_suites=[AES128], server_cipher_suites=[CipherSuite.TLS_AES_256_GCM_SHA384],
    )
    client, server, ch = hello(c, s)
    expect_fatal(server, ch, A.handshake_failure, peer=client)


def test_no_common_group() -> None:
    """§4.2.1: "If there is no overlap between the received supported_groups
    and the groups supported by the server, then the server MUST abort the
    handshake with a handshake_failure or an insufficient_security alert"."""
    c, s, _, _ = make_configs(
        client_groups=[NamedGroup.x25519], client_key_share_groups=[NamedGroup.x25519],
        server_groups=[NamedGroup.secp256r1, NamedGroup.secp384r1],
    )
    client, server, ch = hello(c, s)
    expect_fatal(server, ch, A.handshake_failure, peer=client)


def test_no_common_signature_scheme() -> None:
    """§4.2.1 (no overlap of parameters -> handshake_failure): the client
    accepts only Ed25519 signatures, the server has an ECDSA P-256 key."""
    c, s, _, _ = make_configs(client_signature_algorithms=[SignatureScheme.ed25519])
    client, server, ch = hello(c, s)
    expect_fatal(server, ch, A.handshake_failure, peer=client)


# =========================================================================== bad_certificate


def test_certificate_that_is_not_der() -> None:
    """§6.2 bad_certificate: "A certificate was corrupt"."""
    c, s, _, slog = make_configs()
    s.certificate_compression = ()  # the edit replaces a plain Certificate (RFC 8879 aside)
    garbage = Certificate(b"", (CertificateEntry(b"\x30\x82\x01\x00 not a certificate"),)).encode()
    client, server, flight = tampered_server_flight(
        c, s, slog, lambda m: replace(m, HandshakeType.certificate, garbage),
    )
    err = expect_fatal(client, flight, A.bad_certificate, peer=server)
    assert isinstance(err, RemoteProtocolError)


def test_server_certificate_for_another_name() -> None:
    """§6.2 bad_certificate (the certificate is not acceptable for the name
    the client asked for: the server's certificate is for localhost)."""
    c, s, _, _ = make_configs()
    c.server_name = "other.example"
    client, server, flight = server_flight(c, s)
    expect_fatal(client, flight, A.bad_certificate, peer=server, error=CertificateError)


# =========================================================================== unsupported_certificate


def _x25519_leaf(ca_key_type: str = "ecdsa-p256") -> tuple[x509.Certificate, object, object]:
    """A client certificate, issued by a trusted CA, whose key (X25519) cannot sign."""
    ca = make_ca(ca_key_type)
    model = make_leaf(ca, "ecdsa-p256", client=True)
    key = x25519.X25519PrivateKey.generate()
    builder = (
        x509.CertificateBuilder().subject_name(model.cert.subject).issuer_name(ca.cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(model.cert.not_valid_before_utc).not_valid_after(model.cert.not_valid_after_utc)
    )
    for ext in model.cert.extensions:
        value = ext.value
        if isinstance(value, x509.SubjectKeyIdentifier):
            value = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        builder = builder.add_extension(value, ext.critical)
    return builder.sign(ca.key, hashes.SHA256()), model.key, ca


def test_client_certificate_key_that_cannot_sign() -> None:
    """§4.5.1.2: the end-entity public key "MUST be compatible with some
    supported signature scheme"; §6.2 unsupported_certificate: "A certificate
    was of an unsupported type".  The client presents an X25519 certificate
    (and signs with an unrelated ECDSA key)."""
    cert, signing_key, ca = _x25519_leaf()
    c, s, _, _ = make_configs(ca=ca, server_client_auth=ClientAuth.REQUIRED)
    c.certificate_chain, c.private_key = [cert], signing_key
    client, server, flight = client_flight(c, s)
    expect_fatal(server, flight, A.unsupported_certificate, peer=client)


def test_server_certificate_without_server_auth_usage() -> None:
    """§6.2 unsupported_certificate: the server's certificate is a client
    certificate (extendedKeyUsage clientAuth only)."""
    ca = make_ca("ecdsa-p256")
    wrong = make_leaf(ca, "ecdsa-p256", client=True)
    c, s, _, _ = make_configs(ca=ca)
    s.certificate_chain, s.private_key = wrong.chain, wrong.key
    client, server, flight = server_flight(c, s)
    expect_fatal(client, flight, A.unsupported_certificate, peer=server, error=CertificateError)


# =========================================================================== certificate_expired


def test_expired_server_certificate() -> None:
    """§6.2 certificate_expired: "A certificate has expired or is not currently valid"."""
    ca = make_ca("ecdsa-p256")
    now = datetime.datetime.now(datetime.UTC)
    leaf = make_leaf(ca, "ecdsa-p256", not_before=now - datetime.timedelta(days=30),
                     not_after=now - datetime.timedelta(days=1))
    c, s, _, _ = make_configs(ca=ca)
    s.certificate_chain, s.private_key = leaf.chain, leaf.key
    client, server, flight = server_flight(c, s)
    expect_fatal(client, flight, A.certificate_expired, peer=server, error=CertificateError)


def test_client_certificate_not_yet_valid() -> None:
    """§6.2 certificate_expired: "... or is not currently valid" (server side)."""
    ca = make_ca("ecdsa-p256")
    now = datetime.datetime.now(datetime.UTC)
    leaf = make_leaf(ca, "ecdsa-p256", client=True, not_before=now + datetime.timedelta(days=1),
                     not_after=now + datetime.timedelta(days=30))
    c, s, _, _ = make_configs(ca=ca, server_client_auth=ClientAuth.REQUIRED)
    c.certificate_chain, c.private_key = leaf.chain, leaf.key
    client, server, flight = client_flight(c, s)
    expect_fatal(server, flight, A.certificate_expired, peer=client, error=CertificateError)


# =========================================================================== unknown_ca


def test_server_certificate_from_an_untrusted_ca() -> None:
    """§6.2 unknown_ca: "the CA certificate could not be located or could not
    be matched with a known trust anchor"."""
    c, s, _, _ = make_configs()
    stranger = make_leaf(make_ca("ecdsa-p256", common_name="stranger CA"), "ecdsa-p256")
    s.certificate_chain, s.private_key = stranger.chain, stranger.key
    client, server, flight = server_flight(c, s)
    expect_fatal(client, flight, A.unknown_ca, peer=server, error=CertificateError)


def test_client_certificate_from_an_untrusted_ca() -> None:
    """§6.2 unknown_ca, for a client certificate the server must verify."""
    c, s, _, _ = make_configs(server_client_auth=ClientAuth.REQUIRED)
    stranger = make_leaf(make_ca("ecdsa-p256", common_name="stranger CA"), "ecdsa-p256", client=True)
    c.certificate_chain, c.private_key = stranger.chain, stranger.key
    client, server, flight = client_flight(c, s)
    expect_fatal(server, flight, A.unknown_ca, peer=client, error=CertificateError)


# =========================================================================== certificate_unknown


def _ca_child(issuer: Credential, name: str, *, path_length: int | None = None,
              permitted: list[x509.GeneralName] | None = None) -> Credential:
    """An intermediate CA with its own name (and optional constraints)."""
    key = generate_key("ecdsa-p256")
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(issuer.cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False)
    )
    if permitted is not None:
        builder = builder.add_extension(x509.NameConstraints(permitted, None), critical=True)
    return Credential("ecdsa-p256", key, builder.sign(issuer.key, hashes.SHA256()), issuer)


@pytest.mark.parametrize("problem", ["path-length", "name-constraints"])
def test_server_chain_violating_a_ca_constraint(problem: str) -> None:
    """§6.2 certificate_unknown: "Some other (unspecified) issue arose in
    processing the certificate, rendering it unacceptable" -- a chain that
    breaks its CA's pathLenConstraint or nameConstraints (RFC 5280 §4.2.1.9,
    §4.2.1.10): properly signed, from a trusted root, yet unacceptable."""
    ca = make_ca("ecdsa-p256")
    if problem == "path-length":
        top = _ca_child(ca, "top intermediate", path_length=0)
        issuer = _ca_child(top, "bottom intermediate")
    else:
        issuer = _ca_child(ca, "constrained intermediate", permitted=[x509.DNSName("example.com")])
    leaf = make_leaf(issuer, "ecdsa-p256")
    c, s, _, _ = make_configs(ca=ca)
    s.certificate_chain, s.private_key = leaf.chain, leaf.key
    client, server, flight = server_flight(c, s)
    expect_fatal(client, flight, A.certificate_unknown, peer=server, error=CertificateError)


# =========================================================================== illegal_parameter


def _share_hook(group: NamedGroup, key_exchange: bytes) -> Callable[[list[Extension]], list[Extension]]:
    return hook_set(ExtensionType.key_share, X.encode_key_share_client([X.KeyShareEntry(group, key_exchange)]))


def _off_curve_p256() -> bytes:
    # (1, 1) is not on P-256: 1 != 1 - 3 + b (mod p)
    return b"\x04" + (1).to_bytes(32, "big") + (1).to_bytes(32, "big")


@pytest.mark.parametrize(
    ("group", "key_exchange"),
    [
        (NamedGroup.x25519, bytes(range(31))),
        (NamedGroup.x25519, bytes(range(33))),
        (NamedGroup.x25519, bytes(32)),  # low-order point: all-zero shared secret (§7.4.2)
        (NamedGroup.secp256r1, _off_curve_p256()),
        (NamedGroup.secp256r1, b"\x02" + bytes(range(32))),  # compressed form is not TLS 1.3's
        (NamedGroup.secp256r1, bytes(64)),
        (NamedGroup.MLKEM768, bytes(1183)),
        (NamedGroup.MLKEM1024, bytes(1569)),
        (NamedGroup.X25519MLKEM768, bytes(1184 + 31)),
        (NamedGroup.SecP256r1MLKEM768, bytes(65 + 1184)),
    ],
    ids=[
        "x25519-31-bytes", "x25519-33-bytes", "x25519-low-order", "p256-off-curve", "p256-compressed",
        "p256-64-bytes", "mlkem768-short", "mlkem1024-long", "x25519mlkem768-short", "p256mlkem768-zero-point",
    ],
)
def test_bad_client_key_share(group: NamedGroup, key_exchange: bytes) -> None:
    """§4.3.8.2 (peers MUST validate each other's public values), §6: "a DHE
    share of p - 1" is the spec's example of illegal_parameter; ML-KEM: the
    encapsulation key length and modulus checks (draft-ietf-tls-mlkem)."""
    c, s, _, _ = make_configs(
        client_groups=[group], client_key_share_groups=[group], client_client_hello_hook=_share_hook(group, key_exchange),
    )
    client, server, ch = hello(c, s)
    expect_fatal(server, ch, A.illegal_parameter, peer=client)


def test_bad_server_key_share() -> None:
    """§4.3.8.2 / §7.4.2: the client validates the server's X25519 value too
    (31 bytes instead of 32) -> illegal_parameter."""
    c, s, _, _ = make_configs(client_key_share_groups=[NamedGroup.x25519], server_groups=[NamedGroup.x25519])
    client, server, flight = server_flight(c, s)
    bad = X.encode_key_share_server(X.KeyShareEntry(NamedGroup.x25519, bytes(range(31))))
    flight = rewrite_plaintext(flight, edit_server_hello(
        lambda sh: with_extensions(sh, [Extension(e.type, bad) if e.type == ExtensionType.key_share else e
                                        for e in sh.extensions])))
    expect_fatal(client, flight, A.illegal_parameter, peer=server)


def test_server_key_share_for_a_group_the_client_did_not_send() -> None:
    """§4.3.8: the server_share "MUST be in the same group as the
    KeyShareEntry value offered by the client that the server has selected"
    -> illegal_parameter (§6: inconsistent with other fields)."""
    c, s, _, _ = make_configs(client_key_share_groups=[NamedGroup.x25519], server_groups=[NamedGroup.x25519])
    client, server, flight = server_flight(c, s)
    other = X.encode_key_share_server(X.KeyShareEntry(NamedGroup.secp256r1, b"\x04" + bytes(64)))
    flight = rewrite_plaintext(flight, edit_server_hello(
        lambda sh: with_extensions(sh, [Extension(e.type, other) if e.type == ExtensionType.key_share else e
                                        for e in sh.extensions])))
    expect_fatal(client, flight, A.illegal_parameter, peer=server)


def test_server_hello_with_a_cipher_suite_not_offered() -> None:
    """§4.2.3: "A client which receives a cipher suite that was not offered
    MUST abort the handshake with an illegal_parameter alert"."""
    c, s, _, _ = make_configs()
    client, server, flight = server_flight(c, s)
    flight = rewrite_plaintext(flight, edit_server_hello(
        lambda sh: with_extensions(sh, list(sh.extensions), cipher_suite=CipherSuite.TLS_AES_256_GCM_SHA384)))
    expect_fatal(client, flight, A.illegal_parameter, peer=server)


def test_server_hello_with_another_legacy_session_id_echo() -> None:
    """§4.2.3: "A client which receives a legacy_session_id_echo field that
    does not match what it sent in the ClientHello MUST abort the handshake
    with an illegal_parameter alert"."""
    c, s, _, _ = make_configs()
    client, server, flight = server_flight(c, s)
    flight = rewrite_plaintext(flight, edit_server_hello(
        lambda sh: with_extensions(sh, list(sh.extensions), legacy_session_id_echo=bytes(32))))
    expect_fatal(client, flight, A.illegal_parameter, peer=server)


def test_server_hello_with_a_compression_method() -> None:
    """§4.2.3: legacy_compression_method other than 0 -> illegal_parameter."""
    c, s, _, _ = make_configs()
    client, server, flight = server_flight(c, s)
    flight = rewrite_plaintext(flight, edit_server_hello(
        lambda sh: with_extensions(sh, list(sh.extensions), legacy_compression_method=1)))
    expect_fatal(client, flight, A.illegal_parameter, peer=server)


def _hrr(ch: ClientHello, exts: list[Extension], suite: int = AES128) -> bytes:
    hrr = ServerHello(HELLO_RETRY_REQUEST_RANDOM, ch.legacy_session_id, suite, (
        Extension(ExtensionType.supported_versions, X.encode_supported_versions_server(0x0304)), *exts,
    ))
    return handshake_record(HandshakeType.server_hello, hrr.encode())


def test_hello_retry_request_for_a_group_already_offered() -> None:
    """§4.3.8: the selected_group of a HelloRetryRequest must not be one the
    client already sent a key share for, else illegal_parameter."""
    c, s, _, _ = make_configs(client_key_share_groups=[NamedGroup.x25519])
    client, server, ch = hello(c, s)
    hrr = _hrr(client_hello_of(ch), [Extension(ExtensionType.key_share, X.encode_key_share_hrr(NamedGroup.x25519))])
    expect_fatal(client, hrr, A.illegal_parameter, peer=server, peer_prefix=ch)


def test_hello_retry_request_for_a_group_not_offered() -> None:
    """§4.3.8: the selected_group must be in the client's supported_groups,
    else illegal_parameter."""
    c, s, _, _ = make_configs(client_groups=[NamedGroup.x25519], client_key_share_groups=[NamedGroup.x25519])
    client, server, ch = hello(c, s)
    hrr = _hrr(client_hello_of(ch), [Extension(ExtensionType.key_share, X.encode_key_share_hrr(NamedGroup.secp384r1))])
    expect_fatal(client, hrr, A.illegal_parameter, peer=server, peer_prefix=ch)


def test_hello_retry_request_that_changes_nothing() -> None:
    """§4.2.4: "Clients MUST abort the handshake with an illegal_parameter
    alert if the HelloRetryRequest would not result in any change in the
    ClientHello"."""
    c, s, _, _ = make_configs()
    client, server, ch = hello(c, s)
    expect_fatal(client, _hrr(client_hello_of(ch), []), A.illegal_parameter, peer=server, peer_prefix=ch)


def test_server_hello_suite_differs_from_hello_retry_request() -> None:
    """§4.2.4: clients "MUST check that the cipher suite supplied in the
    ServerHello is the same as that in the HelloRetryRequest and otherwise
    abort the handshake with an illegal_parameter alert"."""
    c, s, _, _ = make_configs(
        client_cipher_suites=[AES128, CipherSuite.TLS_CHACHA20_POLY1305_SHA256],
        client_groups=[NamedGroup.x25519, NamedGroup.secp256r1], client_key_share_groups=[NamedGroup.x25519],
        server_groups=[NamedGroup.secp256r1],
    )
    client, server, ch = hello(c, s)
    server.receive_data(ch)
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    flight = rewrite_plaintext(server.data_to_send(), edit_server_hello(
        lambda sh: with_extensions(sh, list(sh.extensions), cipher_suite=CipherSuite.TLS_CHACHA20_POLY1305_SHA256)))
    expect_fatal(client, flight, A.illegal_parameter, peer=server)


def test_duplicate_extension_in_client_hello() -> None:
    """§4.3: "There MUST NOT be more than one extension of the same type in a
    given extension block" -- a well-formed but inconsistent message, so
    illegal_parameter (§6)."""
    c, s, _, _ = make_configs()
    c.client_hello_hook = lambda exts: [*exts, next(e for e in exts if e.type == ExtensionType.supported_groups)]
    client, server, ch = hello(c, s)
    expect_fatal(server, ch, A.illegal_parameter, peer=client)


def test_duplicate_extension_in_encrypted_extensions() -> None:
    """§4.3: no two extensions of one type in a block -> illegal_parameter."""
    c, s, _, slog = make_configs()
    twice = Extension(ExtensionType.record_size_limit, X.encode_record_size_limit(2**14 + 1))
    client, server, flight = tampered_server_flight(c, s, slog, edit_ee([twice]))
    expect_fatal(client, flight, A.illegal_parameter, peer=server)


def test_key_update_with_an_unknown_request_value() -> None:
    """§4.7.3 request_update: "If an implementation receives any other value,
    it MUST terminate the connection with an illegal_parameter alert"."""
    pair, clog, _ = connected(**no_eku())
    record = seal(
        SUITE, clog.secret("CLIENT_TRAFFIC_SECRET_0"), ContentType.HANDSHAKE,
        encode_handshake(HandshakeType.key_update, b"\x05"),
    )
    expect_fatal(pair.server, record, A.illegal_parameter, peer=pair.client)


def test_alpn_protocol_the_client_did_not_offer() -> None:
    """§6 / §6.2 illegal_parameter (a field inconsistent with other fields):
    the server selects "h2" from the client's list ["http/1.1"] (RFC 7301 §3.1:
    the server's choice is one of the client's protocols)."""
    c, s, _, slog = make_configs(client_alpn_protocols=["http/1.1"])
    alpn = Extension(ExtensionType.application_layer_protocol_negotiation,
                     X.encode_application_layer_protocol_negotiation([b"h2"]))
    client, server, flight = tampered_server_flight(c, s, slog, edit_ee([alpn]))
    expect_fatal(client, flight, A.illegal_parameter, peer=server)


def test_forbidden_extension_in_encrypted_extensions() -> None:
    """§4.4.1: "The client MUST check EncryptedExtensions for the presence of
    any forbidden extensions and if any are found MUST abort the handshake
    with an illegal_parameter alert" (key_share was offered, but belongs in
    ServerHello)."""
    c, s, _, slog = make_configs()
    share = Extension(ExtensionType.key_share, X.encode_key_share_server(X.KeyShareEntry(NamedGroup.x25519, bytes(32))))
    client, server, flight = tampered_server_flight(c, s, slog, edit_ee([share]))
    expect_fatal(client, flight, A.illegal_parameter, peer=server)


def _rebuilt_client_hello(ch_bytes: bytes, **changes: object) -> bytes:
    ch = client_hello_of(ch_bytes)
    fields = {
        "random": ch.random, "legacy_session_id": ch.legacy_session_id, "cipher_suites": ch.cipher_suites,
        "extensions": ch.extensions, "legacy_compression_methods": ch.legacy_compression_methods,
        "legacy_version": ch.legacy_version,
    }
    fields.update(changes)
    return handshake_record(HandshakeType.client_hello, ClientHello(**fields).encode(), 0x0301)  # type: ignore[arg-type]


def test_client_hello_with_a_compression_method() -> None:
    """§4.2.2 legacy_compression_methods: "If a TLS 1.3 ClientHello is received
    with any other value in this field, the server MUST abort the handshake
    with an illegal_parameter alert"."""
    c, s, _, _ = make_configs()
    client, server, ch = hello(c, s)
    expect_fatal(server, _rebuilt_client_hello(ch, legacy_compression_methods=b"\x01\x00"), A.illegal_parameter, peer=client)


def test_pre_shared_key_not_the_last_extension() -> None:
    """§4.3.11: "Servers MUST check that it is the last extension and
    otherwise fail the handshake with an illegal_parameter alert"."""
    c, s, _, _ = make_configs()
    client, server, ch = hello(c, s)
    psk = Extension(ExtensionType.pre_shared_key, X.encode_pre_shared_key_client(
        X.OfferedPsks((X.PskIdentity(b"ticket", 0),), (bytes(32),))))
    exts = client_hello_of(ch).extensions
    expect_fatal(server, _rebuilt_client_hello(ch, extensions=(psk, *exts)), A.illegal_parameter, peer=client)


def test_second_client_hello_without_the_requested_key_share() -> None:
    """§4.3.8: after a HelloRetryRequest the client "MUST replace the original
    key_share extension with one containing only a new KeyShareEntry for the
    group indicated in the selected_group field"; servers "MAY check for
    violations of these rules and abort the handshake with an
    illegal_parameter alert"."""
    calls: list[int] = []

    def empty_second_share(exts: list[Extension]) -> list[Extension]:
        calls.append(1)
        if len(calls) == 1:
            return exts
        return hook_set(ExtensionType.key_share, X.encode_key_share_client([]))(exts)

    c, s, _, _ = make_configs(
        client_groups=[NamedGroup.x25519, NamedGroup.secp256r1], client_key_share_groups=[NamedGroup.x25519],
        server_groups=[NamedGroup.secp256r1],
    )
    c.client_hello_hook = empty_second_share
    client, server, ch = hello(c, s)
    server.receive_data(ch)
    client.receive_data(server.data_to_send())
    expect_fatal(server, client.data_to_send(), A.illegal_parameter, peer=client)


def test_new_session_ticket_lifetime_over_seven_days() -> None:
    """§4.7.1: "Servers MUST NOT use any value greater than 604800 seconds (7
    days)" -- a well-formed but invalid field -> illegal_parameter (§6)."""
    pair, _, slog = connected(**no_eku(server_session_tickets=0))
    nst = NewSessionTicket(604801, 0, b"\x00", b"ticket").encode()
    record = seal(SUITE, slog.secret("SERVER_TRAFFIC_SECRET_0"), ContentType.HANDSHAKE,
                  encode_handshake(HandshakeType.new_session_ticket, nst))
    expect_fatal(pair.client, record, A.illegal_parameter, peer=pair.server)


@pytest.mark.parametrize("version", [0x0303, 0x0305], ids=["tls1.2", "not-offered-0x0305"])
@pytest.mark.parametrize("message", ["ServerHello", "HelloRetryRequest"])
def test_selected_version_other_than_tls_1_3(message: str, version: int) -> None:
    """§4.3.1: "If the supported_versions extension in the ServerHello contains
    a version not offered by the client or contains a version prior to TLS
    1.3, the client MUST abort the handshake with an illegal_parameter alert"
    (§4.2.4: a HelloRetryRequest is checked the same way)."""
    c, s, _, _ = make_configs()
    selected = X.encode_supported_versions_server(version)
    unseen = b""  # what the server has not read yet: its first record must be the ClientHello
    if message == "ServerHello":
        client, server, flight = server_flight(c, s)
        data = rewrite_plaintext(flight, edit_server_hello(
            lambda sh: with_extensions(sh, [Extension(e.type, selected) if e.type == ExtensionType.supported_versions
                                            else e for e in sh.extensions])))
    else:
        client, server, ch = hello(c, s)
        hrr = ServerHello(HELLO_RETRY_REQUEST_RANDOM, client_hello_of(ch).legacy_session_id, AES128, (
            Extension(ExtensionType.supported_versions, selected),
            Extension(ExtensionType.key_share, X.encode_key_share_hrr(NamedGroup.secp256r1)),
        ))
        data = handshake_record(HandshakeType.server_hello, hrr.encode())
        unseen = ch
    expect_fatal(client, data, A.illegal_parameter, peer=server, peer_prefix=unseen)


@pytest.mark.parametrize("problem", ["two-shares-one-group", "share-not-in-supported_groups"])
def test_inconsistent_client_key_shares(problem: str) -> None:
    """§4.3.8: "Clients MUST NOT offer multiple KeyShareEntry values for the
    same group.  Clients MUST NOT offer any KeyShareEntry values for groups
    not listed in the client's supported_groups extension.  Servers MAY check
    for violations of these rules and abort the handshake with an
    illegal_parameter alert if one is violated"."""
    c, s, _, _ = make_configs(client_groups=[NamedGroup.x25519, NamedGroup.secp256r1],
                              client_key_share_groups=[NamedGroup.x25519])
    share = bytes(range(1, 33))
    if problem == "two-shares-one-group":
        entries = [X.KeyShareEntry(NamedGroup.x25519, share), X.KeyShareEntry(NamedGroup.x25519, share)]
    else:
        entries = [X.KeyShareEntry(NamedGroup.x25519, share), X.KeyShareEntry(NamedGroup.secp384r1, b"\x04" + bytes(96))]
    c.client_hello_hook = hook_set(ExtensionType.key_share, X.encode_key_share_client(entries))
    client, server, ch = hello(c, s)
    expect_fatal(server, ch, A.illegal_parameter, peer=client)


def test_server_selecting_a_psk_identity_out_of_range() -> None:
    """§4.3.11: "Clients MUST verify that the server's selected_identity is
    within the range supplied by the client ... If these values are not
    consistent, the client MUST abort the handshake with an illegal_parameter
    alert"."""
    c, s, _, _ = make_configs(**no_eku())
    tickets = [e.ticket for e in connect(c, s).client_events if isinstance(e, SessionTicketReceived)]
    c.session_ticket = tickets[0]
    client, server, flight = server_flight(c, s)
    out_of_range = X.encode_pre_shared_key_server(1)
    flight = rewrite_plaintext(flight, edit_server_hello(
        lambda sh: with_extensions(sh, [Extension(e.type, out_of_range) if e.type == ExtensionType.pre_shared_key
                                        else e for e in sh.extensions])))
    expect_fatal(client, flight, A.illegal_parameter, peer=server)


# =========================================================================== decode_error


def test_truncated_client_hello() -> None:
    """§6: a message that cannot be parsed ("a length extending beyond the
    message boundary") -> decode_error.  The handshake header is consistent;
    the ClientHello body lost its last bytes."""
    c, s, _, _ = make_configs()
    client, server, ch = hello(c, s)
    ((_, body),) = plaintext_messages(ch)
    err = expect_fatal(server, handshake_record(HandshakeType.client_hello, body[:-3], 0x0301), A.decode_error, peer=client)
    assert isinstance(err, DecodeError)


def test_extension_with_trailing_data() -> None:
    """§4.3: "receivers MUST abort the handshake with a decode_error alert if
    there is data left over after parsing the structure"."""
    c, s, _, _ = make_configs()
    c.client_hello_hook = lambda exts: [
        Extension(e.type, e.data + b"\x00") if e.type == ExtensionType.supported_versions else e for e in exts
    ]
    client, server, ch = hello(c, s)
    expect_fatal(server, ch, A.decode_error, peer=client)


@pytest.mark.parametrize("payload", [b"\x02", b"\x02\x28\x00"], ids=["1-byte", "3-bytes"])
def test_alert_record_of_the_wrong_length(payload: bytes) -> None:
    """§5.1: "a record with an Alert type MUST contain exactly one message";
    an Alert is two bytes (§6), so anything else does not parse -> decode_error."""
    c, s, _, _ = make_configs()
    client, server, ch = hello(c, s)
    server.receive_data(ch)
    server.data_to_send()
    expect_fatal(client, plaintext_record(ContentType.ALERT, payload), A.decode_error, peer=server)


def test_empty_server_certificate() -> None:
    """§4.5.1.3: "If the server supplies an empty Certificate message, the
    client MUST abort the handshake with a decode_error alert"."""
    c, s, _, slog = make_configs()
    s.certificate_compression = ()  # the edit replaces a plain Certificate (RFC 8879 aside)
    client, server, flight = tampered_server_flight(
        c, s, slog, lambda m: replace(m, HandshakeType.certificate, Certificate(b"", ()).encode()),
    )
    expect_fatal(client, flight, A.decode_error, peer=server)


@pytest.mark.parametrize("length", [0, 31, 33, 48])
def test_finished_of_the_wrong_length(length: int) -> None:
    """§4.5.3: verify_data is Hash.length bytes; another length does not fit
    the formal syntax -> decode_error (§6, §6.2)."""
    c, s, _, slog = make_configs()
    client, server, flight = tampered_server_flight(
        c, s, slog, lambda m: replace(m, HandshakeType.finished, bytes(length)),
    )
    expect_fatal(client, flight, A.decode_error, peer=server)


# =========================================================================== decrypt_error


def _flip_last(body: bytes) -> bytes:
    return body[:-1] + bytes((body[-1] ^ 0x01,))


def test_bad_server_finished() -> None:
    """§4.5.3: "Recipients of Finished messages MUST verify that the contents
    are correct and if incorrect MUST terminate the connection with a
    decrypt_error alert"."""
    c, s, _, slog = make_configs()
    client, server, flight = tampered_server_flight(
        c, s, slog, lambda m: replace(m, HandshakeType.finished, _flip_last(body_of(m, HandshakeType.finished))),
    )
    expect_fatal(client, flight, A.decrypt_error, peer=server)


def test_bad_client_finished() -> None:
    """§4.5.3 (the server checks the client's Finished) -> decrypt_error."""
    c, s, clog, _ = make_configs()
    client, server, flight = client_flight(c, s)
    flight = rewrite_flight(
        flight, SUITE, clog.secret("CLIENT_HANDSHAKE_TRAFFIC_SECRET"),
        lambda m: replace(m, HandshakeType.finished, _flip_last(body_of(m, HandshakeType.finished))),
    )
    expect_fatal(server, flight, A.decrypt_error, peer=client)


@pytest.mark.parametrize("key_type", ["ecdsa-p256", "ed25519", "rsa-2048", "mldsa44"])
def test_bad_server_certificate_verify(key_type: str) -> None:
    """§4.5.2: "If the verification fails, the receiver MUST terminate the
    handshake with a decrypt_error alert"."""
    c, s, _, slog = make_configs(key_type=key_type, ca=make_ca("ecdsa-p256"))

    def corrupt(messages: list[Message]) -> list[Message]:
        cv = CertificateVerify.decode(body_of(messages, HandshakeType.certificate_verify))
        bad = CertificateVerify(cv.algorithm, _flip_last(cv.signature))
        return replace(messages, HandshakeType.certificate_verify, bad.encode())

    client, server, flight = tampered_server_flight(c, s, slog, corrupt)
    expect_fatal(client, flight, A.decrypt_error, peer=server)


def test_bad_client_certificate_verify() -> None:
    """§4.5.2 (the server checks the client's signature) -> decrypt_error."""
    ca = make_ca("ecdsa-p256")
    leaf = make_leaf(ca, "ed25519", client=True)
    c, s, clog, _ = make_configs(ca=ca, server_client_auth=ClientAuth.REQUIRED)
    c.certificate_chain, c.private_key = leaf.chain, leaf.key

    def corrupt(messages: list[Message]) -> list[Message]:
        cv = CertificateVerify.decode(body_of(messages, HandshakeType.certificate_verify))
        return replace(messages, HandshakeType.certificate_verify,
                       CertificateVerify(cv.algorithm, _flip_last(cv.signature)).encode())

    client, server, flight = client_flight(c, s)
    flight = rewrite_flight(flight, SUITE, clog.secret("CLIENT_HANDSHAKE_TRAFFIC_SECRET"), corrupt)
    expect_fatal(server, flight, A.decrypt_error, peer=client)


def test_bad_psk_binder() -> None:
    """§4.3.11 / §6.2 decrypt_error: a handshake cryptographic operation
    failed, "including being unable to ... validate ... a PSK binder".  The
    binders are the last bytes of the ClientHello (§4.3.11.2)."""
    c, s, _, _ = make_configs(**no_eku())
    first = connect(c, s)
    tickets = [e.ticket for e in first.client_events if isinstance(e, SessionTicketReceived)]
    assert tickets
    c.session_ticket = tickets[0]
    client, server, ch = hello(c, s)
    assert ExtensionType.pre_shared_key in {e.type for e in client_hello_of(ch).extensions}
    expect_fatal(server, flip(ch, len(ch) - 1), A.decrypt_error, peer=client)


# =========================================================================== protocol_version


def test_client_hello_offering_only_tls_1_2() -> None:
    """Appendix E.2: "If the supported_versions extension is absent and the
    server only supports versions greater than ClientHello.legacy_version,
    the server MUST abort the handshake with a protocol_version alert"."""
    c, s, _, _ = make_configs()
    c.client_hello_hook = hook_drop(ExtensionType.supported_versions)
    client, server, ch = hello(c, s)
    expect_fatal(server, ch, A.protocol_version, peer=client)


def test_client_hello_without_extensions() -> None:
    """Appendix E.2 (a TLS 1.2-or-older ClientHello with no extensions block at
    all) -> protocol_version."""
    c, s, _, _ = make_configs()
    client, server, ch = hello(c, s)
    expect_fatal(server, _rebuilt_client_hello(ch, extensions=()), A.protocol_version, peer=client)


def test_client_hello_with_supported_versions_lacking_tls_1_3() -> None:
    """§4.3.1: servers select only a version in supported_versions; none is
    acceptable -> protocol_version (Appendix E.1/E.2, §6.2)."""
    c, s, _, _ = make_configs()
    c.client_hello_hook = hook_set(ExtensionType.supported_versions, X.encode_supported_versions_client([0x0303, 0x0302]))
    client, server, ch = hello(c, s)
    expect_fatal(server, ch, A.protocol_version, peer=client)


def test_client_hello_legacy_version_not_0x0303() -> None:
    """§4.2.2: "A server which receives a legacy_version value not equal to
    0x0303 MUST abort the handshake with a protocol_version alert"."""
    c, s, _, _ = make_configs()
    client, server, ch = hello(c, s)
    expect_fatal(server, _rebuilt_client_hello(ch, legacy_version=0x0301), A.protocol_version, peer=client)


def test_server_hello_without_supported_versions() -> None:
    """Appendix E.1: a TLS 1.2 ServerHello (no supported_versions) -- "If the
    version chosen by the server is not supported by the client ... the client
    MUST abort the handshake with a protocol_version alert"."""
    c, s, _, _ = make_configs()
    client, server, flight = server_flight(c, s)
    flight = rewrite_plaintext(flight, edit_server_hello(
        lambda sh: with_extensions(sh, [e for e in sh.extensions if e.type != ExtensionType.supported_versions])))
    expect_fatal(client, flight, A.protocol_version, peer=server)


def test_server_hello_legacy_version_not_0x0303() -> None:
    """§4.2.3: "A client which receives a TLS 1.3 ServerHello with a
    legacy_version value not equal to 0x0303 MUST abort the handshake with a
    protocol_version alert"."""
    c, s, _, _ = make_configs()
    client, server, flight = server_flight(c, s)
    flight = rewrite_plaintext(flight, edit_server_hello(
        lambda sh: with_extensions(sh, list(sh.extensions), legacy_version=0x0302)))
    expect_fatal(client, flight, A.protocol_version, peer=server)


# =========================================================================== missing_extension


@pytest.mark.parametrize(
    "dropped",
    [
        (ExtensionType.signature_algorithms,),
        (ExtensionType.key_share,),
        (ExtensionType.supported_groups,),
        (ExtensionType.supported_groups, ExtensionType.key_share),
    ],
    ids=["signature_algorithms", "key_share", "supported_groups", "both-groups-and-key_share"],
)
def test_client_hello_without_a_mandatory_extension(dropped: tuple[ExtensionType, ...]) -> None:
    """§9.2: without pre_shared_key a ClientHello MUST contain both
    signature_algorithms and supported_groups, and supported_groups and
    key_share come together; "Servers receiving a ClientHello which does not
    conform to these requirements MUST abort the handshake with a
    missing_extension alert" (also §4.3.3)."""
    c, s, _, _ = make_configs()
    c.client_hello_hook = hook_drop(*dropped)
    client, server, ch = hello(c, s)
    expect_fatal(server, ch, A.missing_extension, peer=client)


def test_pre_shared_key_without_psk_key_exchange_modes() -> None:
    """§4.3.9: "To use PSKs, clients MUST also send a psk_key_exchange_modes
    extension"; §6.2 missing_extension."""
    c, s, _, _ = make_configs(**no_eku())
    tickets = [e.ticket for e in connect(c, s).client_events if isinstance(e, SessionTicketReceived)]
    c.session_ticket = tickets[0]
    # longtls itself never offers a PSK without the modes (§4.2.9): strip them
    # after the fact, the pre_shared_key (added after the hook) stays.
    c.client_hello_hook = lambda exts: [e for e in exts if e.type != ExtensionType.psk_key_exchange_modes]
    client, server, ch = hello(c, s)
    assert ExtensionType.psk_key_exchange_modes not in {e.type for e in client_hello_of(ch).extensions}
    assert ExtensionType.pre_shared_key in {e.type for e in client_hello_of(ch).extensions}
    expect_fatal(server, ch, A.missing_extension, peer=client)


def test_server_hello_without_key_share() -> None:
    """§9.2: key_share is REQUIRED for (EC)DHE; a ServerHello of a certificate
    (non-PSK) handshake without it lacks a mandatory extension ->
    missing_extension (§6.2)."""
    c, s, _, _ = make_configs()
    client, server, flight = server_flight(c, s)
    flight = rewrite_plaintext(flight, edit_server_hello(
        lambda sh: with_extensions(sh, [e for e in sh.extensions if e.type != ExtensionType.key_share])))
    expect_fatal(client, flight, A.missing_extension, peer=server)


def test_certificate_request_without_signature_algorithms() -> None:
    """§4.4.2: "The signature_algorithms extension MUST be specified" in a
    CertificateRequest; §6.2 missing_extension."""
    c, s, _, slog = make_configs(server_client_auth=ClientAuth.OPTIONAL)
    client, server, flight = tampered_server_flight(
        c, s, slog, lambda m: replace(m, HandshakeType.certificate_request, CertificateRequest(b"", ()).encode()),
    )
    expect_fatal(client, flight, A.missing_extension, peer=server)


# =========================================================================== unsupported_extension


@pytest.mark.parametrize(
    "extension",
    [Extension(ExtensionType.early_data, b""), Extension(0x7A7A, b"surprise")],
    ids=["early_data", "unknown-0x7a7a"],
)
def test_encrypted_extensions_with_an_extension_not_offered(extension: Extension) -> None:
    """§4.3: extension responses (EncryptedExtensions) for extensions the
    client did not send -> "an endpoint MUST abort the handshake with an
    unsupported_extension alert"."""
    c, s, _, slog = make_configs()
    client, server, flight = tampered_server_flight(c, s, slog, edit_ee([extension]))
    expect_fatal(client, flight, A.unsupported_extension, peer=server)


def test_server_hello_with_an_extension_not_offered() -> None:
    """§4.3 (ServerHello responses too): a cookie was never offered in a first
    ClientHello -> unsupported_extension."""
    c, s, _, _ = make_configs()
    client, server, flight = server_flight(c, s)
    cookie = Extension(ExtensionType.cookie, X.encode_cookie(b"crumbs"))
    flight = rewrite_plaintext(flight, edit_server_hello(
        lambda sh: with_extensions(sh, [*sh.extensions, cookie])))
    expect_fatal(client, flight, A.unsupported_extension, peer=server)


def test_certificate_entry_with_an_extension_not_requested() -> None:
    """§4.3: Certificate extensions are responses too; status_request was not
    offered -> unsupported_extension."""
    c, s, _, slog = make_configs()
    s.certificate_compression = ()  # the edit replaces a plain Certificate (RFC 8879 aside)

    def add_extension(messages: list[Message]) -> list[Message]:
        cert = Certificate.decode(body_of(messages, HandshakeType.certificate))
        leaf = CertificateEntry(cert.certificate_list[0].cert_data, (Extension(ExtensionType.status_request, b"\x01"),))
        new = Certificate(b"", (leaf, *cert.certificate_list[1:]))
        return replace(messages, HandshakeType.certificate, new.encode())

    client, server, flight = tampered_server_flight(c, s, slog, add_extension)
    expect_fatal(client, flight, A.unsupported_extension, peer=server)


# =========================================================================== certificate_required


def test_required_client_certificate_missing() -> None:
    """§4.5.1.3: with no client certificate the server MAY "abort the
    handshake with a certificate_required alert"; §6.2 certificate_required."""
    c, s, _, _ = make_configs(server_client_auth=ClientAuth.REQUIRED)
    client, server, flight = client_flight(c, s)
    expect_fatal(server, flight, A.certificate_required, peer=client)


# =========================================================================== no_application_protocol


def test_no_common_application_protocol() -> None:
    """§6.2 no_application_protocol: "Sent by servers when a client
    application_layer_protocol_negotiation extension advertises only protocols
    that the server does not support" (RFC 7301 §3.2)."""
    c, s, _, _ = make_configs(client_alpn_protocols=["http/1.1"], server_alpn_protocols=["h2"])
    client, server, ch = hello(c, s)
    expect_fatal(server, ch, A.no_application_protocol, peer=client)


# =========================================================================== internal_error


def _broken_keylog(line: str) -> None:
    raise OSError("disk full")


@pytest.mark.parametrize("victim", ["client", "server"])
def test_failing_keylog_callback_is_an_internal_error(victim: str) -> None:
    """§6.2 internal_error: "An internal error unrelated to the peer or the
    correctness of the protocol ... makes it impossible to continue".  A key
    log callback that raises must not escape as a raw OSError: longtls sends
    internal_error and raises a longtls ProtocolError -- not a
    RemoteProtocolError, since the peer did nothing wrong."""
    c, s, _, _ = make_configs()
    if victim == "client":
        c.keylog = _broken_keylog
        client, server, flight = server_flight(c, s)
        err = expect_fatal(client, flight, A.internal_error, peer=server, error=ProtocolError)
    else:
        s.keylog = _broken_keylog
        client, server, ch = hello(c, s)
        err = expect_fatal(server, ch, A.internal_error, peer=client, error=ProtocolError)
    assert not isinstance(err, RemoteProtocolError)
    assert isinstance(err.__cause__, OSError)


# =========================================================================== alerts longtls must not send


def test_client_without_a_suitable_certificate_sends_an_empty_certificate() -> None:
    """§4.5.1: "If the server requests certificate-based client authentication
    but no suitable certificate is available, the client MUST send a
    Certificate message containing no certificates" -- not an alert.  The
    server's CertificateRequest allows only ECDSA P-256; the client's key is
    Ed25519, so it declines and the (optional) authentication goes without."""
    ca = make_ca("ecdsa-p256")
    leaf = make_leaf(ca, "ed25519", client=True)
    c, s, _, _ = make_configs(
        ca=ca, server_client_auth=ClientAuth.OPTIONAL,
        server_signature_algorithms=[SignatureScheme.ecdsa_secp256r1_sha256],
    )
    c.certificate_chain, c.private_key = leaf.chain, leaf.key
    pair = connect(c, s)
    (done,) = [e for e in pair.server_events if isinstance(e, HandshakeComplete)]
    assert not done.client_authenticated


def test_data_after_close_notify_is_ignored() -> None:
    """§6.1 close_notify: "Any data received after a closure alert has been
    received MUST be ignored" -- ignored, not answered with an alert.  The
    client half-closes, then a further (authentic) application data record
    arrives."""
    pair, clog, _ = connected()
    pair.client.close()
    pair.server.receive_data(pair.client.data_to_send())
    pair.server.events()
    late = seal(SUITE, clog.secret("CLIENT_TRAFFIC_SECRET_0"), ContentType.APPLICATION_DATA, b"late",
                sequence_number=1)
    pair.server.receive_data(late)
    assert not [e for e in pair.server.events() if isinstance(e, ApplicationData)]
    assert not pair.server.is_closed
    assert pair.server.data_to_send() == b""


# =========================================================================== extended_key_update_required


@pytest.mark.parametrize("decline", ["rejected", "retry"])
def test_extended_key_update_declined_when_required(decline: str) -> None:
    """EKU draft-05 §4 (the rejection reasons): after "retry" or "rejected",
    an initiator that "cannot proceed without immediate Extended Key Update
    ... MUST terminate the connection with TLS alert
    extended_key_update_required" (longtls: ``eku_required=True``).  The
    server rejects (no peer updates allowed) or asks to retry (rate limit)."""
    server_limits: dict[str, object] = (
        {"server_eku_max_peer_updates": 0} if decline == "rejected" else {"server_eku_min_interval": 3600.0}
    )
    pair, _, _ = connected(
        client_eku_profile="draft-05", server_eku_profile="draft-05", client_eku_required=True, **server_limits,
    )
    if decline == "retry":  # the handshake itself does not count: spend the interval on a first update
        pair.client.extended_key_update()
        pair.pump()
    pair.client.extended_key_update()
    pair.server.receive_data(pair.client.data_to_send())
    expect_fatal(pair.client, pair.server.data_to_send(), A.extended_key_update_required, peer=pair.server)
