"""Two longtls Connections paired in memory: what a user of the core relies on."""

from __future__ import annotations

import pytest

from helpers.pair import Pair, configs, connect
from helpers.pki import make_ca, make_leaf
from longtls.config import ClientAuth, Configuration, pad_to_block
from longtls.connection import Connection
from longtls.constants import (
    AlertDescription,
    CipherSuite,
    NamedGroup,
    PskKeyExchangeMode,
    SignatureScheme,
)
from longtls.errors import LocalProtocolError
from longtls.events import (
    CloseNotifyReceived,
    ConnectionClosed,
    HandshakeComplete,
    KeyUpdated,
    PeerAuthenticated,
    SessionTicket,
    SessionTicketReceived,
)


def _done(events: list[object]) -> HandshakeComplete:
    (done,) = [e for e in events if isinstance(e, HandshakeComplete)]
    return done


def _tickets(pair: Pair) -> list[SessionTicket]:
    return [e.ticket for e in pair.client_events if isinstance(e, SessionTicketReceived)]


GROUPS = [
    NamedGroup.x25519, NamedGroup.secp256r1, NamedGroup.secp384r1, NamedGroup.X25519MLKEM768,
    NamedGroup.SecP256r1MLKEM768, NamedGroup.SecP384r1MLKEM1024, NamedGroup.MLKEM768,
    NamedGroup.MLKEM1024,
]


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.name)
def test_every_group_in_the_first_flight(group: NamedGroup) -> None:
    c, s, _ = configs(client_groups=[group], client_key_share_groups=[group])
    pair = connect(c, s)
    assert _done(pair.client_events).group == group
    assert _done(pair.server_events).group == group
    pair.client.send(b"ping")
    pair.server.send(b"pong")
    pair.pump()
    assert pair.received("server") == b"ping" and pair.received("client") == b"pong"


@pytest.mark.parametrize("suite", list(CipherSuite), ids=lambda s: s.name)
def test_every_cipher_suite(suite: CipherSuite) -> None:
    # The CCM suites are on request only, on both sides (docs/groups-and-suites.md).
    c, s, _ = configs(client_cipher_suites=[suite], server_cipher_suites=[suite])
    pair = connect(c, s)
    assert _done(pair.client_events).cipher_suite == suite
    pair.client.send(b"x" * 40000)
    pair.pump()
    assert pair.received("server") == b"x" * 40000


@pytest.mark.parametrize(
    ("key_type", "scheme"),
    [
        ("rsa-2048", SignatureScheme.rsa_pss_rsae_sha256),
        ("ecdsa-p256", SignatureScheme.ecdsa_secp256r1_sha256),
        ("ecdsa-p384", SignatureScheme.ecdsa_secp384r1_sha384),
        ("ed25519", SignatureScheme.ed25519),
        ("ed448", SignatureScheme.ed448),
        ("mldsa44", SignatureScheme.mldsa44),
        ("mldsa65", SignatureScheme.mldsa65),
        ("mldsa87", SignatureScheme.mldsa87),
    ],
)
def test_every_certificate_key_type(key_type: str, scheme: SignatureScheme) -> None:
    # cryptography's path validation refuses EdDSA keys on CAs (Web PKI
    # profile), so EdDSA leaves are issued by an ECDSA CA.
    ca = make_ca("ecdsa-p256") if key_type.startswith("ed") else None
    c, s, _ = configs(key_type, ca=ca)
    pair = connect(c, s)
    done = _done(pair.client_events)
    assert done.signature_scheme == scheme
    assert done.peer_subject is not None


def test_hello_retry_request_when_no_share_fits() -> None:
    c, s, _ = configs(
        client_groups=[NamedGroup.x25519, NamedGroup.secp384r1],
        client_key_share_groups=[NamedGroup.x25519],
        server_groups=[NamedGroup.secp384r1],
    )
    pair = connect(c, s)
    assert _done(pair.client_events).group == NamedGroup.secp384r1
    assert pair.client.handshake.hello_retry_seen  # type: ignore[attr-defined]
    pair.client.send(b"after retry")
    pair.pump()
    assert pair.received("server") == b"after retry"


def test_server_prefers_its_own_group_order_among_client_shares() -> None:
    c, s, _ = configs(
        client_key_share_groups=[NamedGroup.x25519, NamedGroup.secp256r1],
        server_groups=[NamedGroup.secp256r1, NamedGroup.x25519],
    )
    pair = connect(c, s)
    assert _done(pair.server_events).group == NamedGroup.secp256r1


@pytest.mark.parametrize("mode", [PskKeyExchangeMode.psk_dhe_ke, PskKeyExchangeMode.psk_ke])
def test_resumption_with_a_ticket(mode: PskKeyExchangeMode) -> None:
    c, s, _ = configs(client_psk_key_exchange_modes=[mode], server_psk_key_exchange_modes=[mode],
                      client_extended_key_update=False, server_extended_key_update=False,
                       client_alpn_protocols=["x"], server_alpn_protocols=["x"])
    first = connect(c, s)
    tickets = _tickets(first)
    assert len(tickets) == 2
    c2 = Configuration(**{**c.__dict__, "session_ticket": tickets[0]})
    second = connect(c2, s)
    done = _done(second.client_events)
    assert done.resumed and _done(second.server_events).resumed
    assert done.alpn_protocol == "x"
    assert done.peer_certificates == ()
    assert (done.group is None) == (mode == PskKeyExchangeMode.psk_ke)
    second.client.send(b"resumed data")
    second.pump()
    assert second.received("server") == b"resumed data"


def test_ticket_from_another_server_falls_back_to_full_handshake() -> None:
    c, s, _ = configs(client_extended_key_update=False, server_extended_key_update=False)
    ticket = _tickets(connect(c, s))[0]
    other = Configuration(**{**s.__dict__, "ticket_key": b"\x01" * 32})
    pair = connect(Configuration(**{**c.__dict__, "session_ticket": ticket}), other)
    assert not _done(pair.client_events).resumed


def test_expired_ticket_is_not_offered() -> None:
    c, s, _ = configs(server_ticket_lifetime=10, client_extended_key_update=False, server_extended_key_update=False)
    ticket = _tickets(connect(c, s))[0]
    later = Configuration(**{**c.__dict__, "session_ticket": ticket, "now": lambda: ticket.received_at + 11})
    pair = connect(later, s)
    assert not _done(pair.client_events).resumed


@pytest.mark.parametrize("mode", [ClientAuth.OPTIONAL, ClientAuth.REQUIRED])
def test_mutual_tls(mode: ClientAuth) -> None:
    ca = make_ca("ecdsa-p256")
    client_leaf = make_leaf(ca, "ed25519", client=True)
    c, s, _ = configs(ca=ca, server_client_auth=mode)
    c.certificate_chain, c.private_key = client_leaf.chain, client_leaf.key
    pair = connect(c, s)
    server_done = _done(pair.server_events)
    assert server_done.client_authenticated
    assert server_done.signature_scheme == SignatureScheme.ed25519
    assert server_done.peer_certificates[0] == client_leaf.cert


def test_optional_client_auth_without_certificate() -> None:
    c, s, _ = configs(server_client_auth=ClientAuth.OPTIONAL)
    pair = connect(c, s)
    assert not _done(pair.server_events).client_authenticated


def test_required_client_auth_without_certificate_fails() -> None:
    c, s, _ = configs(server_client_auth=ClientAuth.REQUIRED)
    pair = Pair(Connection(c), Connection(s))
    pair.client.start_handshake()
    with pytest.raises(Exception) as info:
        pair.pump()
    assert getattr(info.value, "alert", None) == AlertDescription.certificate_required
    pair.client.receive_data(pair.server.data_to_send())
    closed = [e for e in pair.client.events() if isinstance(e, ConnectionClosed)]
    assert closed and closed[0].alert == AlertDescription.certificate_required and closed[0].by_peer


def test_post_handshake_client_authentication() -> None:
    ca = make_ca("ecdsa-p256")
    client_leaf = make_leaf(ca, "ecdsa-p384", client=True)
    c, s, _ = configs(ca=ca, client_post_handshake_auth=True)
    c.certificate_chain, c.private_key = client_leaf.chain, client_leaf.key
    pair = connect(c, s)
    assert not _done(pair.server_events).client_authenticated
    pair.client.send(b"before")
    pair.server.request_client_authentication()
    pair.pump()
    (auth,) = [e for e in pair.server_events if isinstance(e, PeerAuthenticated)]
    assert auth.peer_certificates[0] == client_leaf.cert
    assert auth.signature_scheme == SignatureScheme.ecdsa_secp384r1_sha384
    pair.client.send(b" after")
    pair.pump()
    assert pair.received("server") == b"before after"


def test_post_handshake_auth_needs_the_client_offer() -> None:
    c, s, _ = configs()
    pair = connect(c, s)
    with pytest.raises(LocalProtocolError):
        pair.server.request_client_authentication()


@pytest.mark.parametrize("initiator", ["client", "server"])
def test_key_update_both_directions(initiator: str) -> None:
    pair = connect(*configs(client_extended_key_update=False, server_extended_key_update=False)[:2])
    me, peer = (pair.client, pair.server) if initiator == "client" else (pair.server, pair.client)
    for i in range(5):
        me.update_keys(request_peer_update=True)
        me.send(b"m%d" % i)
        peer.send(b"p%d" % i)
        pair.pump()
    assert pair.received("server" if initiator == "client" else "client") == b"m0m1m2m3m4"
    assert pair.received("client" if initiator == "client" else "server") == b"p0p1p2p3p4"
    mine = pair.client_events if initiator == "client" else pair.server_events
    sends = [e for e in mine if isinstance(e, KeyUpdated) and e.direction == "send"]
    receives = [e for e in mine if isinstance(e, KeyUpdated) and e.direction == "receive"]
    assert [e.generation for e in sends] == [1, 2, 3, 4, 5]
    assert [e.generation for e in receives] == [1, 2, 3, 4, 5]


def test_key_update_not_requested_changes_one_direction() -> None:
    pair = connect(*configs(client_extended_key_update=False, server_extended_key_update=False)[:2])
    pair.client.update_keys(request_peer_update=False)
    pair.pump()
    assert not [e for e in pair.server_events if isinstance(e, KeyUpdated) and e.direction == "send"]


def test_exporters_agree_and_differ_by_label() -> None:
    pair = connect(*configs()[:2])
    a = pair.client.export_keying_material("EXPORTER-test", b"ctx", 32)
    assert a == pair.server.export_keying_material("EXPORTER-test", b"ctx", 32)
    assert a != pair.client.export_keying_material("EXPORTER-other", b"ctx", 32)
    assert a != pair.client.export_keying_material("EXPORTER-test", b"", 32)


def test_alpn_negotiation() -> None:
    c, s, _ = configs(client_alpn_protocols=["h2", "http/1.1"], server_alpn_protocols=["http/1.1", "h2"])
    pair = connect(c, s)
    assert _done(pair.client_events).alpn_protocol == "http/1.1"


def test_record_size_limit_is_honoured() -> None:
    c, s, _ = configs(server_record_size_limit=256)
    pair = connect(c, s)
    pair.client.send(b"z" * 5000)
    out = pair.client.data_to_send()
    # every record's TLSInnerPlaintext fits 256 bytes: 255 of content + type + 16 tag
    pos = 0
    while pos < len(out):
        length = int.from_bytes(out[pos + 3 : pos + 5], "big")
        assert length <= 256 + 16
        pos += 5 + length
    pair.server.receive_data(out)
    pair.server_events.extend(pair.server.events())
    assert pair.received("server") == b"z" * 5000


def test_padding_policy_pads_records() -> None:
    c, s, _ = configs(client_record_padding=pad_to_block(512))
    pair = connect(c, s)
    pair.client.send(b"a")
    out = pair.client.data_to_send()
    assert int.from_bytes(out[3:5], "big") == 512 + 16
    pair.server.receive_data(out)
    pair.server_events.extend(pair.server.events())
    assert pair.received("server") == b"a"


def test_half_close_lets_the_other_side_finish() -> None:
    pair = connect(*configs()[:2])
    pair.client.close()
    pair.pump()
    assert any(isinstance(e, CloseNotifyReceived) for e in pair.server_events)
    assert not pair.server.is_closed
    pair.server.send(b"last words")
    pair.server.close()
    pair.pump()
    assert pair.received("client") == b"last words"
    assert pair.client.is_closed and pair.server.is_closed
    closed = [e for e in pair.client_events if isinstance(e, ConnectionClosed)]
    assert closed[-1].alert is None


def test_send_after_close_is_refused() -> None:
    pair = connect(*configs()[:2])
    pair.client.close()
    with pytest.raises(LocalProtocolError):
        pair.client.send(b"x")


def test_keylog_lines(tmp_path: object) -> None:
    lines: list[str] = []
    c, s, _ = configs(client_keylog=lines.append, client_extended_key_update=False, server_extended_key_update=False)
    pair = connect(c, s)
    pair.client.update_keys()
    pair.pump()
    labels = [line.split()[0] for line in lines]
    assert labels[:5] == [
        "CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET",
        "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0", "EXPORTER_SECRET",
    ]
    assert "CLIENT_TRAFFIC_SECRET_1" in labels and "SERVER_TRAFFIC_SECRET_1" in labels
    client_random = pair.client.client_random.hex()
    assert all(line.split()[1] == client_random for line in lines)


def test_keylog_from_environment(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    import pathlib

    path = pathlib.Path(str(tmp_path)) / "keys.log"
    monkeypatch.setenv("SSLKEYLOGFILE", str(path))
    connect(*configs()[:2])
    text = path.read_text()
    assert text.count("CLIENT_TRAFFIC_SECRET_0") == 2  # both ends of the pair


def test_reprs_show_no_secrets() -> None:
    lines: list[str] = []
    c, s, _ = configs(client_keylog=lines.append)
    pair = connect(c, s)
    secrets = [bytes.fromhex(line.split()[2]) for line in lines]
    objects = [pair.client, pair.server, pair.client.handshake, c, s, *pair.client_events, *pair.server_events]
    text = " ".join(repr(o) + str(o) for o in objects)
    for secret in secrets:
        assert secret.hex() not in text and repr(secret) not in text


def test_keys_are_updated_before_the_aead_usage_limit() -> None:
    """RFC 9846 §5.5: update keys before 2^24.5 AES-GCM records; we do it at 7/8."""
    pair = connect(*configs(client_cipher_suites=[CipherSuite.TLS_AES_128_GCM_SHA256], client_extended_key_update=False, server_extended_key_update=False)[:2])
    protection = pair.client._records.write
    assert protection is not None
    limit = protection.suite.record_limit
    # As if that many records had been exchanged: both ends agree on the count.
    protection.sequence_number = limit - (limit >> 3)
    assert pair.server._records.read is not None
    pair.server._records.read.sequence_number = protection.sequence_number
    pair.client.send(b"still flowing")
    pair.pump()
    sends = [e for e in pair.client_events if isinstance(e, KeyUpdated) and e.direction == "send"]
    assert len(sends) == 1
    assert pair.client._records.write is not protection and pair.client._records.write.sequence_number == 1
    assert pair.received("server") == b"still flowing"


def test_eddsa_ca_is_refused_with_a_clear_alert() -> None:
    from longtls.errors import RemoteProtocolError

    c, s, _ = configs("ed25519")
    pair = Pair(Connection(c), Connection(s))
    pair.client.start_handshake()
    with pytest.raises(RemoteProtocolError) as info:
        pair.pump()
    assert info.value.alert == AlertDescription.unsupported_certificate
    assert "CA" in str(info.value)


def test_handshake_secrets_are_wiped_once_connected() -> None:
    pair = connect(*configs()[:2])
    for conn in (pair.client, pair.server):
        secrets = conn.handshake.secrets
        assert secrets is not None
        assert secrets.client_handshake_traffic_secret == b""
        assert secrets.server_handshake_traffic_secret == b""
        assert secrets.handshake_secret == b"" and secrets.early_secret == b""
        assert conn.handshake.handshake_transcript is None  # no post-handshake auth offered
