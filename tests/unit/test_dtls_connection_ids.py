"""DTLS 1.3 connection IDs: the connection_id extension (RFC 9146 §3, RFC 9147 §9)
negotiated by the engines, and NewConnectionId / RequestConnectionId
(handshake/connection_ids.py)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from helpers.dtls_engines import drive_handshake as _handshake
from helpers.dtls_engines import engine_configs as _configs
from helpers.dtls_engines import parse_dtls_client_hello as _parse_dtls_client_hello
from helpers.dtls_engines import parse_extensions as _extensions
from helpers.dtls_link import Clock, DatagramLink
from helpers.pair import configs
from longtls.config import DEFAULT_SERVER_CONNECTION_ID_LENGTH, Configuration
from longtls.constants import AlertDescription, ExtensionType, HandshakeType, NamedGroup
from longtls.dtls_connection import DTLSConnection
from longtls.errors import LocalProtocolError, RemoteProtocolError
from longtls.events import ConnectionClosed
from longtls.handshake.connection_ids import (
    MAX_CIDS_PER_ANSWER,
    MAX_PEER_REQUESTS,
    MAX_SPARE_PEER_CIDS,
    ConnectionIds,
)
from longtls.handshake.transport import TLS
from longtls.wire.connection_ids import ConnectionIdUsage, NewConnectionId, RequestConnectionId
from longtls.wire.messages import encode_handshake

# -- negotiation in the handshake --------------------------------------------------


def _client_hello_cid(run_wire: list[bytes]) -> bytes | None:
    _, _, _, exts = _parse_dtls_client_hello(run_wire[0])
    raw = exts.get(ExtensionType.connection_id)
    if raw is None:
        return None
    assert raw[0] == len(raw) - 1  # opaque cid<0..2^8-1>
    return raw[1:]


def _server_hello_cid(run_wire: list[bytes]) -> bytes | None:
    # The last ServerHello: a HelloRetryRequest (the cookie exchange) carries no CID.
    sh = [m for m in run_wire if m[0] == HandshakeType.server_hello][-1]
    body = sh[4:]
    pos = 35 + body[34] + 2 + 1
    raw = _extensions(body[pos + 2:]).get(ExtensionType.connection_id)
    return None if raw is None else raw[1:]


def test_defaults_server_cid_of_8_bytes_client_offers_an_empty_one() -> None:
    """RFC 9147 §5.3: a client that wants no CID "SHOULD still offer" the
    extension; our server asks for an 8-byte CID so a client can change address."""
    client_cfg, server_cfg = _configs()
    run = _handshake(client_cfg, server_cfg)
    assert run.client.complete and run.server.complete
    assert _client_hello_cid(run.wire) == b""
    server_cid = _server_hello_cid(run.wire)
    assert server_cid is not None and len(server_cid) == DEFAULT_SERVER_CONNECTION_ID_LENGTH
    assert run.client.own_connection_id == b"" and run.client.peer_connection_id == server_cid
    assert run.server.own_connection_id == server_cid and run.server.peer_connection_id == b""


def test_both_sides_choose_their_lengths() -> None:
    client_cfg, server_cfg = _configs(client_dtls_connection_id_length=4, server_dtls_connection_id_length=2)
    run = _handshake(client_cfg, server_cfg)
    client_cid, server_cid = _client_hello_cid(run.wire), _server_hello_cid(run.wire)
    assert client_cid is not None and len(client_cid) == 4
    assert server_cid is not None and len(server_cid) == 2
    assert (run.client.own_connection_id, run.client.peer_connection_id) == (client_cid, server_cid)
    assert (run.server.own_connection_id, run.server.peer_connection_id) == (server_cid, client_cid)


@pytest.mark.parametrize("side", ["client", "server"])
def test_either_side_can_decline(side: str) -> None:
    """No extension from one side: nothing negotiated, no CID in any record."""
    client_cfg, server_cfg = _configs(**{f"{side}_dtls_connection_ids": False})
    run = _handshake(client_cfg, server_cfg)
    assert run.client.complete and run.server.complete
    assert _server_hello_cid(run.wire) is None
    for engine in (run.client, run.server):
        assert engine.own_connection_id is None and engine.peer_connection_id is None


def test_tls_never_offers_connection_ids() -> None:
    client_cfg, server_cfg = _configs()
    run = _handshake(client_cfg, server_cfg, transport=TLS)
    assert run.client.complete and run.client.own_connection_id is None


def test_cid_length_is_checked() -> None:
    with pytest.raises(Exception, match="dtls_connection_id_length"):
        Configuration(dtls_connection_id_length=256).validate()


# -- NewConnectionId / RequestConnectionId --------------------------------------------


class _Host:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.peer_cid: bytes | None = None
        self.accepted: list[bytes] = []

    def queue_handshake(self, message: bytes) -> None:
        self.sent.append(message)

    def use_peer_connection_id(self, cid: bytes) -> None:
        self.peer_cid = cid

    def accept_own_connection_ids(self, cids: Sequence[bytes]) -> None:
        self.accepted = list(cids)


def _counter() -> object:
    state = {"n": 0}

    def random(length: int) -> bytes:
        state["n"] += 1
        return state["n"].to_bytes(length, "big")

    return random


def _ids(own: bytes = b"\x00\x00\x00\xaa", peer: bytes = b"\xbb\xbb") -> tuple[ConnectionIds, _Host]:
    host = _Host()
    return ConnectionIds(host, own, peer, _counter()), host  # type: ignore[arg-type]


def _deliver(ids: ConnectionIds, raw: bytes) -> None:
    ids.handle(raw[0], raw[4:], raw)


def test_codecs_round_trip_and_refuse_bad_usage() -> None:
    message = NewConnectionId((b"\x01\x02", b"", b"\x03"), ConnectionIdUsage.cid_spare)
    assert message.encode() == b"\x00\x06" + b"\x02\x01\x02" + b"\x00" + b"\x01\x03" + b"\x01"
    assert NewConnectionId.decode(message.encode()) == message
    assert RequestConnectionId.decode(b"\x05") == RequestConnectionId(5)
    ids, _ = _ids()
    for body in (b"\x00\x00\x07", b"\x00\x03\x02\x01", b"\x00\x00", b"\x05\x06"):
        msg_type = HandshakeType.new_connection_id if len(body) != 2 else HandshakeType.request_connection_id
        with pytest.raises(RemoteProtocolError) as info:
            ids.handle(msg_type, body, b"")
        assert info.value.alert == AlertDescription.decode_error


def test_a_request_is_answered_with_fresh_spares_that_we_then_accept() -> None:
    ids, host = _ids()
    _deliver(ids, encode_handshake(HandshakeType.request_connection_id, RequestConnectionId(2).encode()))
    (answer,) = host.sent
    assert answer[0] == HandshakeType.new_connection_id
    message = NewConnectionId.decode(answer[4:])
    assert message.usage is ConnectionIdUsage.cid_spare and len(message.cids) == 2
    assert all(len(c) == 4 for c in message.cids) and len(set(message.cids)) == 2
    assert host.accepted == [b"\x00\x00\x00\xaa", *message.cids]


def test_answers_are_bounded_and_a_flood_of_requests_is_cut_off() -> None:
    ids, host = _ids()
    _deliver(ids, encode_handshake(HandshakeType.request_connection_id, RequestConnectionId(200).encode()))
    assert len(NewConnectionId.decode(host.sent[0][4:]).cids) == MAX_CIDS_PER_ANSWER
    ids.message_acknowledged(HandshakeType.new_connection_id)
    with pytest.raises(RemoteProtocolError) as info:
        for _ in range(MAX_PEER_REQUESTS):
            _deliver(ids, encode_handshake(HandshakeType.request_connection_id, RequestConnectionId(1).encode()))
            ids.message_acknowledged(HandshakeType.new_connection_id)
    assert info.value.alert == AlertDescription.too_many_cids_requested
    answered = [NewConnectionId.decode(m[4:]).cids for m in host.sent]
    assert sum(len(c) for c in answered) + 1 <= 32  # never more than MAX_OWN_CIDS in all
    assert any(len(c) == 0 for c in answered)  # past the cap the answer carries none


def test_one_new_connection_id_outstanding_at_a_time() -> None:
    """RFC 9147 §9: "MUST NOT have more than one NewConnectionId message outstanding"."""
    ids, host = _ids()
    first = ids.issue(1)
    second = ids.issue(1)
    assert len(host.sent) == 1 and NewConnectionId.decode(host.sent[0][4:]).cids == tuple(first)
    ids.message_acknowledged(HandshakeType.new_connection_id)
    assert len(host.sent) == 2 and NewConnectionId.decode(host.sent[1][4:]).cids == tuple(second)
    assert host.accepted[-2:] == [*first, *second]  # accepted from the moment they were issued


def test_peer_cids_used_in_order_immediately_or_as_spares() -> None:
    ids, host = _ids()
    spare = encode_handshake(
        HandshakeType.new_connection_id, NewConnectionId((b"\x01\x01", b"\x02\x02"), ConnectionIdUsage.cid_spare).encode()
    )
    _deliver(ids, spare)
    assert host.peer_cid is None and list(ids.peer_spares) == [b"\x01\x01", b"\x02\x02"]
    assert ids.next_peer_connection_id() and host.peer_cid == b"\x01\x01"
    now = encode_handshake(
        HandshakeType.new_connection_id, NewConnectionId((b"\x03\x03", b"\x04\x04"), ConnectionIdUsage.cid_immediate).encode()
    )
    _deliver(ids, now)
    assert host.peer_cid == b"\x03\x03" and list(ids.peer_spares) == [b"\x02\x02", b"\x04\x04"]
    many = tuple(bytes((9, i)) for i in range(20))
    _deliver(ids, encode_handshake(HandshakeType.new_connection_id, NewConnectionId(many, ConnectionIdUsage.cid_spare).encode()))
    assert len(ids.peer_spares) == MAX_SPARE_PEER_CIDS


def test_rules_of_section_9_on_empty_cids() -> None:
    # We receive no CIDs (own empty): we may not issue, the peer may not request.
    ids, _ = _ids(own=b"")
    with pytest.raises(LocalProtocolError):
        ids.issue(1)
    with pytest.raises(RemoteProtocolError) as info:
        _deliver(ids, encode_handshake(HandshakeType.request_connection_id, RequestConnectionId(1).encode()))
    assert info.value.alert == AlertDescription.unexpected_message
    # We send an empty CID (peer's empty): we may not request, the peer may not issue.
    ids, _ = _ids(peer=b"")
    with pytest.raises(LocalProtocolError):
        ids.request(1)
    with pytest.raises(RemoteProtocolError) as info:
        _deliver(ids, encode_handshake(
            HandshakeType.new_connection_id, NewConnectionId((b"\x01",), ConnectionIdUsage.cid_spare).encode()
        ))
    assert info.value.alert == AlertDescription.unexpected_message


def test_a_cid_of_another_length_is_illegal_parameter() -> None:
    ids, _ = _ids(peer=b"\xbb\xbb")
    with pytest.raises(RemoteProtocolError) as info:
        _deliver(ids, encode_handshake(
            HandshakeType.new_connection_id, NewConnectionId((b"\x01\x02\x03",), ConnectionIdUsage.cid_spare).encode()
        ))
    assert info.value.alert == AlertDescription.illegal_parameter


# -- on a DTLSConnection ------------------------------------------------------------------


def _link(**kwargs: object) -> DatagramLink:
    clock = Clock()
    client_cfg, server_cfg, _ = configs(
        client_now=clock, server_now=clock, client_key_share_groups=(NamedGroup.x25519,), **kwargs
    )
    link = DatagramLink(DTLSConnection(client_cfg), server_cfg, clock)
    link.handshake()
    link.run()
    return link


def _cids_in(datagrams: list[bytes], cid_length: int) -> list[bytes | None]:
    """The CID of every protected record (None: no C bit), read from the headers (RFC 9147 §4)."""
    found: list[bytes | None] = []
    for datagram in datagrams:
        pos = 0
        while pos < len(datagram):
            first = datagram[pos]
            if first & 0xE0 != 0x20:  # DTLSPlaintext: never a CID
                pos += 13 + int.from_bytes(datagram[pos + 11 : pos + 13], "big")
                continue
            cid = datagram[pos + 1 : pos + 1 + cid_length] if first & 0x10 else None
            header = 1 + (cid_length if cid is not None else 0) + 2 + 2  # 16-bit seq and a length: our defaults
            found.append(cid)
            pos += header + int.from_bytes(datagram[pos + header - 2 : pos + header], "big")
    return found


def test_records_carry_the_cid_their_receiver_asked_for() -> None:
    """RFC 9147 §9 and its example: once protected, the client's records carry the
    server's CID; the server's carry none (the client asked for an empty one)."""
    link = _link()
    assert link.server is not None
    (server_cid,) = link.server.own_connection_ids
    assert link.client.peer_connection_id == server_cid and link.client.own_connection_ids == ()
    assert set(_cids_in(link.log["c2s"], len(server_cid))) == {server_cid}
    assert set(_cids_in(link.log["s2c"], 0)) == {None}


def test_both_directions_with_cids_and_data() -> None:
    link = _link(client_dtls_connection_id_length=3, server_dtls_connection_id_length=5)
    assert link.server is not None
    (client_cid,), (server_cid,) = link.client.own_connection_ids, link.server.own_connection_ids
    assert (len(client_cid), len(server_cid)) == (3, 5)
    link.client.send(b"up")
    link.server.send(b"down")
    link.run()
    assert link.received("server") == [b"up"] and link.received("client") == [b"down"]
    assert set(_cids_in(link.log["c2s"], 5)) == {server_cid}
    assert set(_cids_in(link.log["s2c"], 3)) == {client_cid}


def test_new_cids_are_requested_issued_acknowledged_and_used() -> None:
    """RequestConnectionId answered with NewConnectionId (cid_spare); the client
    moves to a spare (§9: "a new CID whenever sending on a new path"); the
    server opens records under it; both messages were acknowledged."""
    link = _link()
    assert link.server is not None
    (first,) = link.server.own_connection_ids
    link.client.request_connection_ids(2)
    link.run()
    ids = link.client.connection_ids
    assert ids is not None and len(ids.peer_spares) == 2
    assert set(link.server.own_connection_ids) == {first, *ids.peer_spares}
    assert not link.client.messages_in_flight and not link.server.messages_in_flight
    spare = ids.peer_spares[0]
    assert link.client.next_connection_id() and link.client.peer_connection_id == spare
    sent_before = len(link.log["c2s"])
    link.client.send(b"on a new path")
    link.run()
    assert link.received("server")[-1] == b"on a new path"
    assert set(_cids_in(link.log["c2s"][sent_before:], len(first))) == {spare}


def test_a_server_switches_its_client_to_a_new_cid_at_once() -> None:
    link = _link()
    assert link.server is not None
    (fresh,) = link.server.issue_connection_ids(1, immediate=True)
    link.run()
    assert link.client.peer_connection_id == fresh
    sent_before = len(link.log["c2s"])
    link.client.send(b"x")
    link.run()
    assert link.received("server")[-1] == b"x"
    assert set(_cids_in(link.log["c2s"][sent_before:], len(fresh))) == {fresh}


def test_cid_messages_are_retransmitted_until_acknowledged() -> None:
    link = _link()
    assert link.server is not None
    lost: list[int] = []

    def drop_first(direction: str, datagram: bytes, index: int) -> bool:
        if direction == "c2s" and not lost:
            lost.append(index)
            return True
        return False

    link.drop = drop_first
    link.client.request_connection_ids(1)
    link.run()
    ids = link.client.connection_ids
    assert lost and ids is not None and len(ids.peer_spares) == 1


def test_cid_messages_without_negotiated_cids_are_unexpected_message() -> None:
    """RFC 9147 §9: "MUST abort the connection with an unexpected_message alert"."""
    link = _link(client_dtls_connection_ids=False)
    assert link.server is not None and link.client.connection_ids is None
    with pytest.raises(LocalProtocolError):
        link.client.request_connection_ids(1)
    link.client.queue_handshake(encode_handshake(HandshakeType.request_connection_id, RequestConnectionId(1).encode()))
    link.run(lambda: link.server is not None and link.server.is_closed)
    closed = [e for e in link.server_events if isinstance(e, ConnectionClosed)]
    assert closed and closed[0].alert == AlertDescription.unexpected_message
