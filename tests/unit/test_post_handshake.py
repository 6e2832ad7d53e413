"""Post-handshake protocols as peers, routed and kept apart by one arbiter (handshake/post_handshake.py)."""

from __future__ import annotations

import pytest

from helpers.pair import configs, connect
from helpers.pki import make_ca, make_leaf
from longtls.config import Configuration
from longtls.constants import AlertDescription, HandshakeType, KeyUpdateRequest
from longtls.errors import LocalProtocolError, RemoteProtocolError
from longtls.events import KeyUpdated
from longtls.handshake.post_handshake import PostHandshakeArbiter
from longtls.wire.messages import KeyUpdate, encode_handshake

CONFIG = Configuration(is_client=True)


class _Engine:
    complete = True
    eku_negotiated = False
    post_handshake_auth_in_progress = False

    def __init__(self) -> None:
        self.handled: list[int] = []

    def handle(self, msg_type: int, body: bytes, raw: bytes) -> None:
        self.handled.append(msg_type)


class _Peer:
    in_progress = False

    def __init__(self, *types: int) -> None:
        self.message_types = frozenset(types)
        self.handled: list[int] = []

    def handle(self, msg_type: int, body: bytes, raw: bytes) -> None:
        self.handled.append(msg_type)


def test_each_message_type_has_one_owner() -> None:
    arbiter = PostHandshakeArbiter(_Engine(), CONFIG)
    key_update = _Peer(HandshakeType.key_update)
    arbiter.register(key_update)
    with pytest.raises(ValueError):
        arbiter.register(_Peer(HandshakeType.key_update))
    with pytest.raises(ValueError):  # client authentication owns certificate_request
        arbiter.register(_Peer(HandshakeType.certificate_request))
    assert arbiter.dispatch(HandshakeType.key_update, b"\x00", b"")
    assert key_update.handled == [HandshakeType.key_update]
    assert not arbiter.dispatch(HandshakeType.new_session_ticket, b"", b"")  # the engine's


def test_client_authentication_messages_reach_the_engine() -> None:
    engine = _Engine()
    arbiter = PostHandshakeArbiter(engine, CONFIG)
    assert arbiter.dispatch(HandshakeType.certificate_request, b"", b"")
    assert engine.handled == [HandshakeType.certificate_request]


def test_classic_key_update_is_refused_once_eku_is_negotiated() -> None:
    """EKU draft-13 §4: the peer's KeyUpdate is unexpected_message; ours is a local error."""
    engine = _Engine()
    engine.eku_negotiated = True
    arbiter = PostHandshakeArbiter(engine, CONFIG)
    key_update = _Peer(HandshakeType.key_update)
    arbiter.register(key_update)
    with pytest.raises(RemoteProtocolError) as info:
        arbiter.dispatch(HandshakeType.key_update, b"\x00", b"")
    assert info.value.alert == AlertDescription.unexpected_message and key_update.handled == []
    with pytest.raises(LocalProtocolError):
        arbiter.check_key_update(local=True)
    assert not arbiter.key_update_allowed


def test_no_eku_while_client_authentication_runs() -> None:
    """EKU draft-13 §8.3, from the arbiter, on a live pair: the server's own
    update waits until the client authentication it started is over."""
    ca = make_ca("ecdsa-p256")
    client_leaf = make_leaf(ca, "ecdsa-p256", client=True)
    c, s, _ = configs(ca=ca, client_post_handshake_auth=True)
    c.certificate_chain, c.private_key = client_leaf.chain, client_leaf.key
    pair = connect(c, s)
    pair.server.request_client_authentication()
    assert pair.server.post_handshake.client_auth_in_progress
    with pytest.raises(LocalProtocolError):
        pair.server.extended_key_update()
    pair.pump()
    assert not pair.server.post_handshake.client_auth_in_progress
    pair.server.extended_key_update()
    pair.pump()
    assert pair.server.key_generation == 1


def test_key_update_is_a_peer_protocol_of_its_own() -> None:
    """KeyUpdate (RFC 9846 §4.6.3) answers update_requested through the arbiter's routing."""
    pair = connect(*configs(client_extended_key_update=False, server_extended_key_update=False)[:2])
    assert pair.client.key_update is not None
    pair.client.update_keys(request_peer_update=True)
    assert pair.client.key_update_answer_owed
    pair.pump()
    assert not pair.client.key_update_answer_owed
    received = [e for e in pair.server_events if isinstance(e, KeyUpdated)]
    assert [(e.direction, e.requested_by_peer) for e in received] == [("receive", True), ("send", True)]
    # A KeyUpdate that does not end its record is unexpected_message (RFC 9846 §5.1).
    pair.client.queue_handshake(
        encode_handshake(HandshakeType.key_update, KeyUpdate(KeyUpdateRequest.update_not_requested).encode()) * 2
    )
    with pytest.raises(RemoteProtocolError) as info:
        pair.pump()
    assert info.value.alert == AlertDescription.unexpected_message
