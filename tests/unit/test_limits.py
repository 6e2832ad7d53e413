"""Limits against hostile peers: each one, exceeded, ends the connection with an alert."""

from __future__ import annotations

import pytest

from helpers.pair import Pair, configs, connect
from helpers.pki import make_ca, make_intermediate, make_leaf
from longtls.connection import Connection
from longtls.constants import AlertDescription, ContentType, HandshakeType
from longtls.errors import HandshakeTimeoutError, RemoteProtocolError
from longtls.events import ConnectionClosed, SessionTicketReceived
from longtls.record.tls import plaintext_record
from longtls.wire.messages import KeyUpdate, encode_handshake


def _closed_with(conn: Connection) -> AlertDescription | None:
    closed = [e for e in conn.events() if isinstance(e, ConnectionClosed)]
    return closed[-1].alert if closed else None


def test_certificate_chain_length() -> None:
    ca = make_ca("ecdsa-p256")
    node = ca
    for _ in range(3):
        node = make_intermediate(node, "ecdsa-p256")
    leaf = make_leaf(node, "ecdsa-p256")
    c, s, _ = configs(ca=ca, client_max_certificate_chain_length=3)
    s.certificate_chain, s.private_key = leaf.chain, leaf.key
    assert len(leaf.chain) == 4
    pair = Pair(Connection(c), Connection(s))
    pair.client.start_handshake()
    with pytest.raises(RemoteProtocolError) as info:
        pair.pump()
    assert info.value.alert == AlertDescription.bad_certificate
    assert "exceeds the limit of 3" in str(info.value)


def test_handshake_split_into_too_many_records() -> None:
    c, s, _ = configs(server_max_handshake_records=64)
    client, server = Connection(c), Connection(s)
    client.start_handshake()
    hello = client.data_to_send()
    body = hello[5:]  # one ClientHello record: re-send it one byte per record
    records = b"".join(plaintext_record(ContentType.HANDSHAKE, body[i : i + 1]) for i in range(len(body)))
    with pytest.raises(RemoteProtocolError) as info:
        server.receive_data(records)
    assert info.value.alert == AlertDescription.unexpected_message
    # within the limit, the same fragmentation is fine
    c2, s2, _ = configs()
    client2, server2 = Connection(c2), Connection(s2)
    client2.start_handshake()
    body2 = client2.data_to_send()[5:]
    chunks = [body2[i : i + 64] for i in range(0, len(body2), 64)]
    server2.receive_data(b"".join(plaintext_record(ContentType.HANDSHAKE, ch) for ch in chunks))
    assert server2.data_to_send()


def test_warning_alert_flood() -> None:
    pair = connect(*configs(server_max_warning_alerts=4)[:2])
    assert pair.client._records.write is not None
    for _ in range(4):
        pair.client._send_alert(AlertDescription.user_canceled)
        pair.server.receive_data(pair.client.data_to_send())
    pair.client._send_alert(AlertDescription.user_canceled)
    with pytest.raises(RemoteProtocolError) as info:
        pair.server.receive_data(pair.client.data_to_send())
    assert info.value.alert == AlertDescription.unexpected_message


def test_key_update_flood() -> None:
    now = [1_000_000.0]
    c, s, _ = configs(
        client_extended_key_update=False, server_extended_key_update=False,
        server_max_peer_key_updates_per_second=5,
    )
    pair = connect(c, s)
    s.now = lambda: now[0]
    for _ in range(5):
        pair.client.update_keys(request_peer_update=False)
    pair.server.receive_data(pair.client.data_to_send())  # five in one second: fine
    now[0] += 1.5
    for _ in range(5):
        pair.client.update_keys(request_peer_update=False)
    pair.server.receive_data(pair.client.data_to_send())  # a new second
    for _ in range(6):
        pair.client.queue_handshake(encode_handshake(HandshakeType.key_update, KeyUpdate(0).encode()))
        pair.client._flush_handshake()
    with pytest.raises(RemoteProtocolError) as info:
        pair.server.receive_data(pair.client.data_to_send())
    assert info.value.alert == AlertDescription.unexpected_message


def test_session_tickets_kept_per_connection() -> None:
    c, s, _ = configs(
        client_extended_key_update=False, server_extended_key_update=False,
        client_max_session_tickets=3, server_session_tickets=2,
    )
    pair = connect(c, s)
    handshake = pair.server.handshake
    for _ in range(3):
        handshake.send_session_tickets(2)  # type: ignore[attr-defined]
        pair.pump()
    tickets = [e for e in pair.client_events if isinstance(e, SessionTicketReceived)]
    assert len(tickets) == 3  # 8 were sent; the client kept the first 3


def test_handshake_timeout() -> None:
    now = [5_000_000.0]
    c, s, _ = configs(server_handshake_timeout=10.0)
    s.now = lambda: now[0]
    server = Connection(s)
    client = Connection(c)
    client.start_handshake()
    hello = client.data_to_send()
    server.receive_data(hello[:20])  # slowloris: a piece of a ClientHello, then nothing
    assert server.get_timer() == now[0] + 10.0
    now[0] += 9.0
    server.handle_timer()
    assert not server.is_closed
    now[0] += 1.0
    # Raised, like KeyUpdateTimeoutError: the error longtls.aio reports too.
    with pytest.raises(HandshakeTimeoutError, match=r"TLS handshake not complete after 10 seconds") as info:
        server.handle_timer()
    assert isinstance(info.value, TimeoutError) and info.value.seconds == 10.0
    assert server.is_closed
    assert _closed_with(server) == AlertDescription.close_notify
    # user_canceled, then close_notify (RFC 9846 §6.1)
    assert server.data_to_send() == plaintext_record(ContentType.ALERT, bytes((1, 90))) + plaintext_record(
        ContentType.ALERT, bytes((1, 0))
    )


def test_handshake_timeout_runs_from_connection_made() -> None:
    """A peer that connects and never sends a byte: the clock starts when the
    transport opens (Connection.connection_made), not with the first byte."""
    now = [5_000_000.0]
    _, s, _ = configs(server_handshake_timeout=10.0)
    s.now = lambda: now[0]
    server = Connection(s)
    assert server.get_timer() is None  # nothing to time yet
    server.connection_made()
    assert server.get_timer() == now[0] + 10.0
    now[0] += 4.0
    server.connection_made()  # a second call does not restart the clock
    server.receive_data(b"\x16")  # nor does the first byte
    assert server.get_timer() == now[0] + 6.0
    now[0] += 6.0
    with pytest.raises(HandshakeTimeoutError):
        server.handle_timer()
    assert server.is_closed and _closed_with(server) == AlertDescription.close_notify
