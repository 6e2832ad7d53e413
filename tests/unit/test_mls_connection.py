"""MLSConnection in memory: the MLS-TLS channel (docs/mls-tls.md) as a sans-I/O connection."""

from __future__ import annotations

import hashlib
import random
from dataclasses import replace

import pytest

from helpers.mls_link import pump
from longtls.certs import make_ca, make_leaf
from longtls.config import ClientAuth, Configuration, pad_to_block
from longtls.connection import Connection
from longtls.constants import AlertDescription, CipherSuite, ContentType, NamedGroup
from longtls.crypto.certificates import TrustStore
from longtls.errors import (
    HandshakeTimeoutError,
    KeyUpdateTimeoutError,
    LocalProtocolError,
    ProtocolError,
)
from longtls.events import (
    ApplicationData,
    ConnectionClosed,
    HandshakeComplete,
    KeyUpdateCompleted,
    Side,
)
from longtls.mls.crypto import suite as mls_suite
from longtls.mls.messages import BasicCredential
from longtls.mls_connection import MLSConnection, parse_mls_suite
from longtls.record.tls import plaintext_record
from longtls.wire.mls_tls import MLSTLSConnectionUpdate, MLSTLSEpochKeyUpdate, encode_mls_tls

XWING = 0xF0A1


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t




def pair(client: Configuration | None = None, server: Configuration | None = None) -> tuple[MLSConnection, MLSConnection]:
    c = MLSConnection(client or Configuration(is_client=True, verify_peer=False))
    s = MLSConnection(server or Configuration(is_client=False))
    c.start_handshake()
    pump(c, s)
    return c, s


def events_of(conn: MLSConnection, kind: type) -> list:  # type: ignore[type-arg]
    return [e for e in conn.events() if isinstance(e, kind)]


def closed_with(conn: MLSConnection) -> ConnectionClosed:
    closed = [e for e in conn.events() if isinstance(e, ConnectionClosed)]
    assert len(closed) == 1 and conn.is_closed
    return closed[0]


@pytest.mark.parametrize(("number", "record_suite", "kem"), [
    (1, CipherSuite.TLS_AES_128_GCM_SHA256, NamedGroup.x25519),
    (3, CipherSuite.TLS_CHACHA20_POLY1305_SHA256, NamedGroup.x25519),
    (XWING, CipherSuite.TLS_AES_128_GCM_SHA256, NamedGroup.X25519MLKEM768),
])
def test_handshake_data_and_exporter(number: int, record_suite: CipherSuite, kem: NamedGroup) -> None:
    c, s = pair(Configuration(is_client=True, verify_peer=False, mls_cipher_suites=(number,)),
                Configuration(is_client=False, mls_cipher_suites=(1, 3, XWING)))
    for conn in (c, s):
        (done,) = events_of(conn, HandshakeComplete)
        assert (done.mode, done.mls_cipher_suite, done.epoch) == ("mls", number, 1)
        assert done.cipher_suite is record_suite and done.group is kem
        assert conn.key_generation == 1
    c.send(b"ping" * 5000)
    s.send(b"pong")
    pump(c, s)
    assert b"".join(e.data for e in events_of(s, ApplicationData)) == b"ping" * 5000
    assert [e.data for e in events_of(c, ApplicationData)] == [b"pong"]
    # MLS-Exporter of the shared epoch, the same on both sides, and what the group derives.
    value = c.export_keying_material("EXPORTER-test", b"ctx", 32)
    assert value == s.export_keying_material(b"EXPORTER-test", b"ctx", 32)
    assert s.group is not None and value == s.group.group.export(b"EXPORTER-test", b"ctx", 32)


def test_first_bytes_are_a_tls_shaped_plaintext_handshake_record() -> None:
    c = MLSConnection(Configuration(is_client=True, verify_peer=False))
    c.start_handshake()
    wire = c.data_to_send()
    # docs/mls-tls.md §2, §6: type 22, legacy_record_version 0x0301, then handshake type mls_tls (242).
    assert wire[:3] == bytes((22, 3, 1)) and wire[5] == 242 and wire[9] == 1  # MLSTLSMessageType client_hello


def run_updates(c: MLSConnection, s: MLSConnection, rounds: int, seed: int) -> tuple[int, int]:
    """``rounds`` rounds of updates by either side or both (crossed), with data both ways, byte-exact."""
    rng = random.Random(seed)
    sent = {id(c): bytearray(), id(s): bytearray()}
    got = {id(c): bytearray(), id(s): bytearray()}
    crossed = by_client = 0
    for i in range(rounds):
        choice = rng.randrange(3)
        starters = [c] if choice == 0 else [s] if choice == 1 else [c, s]
        crossed += choice == 2
        by_client += choice != 1
        for conn in starters:
            conn.update_keys()
        for conn in (c, s):
            chunk = rng.randbytes(rng.randrange(1, 3000))
            conn.send(chunk)
            sent[id(conn)] += chunk
        pump(c, s)
        for conn, _peer in ((c, s), (s, c)):
            for event in conn.events():
                if isinstance(event, ApplicationData):
                    got[id(conn)] += event.data
                elif isinstance(event, KeyUpdateCompleted):
                    assert event.kind == "mls" and event.epoch == event.generation
                    if choice != 2:  # a lone update: its starter is the initiator of the event
                        assert event.initiator is (Side.client if starters[0] is c else Side.server)
                    else:  # crossed: the initiator's update wins (profile §5)
                        assert event.initiator is Side.client
        assert c.epoch == s.epoch == 2 + i
        assert not c.update_in_progress and not s.update_in_progress
    assert got[id(s)] == sent[id(c)] and got[id(c)] == sent[id(s)]
    return crossed, by_client


def test_updates_by_both_sides_and_crossed() -> None:
    c, s = pair()
    c.events(), s.events()
    crossed, _ = run_updates(c, s, 120, seed=13)
    assert crossed > 20
    assert c.export_keying_material("x", b"", 16) == s.export_keying_material("x", b"", 16)


def test_the_committer_holds_data_and_close_until_the_epoch_key_update() -> None:
    c, s = pair()
    c.events(), s.events()
    c.update_keys()
    update = c.data_to_send()
    with pytest.raises(LocalProtocolError):
        c.update_keys()  # profile §5: one at a time
    c.send(b"held")
    c.close()
    assert c.data_to_send() == b""  # docs §7: nothing between the ConnectionUpdate and its EpochKeyUpdate
    s.receive_data(update)
    c.receive_data(s.data_to_send())  # the EpochKeyUpdate: the held data and close_notify go out now
    s.receive_data(c.data_to_send())
    assert [e.data for e in s.events() if isinstance(e, ApplicationData)] == [b"held"]
    assert s.close_received and c.epoch == s.epoch == 2


def test_key_log_lines_are_the_exporter_values_of_every_epoch() -> None:
    lines: list[str] = []
    c, s = pair(Configuration(is_client=True, verify_peer=False, keylog=lines.append), Configuration(is_client=False))
    expected: set[str] = set()

    def derive_on_the_responder() -> None:
        # The responder's own group, at the same epoch: MLS-Exporter("MLS-TLS
        # c/s ap traffic", "", 32) (draft-kohbrok-mls-tls-01 §"Deriving keys").
        assert s.group is not None
        group = s.group.group
        random_hex = hashlib.sha256(group.group_id).hexdigest()
        for label, name in ((b"MLS-TLS c ap traffic", "CLIENT"), (b"MLS-TLS s ap traffic", "SERVER")):
            expected.add(f"{name}_TRAFFIC_SECRET_{group.epoch} {random_hex} {group.export(label, b'', 32).hex()}")

    derive_on_the_responder()
    for starter in (c, s, c):
        starter.update_keys()
        pump(c, s)
        derive_on_the_responder()
    assert c.epoch == 4 and len(expected) == 8
    assert set(lines) == expected and len(lines) == 8


def test_key_log_of_the_first_epoch_matches_the_peers_exporter() -> None:
    lines: list[str] = []
    c, _s = pair(Configuration(is_client=True, verify_peer=False), Configuration(is_client=False, keylog=lines.append))
    assert c.group is not None
    client = c.group.group.export(b"MLS-TLS c ap traffic", b"", 32)
    server = c.group.group.export(b"MLS-TLS s ap traffic", b"", 32)
    assert sorted(lines) == sorted([
        f"CLIENT_TRAFFIC_SECRET_1 {hashlib.sha256(c.group.group.group_id).hexdigest()} {client.hex()}",
        f"SERVER_TRAFFIC_SECRET_1 {hashlib.sha256(c.group.group.group_id).hexdigest()} {server.hex()}",
    ])


def test_garbage_before_and_after_the_keys_is_an_alert() -> None:
    s = MLSConnection(Configuration(is_client=False))
    with pytest.raises(ProtocolError):
        s.receive_data(b"\x16\x03\x01\x00\x05" + bytes((242, 0, 0, 1, 9)))  # MLSTLSMessageType 9
    assert closed_with(s).alert is AlertDescription.decode_error
    c, s = pair()
    c.events(), s.events()
    with pytest.raises(ProtocolError):
        s.receive_data(b"\x17\x03\x03\x00\x20" + bytes(32))  # a protected record that does not open
    assert closed_with(s).alert is AlertDescription.bad_record_mac
    c, s = pair()
    c.events(), s.events()
    with pytest.raises(ProtocolError):  # docs §6: a plaintext handshake record after the keys
        s.receive_data(plaintext_record(ContentType.HANDSHAKE, encode_mls_tls(MLSTLSEpochKeyUpdate(2))))
    assert closed_with(s).alert is AlertDescription.unexpected_message


def test_an_unexpected_epoch_key_update_is_unexpected_message() -> None:
    c, s = pair()
    c.events(), s.events()
    c._records.send(ContentType.HANDSHAKE, encode_mls_tls(MLSTLSEpochKeyUpdate(2)))
    with pytest.raises(ProtocolError):
        pump(c, s)
    assert closed_with(s).alert is AlertDescription.unexpected_message
    assert closed_with(c).alert is AlertDescription.unexpected_message  # the peer's alert


def test_a_tls_client_hello_to_an_mls_responder_is_unexpected_message() -> None:
    tls = Connection(Configuration(is_client=True, server_name="localhost"))
    s = MLSConnection(Configuration(is_client=False))
    tls.start_handshake()
    with pytest.raises(ProtocolError):
        s.receive_data(tls.data_to_send())
    assert closed_with(s).alert is AlertDescription.unexpected_message


def test_a_suite_the_responder_does_not_allow_is_handshake_failure() -> None:
    c = MLSConnection(Configuration(is_client=True, verify_peer=False, mls_cipher_suites=(3,)))
    s = MLSConnection(Configuration(is_client=False, mls_cipher_suites=(1,)))
    c.start_handshake()
    with pytest.raises(ProtocolError):
        pump(c, s)
    assert closed_with(s).alert is AlertDescription.handshake_failure
    assert closed_with(c) == ConnectionClosed(AlertDescription.handshake_failure, by_peer=True,
                                              reason="peer sent alert handshake_failure")


def test_a_commit_that_changes_the_credential_is_refused_with_bad_certificate() -> None:
    c, s = pair()
    c.events(), s.events()
    assert s.group is not None
    out = s.group.group.commit(credential=BasicCredential(b"mallory"))
    s._records.send(ContentType.HANDSHAKE, encode_mls_tls(MLSTLSConnectionUpdate(out.message.to_bytes())))
    with pytest.raises(ProtocolError):
        pump(c, s)
    assert closed_with(c).alert is AlertDescription.bad_certificate
    assert closed_with(s).alert is AlertDescription.bad_certificate


def _pki() -> tuple[TrustStore, object, object]:
    ca = make_ca("ecdsa-p256")  # the Web PKI verifier refuses Ed25519 CA keys; the leaves are Ed25519
    server = make_leaf(ca, "ed25519", ["localhost"])
    client = make_leaf(ca, "ed25519", ["client"], client=True)
    return TrustStore([ca.cert]), server, client


def test_x509_credentials_validated_both_ways() -> None:
    store, server, client = _pki()
    c, s = pair(
        Configuration(is_client=True, server_name="localhost", trust_store=store,
                      certificate_chain=[client.cert], private_key=client.key),  # type: ignore[attr-defined]
        Configuration(is_client=False, trust_store=store, client_auth=ClientAuth.REQUIRED,
                      certificate_chain=[server.cert], private_key=server.key),  # type: ignore[attr-defined]
    )
    (done,) = events_of(c, HandshakeComplete)
    assert done.peer_certificates == (server.cert,)  # type: ignore[attr-defined]
    (done,) = events_of(s, HandshakeComplete)
    assert done.client_authenticated and s.peer_certificates == (client.cert,)  # type: ignore[attr-defined]
    c.update_keys()
    s.update_keys()
    pump(c, s)
    assert c.epoch == s.epoch == 2


def test_an_untrusted_misnamed_or_unauthenticated_responder_is_refused() -> None:
    store, server, _ = _pki()
    other_store, _, _ = _pki()
    x509_server = Configuration(is_client=False, certificate_chain=[server.cert], private_key=server.key)  # type: ignore[attr-defined]
    cases = [
        # Another CA (each test CA has its own name): unknown_ca, as over TLS.
        (Configuration(is_client=True, server_name="localhost", trust_store=other_store), x509_server,
         AlertDescription.unknown_ca),
        (Configuration(is_client=True, server_name="example.com", trust_store=store), x509_server,
         AlertDescription.bad_certificate),
        # A basic credential whose key is not pinned: nothing authenticates it.
        (Configuration(is_client=True, server_name="localhost", trust_store=store), Configuration(is_client=False),
         AlertDescription.bad_certificate),
    ]
    for client_config, server_config, alert in cases:
        c, s = MLSConnection(client_config), MLSConnection(server_config)
        c.start_handshake()
        with pytest.raises(ProtocolError):
            pump(c, s)
        assert closed_with(c).alert is alert
        assert closed_with(s) == ConnectionClosed(alert, by_peer=True, reason=f"peer sent alert {alert.name}")


def test_a_pinned_signature_key_authenticates_a_basic_credential() -> None:
    private, public = mls_suite(1).generate_signature_key_pair()
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.from_private_bytes(private)
    c, _s = pair(Configuration(is_client=True, mls_peer_signature_keys=(public,)),
                Configuration(is_client=False, private_key=key, mls_identity=b"server"))
    assert events_of(c, HandshakeComplete)
    assert c.peer_credential == BasicCredential(b"server") and c.peer_signature_key == public


def test_rekey_policy_bytes_and_interval_start_updates() -> None:
    clock = Clock()
    c, s = pair(Configuration(is_client=True, verify_peer=False, rekey_bytes=10_000, now=clock),
                Configuration(is_client=False, rekey_interval=60.0, now=clock))
    for _ in range(6):
        c.send(bytes(4000))
        pump(c, s)
    assert c.epoch == s.epoch == 3  # at 12,000 bytes, then 12,000 more (counted from the update's start)
    assert s.get_timer() == pytest.approx(clock.t + 60.0, abs=61)
    clock.t += 61
    s.handle_timer()
    pump(c, s)
    assert c.epoch == s.epoch == 4
    updates = [e for e in s.events() if isinstance(e, KeyUpdateCompleted)]
    assert [e.initiator for e in updates] == [Side.client, Side.client, Side.server]


def test_usage_limit_starts_an_update_at_seven_eighths() -> None:
    c, s = pair()
    c.events(), s.events()
    write = c._records.write
    assert write is not None
    limit = write.suite.record_limit
    write.sequence_number = limit - (limit >> 3)  # docs §9: 7/8 of the AEAD limit
    assert s._records.read is not None
    s._records.read.sequence_number = write.sequence_number
    c.send(b"after the limit")
    assert c.update_in_progress
    pump(c, s)
    # The peer would fail to open a record at that sequence number: the data
    # went under the new epoch's key, from sequence number 0.
    assert c.epoch == s.epoch == 2
    assert [e.data for e in s.events() if isinstance(e, ApplicationData)] == [b"after the limit"]


def test_the_wait_for_the_epoch_key_update_is_bounded() -> None:
    clock = Clock()
    c, _s = pair(Configuration(is_client=True, verify_peer=False, rekey_timeout=5.0, now=clock))
    c.update_keys()
    c.data_to_send()  # lost
    assert c.get_timer() == clock.t + 5.0
    clock.t += 5.0
    with pytest.raises(KeyUpdateTimeoutError):
        c.handle_timer()
    assert closed_with(c).alert is not None


def test_peer_close_while_waiting_abandons_our_update() -> None:
    c, s = pair()
    c.events(), s.events()
    s.close()
    c.update_keys()  # crosses the server's close_notify
    c.send(b"late")
    c.receive_data(s.data_to_send())  # close_notify: our update is abandoned, the data goes under epoch 1
    s.receive_data(c.data_to_send())  # the server ignores the ConnectionUpdate after its close_notify
    assert [e.data for e in s.events() if isinstance(e, ApplicationData)] == [b"late"]
    c.close()
    s.receive_data(c.data_to_send())
    assert c.is_closed and s.is_closed and c.epoch == s.epoch == 1


def test_parse_mls_suite() -> None:
    assert [parse_mls_suite(t) for t in ("1", "3", "0xF0A1", "61601")] == [1, 3, XWING, XWING]
    for bad in ("2", "x", "0x10000"):
        with pytest.raises(ValueError):
            parse_mls_suite(bad)


def test_max_key_package_lifetime_is_the_configurations() -> None:
    s = MLSConnection(replace(Configuration(is_client=False), mls_max_key_package_lifetime=3600))
    c = MLSConnection(Configuration(is_client=True, verify_peer=False))
    c.start_handshake()  # our KeyPackages live a day (mls/key_package.DEFAULT_LIFETIME): too long
    with pytest.raises(ProtocolError):
        pump(c, s)
    assert closed_with(s).alert is AlertDescription.illegal_parameter


def test_alpn_choice() -> None:
    c, s = pair(Configuration(is_client=True, verify_peer=False, alpn_protocols=("h2", "http/1.1")),
                Configuration(is_client=False, alpn_protocols=("http/1.1",)))
    assert [e.alpn_protocol for e in events_of(c, HandshakeComplete)] == ["http/1.1"]
    c = MLSConnection(Configuration(is_client=True, verify_peer=False, alpn_protocols=("h2",)))
    s = MLSConnection(Configuration(is_client=False, alpn_protocols=("http/1.1",)))
    c.start_handshake()
    with pytest.raises(ProtocolError):
        pump(c, s)
    assert closed_with(s).alert is AlertDescription.no_application_protocol  # RFC 7301 §3.2


def test_application_data_before_the_keys_is_unexpected_message() -> None:
    s = MLSConnection(Configuration(is_client=False))
    with pytest.raises(ProtocolError):
        s.receive_data(plaintext_record(ContentType.APPLICATION_DATA, b"early"))
    assert closed_with(s).alert is AlertDescription.unexpected_message


def test_a_tls_server_answers_the_client_hello_with_an_alert() -> None:
    c = MLSConnection(Configuration(is_client=True, verify_peer=False))
    tls = Connection(Configuration(is_client=False, certificate_chain=[_pki()[1].cert],  # type: ignore[attr-defined]
                                   private_key=_pki()[1].key))  # type: ignore[attr-defined]
    c.start_handshake()
    with pytest.raises(ProtocolError):
        tls.receive_data(c.data_to_send())
    c.receive_data(tls.data_to_send())  # docs/mls-tls.md §2: a plaintext unexpected_message
    closed = closed_with(c)
    assert closed.alert is AlertDescription.unexpected_message and closed.by_peer
    assert "may not speak MLS-TLS" in closed.reason


def test_handshake_timeout() -> None:
    clock = Clock()
    s = MLSConnection(Configuration(is_client=False, handshake_timeout=10.0, now=clock))
    s.connection_made()
    assert s.get_timer() == clock.t + 10.0
    clock.t += 10.0
    with pytest.raises(HandshakeTimeoutError):
        s.handle_timer()
    assert s.is_closed


def test_record_padding_is_the_configurations() -> None:
    c, s = pair(Configuration(is_client=True, verify_peer=False, record_padding=pad_to_block(256)))
    c.events(), s.events()
    for size in (1, 100, 300):
        c.send(bytes(size))
        record = c.data_to_send()
        # RFC 8446 §5.2/§5.4: header, TLSInnerPlaintext (content, type, zeros) rounded to 256, tag.
        inner = len(record) - 5 - 16
        assert inner % 256 == 0 and inner >= size + 1
        s.receive_data(record)
    assert [len(e.data) for e in s.events() if isinstance(e, ApplicationData)] == [1, 100, 300]
