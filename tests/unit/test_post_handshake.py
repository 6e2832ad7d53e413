"""Post-handshake protocols as peers, routed and kept apart by one arbiter (handshake/post_handshake.py)."""

from __future__ import annotations

import pytest

from helpers.pair import Pair, configs, connect
from helpers.pki import make_ca, make_leaf
from longtls.config import Configuration
from longtls.constants import AlertDescription, HandshakeType, KeyUpdateRequest
from longtls.errors import LocalProtocolError, RemoteProtocolError
from longtls.events import ConnectionClosed, KeyUpdated, PeerAuthenticated
from longtls.handshake.eku import Role
from longtls.handshake.post_auth import AuthenticationRequester, AuthenticationResponder
from longtls.handshake.post_handshake import PostHandshakeArbiter
from longtls.wire.messages import Certificate, CertificateRequest, KeyUpdate, encode_handshake

CONFIG = Configuration(is_client=True)


class _Engine:
    complete = True
    eku_negotiated = False


class _Peer:
    in_progress = False

    def __init__(self, *types: int) -> None:
        self.message_types = frozenset(types)
        self.handled: list[int] = []

    def handle(self, msg_type: int, body: bytes, raw: bytes) -> None:
        self.handled.append(msg_type)

    def request(self) -> None:
        raise AssertionError("not asked in these tests")


def _arbiter(engine: _Engine | None = None) -> tuple[PostHandshakeArbiter, _Peer]:
    client_auth = _Peer(HandshakeType.certificate_request)
    return PostHandshakeArbiter(engine or _Engine(), CONFIG, client_auth), client_auth


def test_each_message_type_has_one_owner() -> None:
    arbiter, _ = _arbiter()
    key_update = _Peer(HandshakeType.key_update)
    arbiter.register(key_update)
    with pytest.raises(ValueError):
        arbiter.register(_Peer(HandshakeType.key_update))
    with pytest.raises(ValueError):  # client authentication owns certificate_request
        arbiter.register(_Peer(HandshakeType.certificate_request))
    assert arbiter.dispatch(HandshakeType.key_update, b"\x00", b"")
    assert key_update.handled == [HandshakeType.key_update]
    assert not arbiter.dispatch(HandshakeType.new_session_ticket, b"", b"")  # the engine's


def test_client_authentication_messages_reach_their_protocol() -> None:
    arbiter, client_auth = _arbiter()
    assert arbiter.dispatch(HandshakeType.certificate_request, b"", b"")
    assert client_auth.handled == [HandshakeType.certificate_request]


def test_classic_key_update_is_refused_once_eku_is_negotiated() -> None:
    """EKU draft-13 §4: the peer's KeyUpdate is unexpected_message; ours is a local error."""
    engine = _Engine()
    engine.eku_negotiated = True
    arbiter, _ = _arbiter(engine)
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


def _pha_pair() -> Pair:
    ca = make_ca("ecdsa-p256")
    client_leaf = make_leaf(ca, "ecdsa-p256", client=True)
    c, s, _ = configs(ca=ca, client_post_handshake_auth=True)
    c.certificate_chain, c.private_key = client_leaf.chain, client_leaf.key
    return connect(c, s)


def test_client_authentication_is_its_own_protocol_on_each_side() -> None:
    """handshake/post_auth.py: the server's requester owns the client's answer,
    the client's responder owns CertificateRequest; both register with the arbiter."""
    pair = _pha_pair()
    requester, responder = pair.server.post_handshake.client_auth, pair.client.post_handshake.client_auth
    assert isinstance(requester, AuthenticationRequester) and isinstance(responder, AuthenticationResponder)
    assert HandshakeType.certificate_verify in requester.message_types
    assert responder.message_types == {HandshakeType.certificate_request}
    with pytest.raises(LocalProtocolError):
        pair.client.request_client_authentication()


def test_each_request_has_its_own_context_and_runs_one_at_a_time() -> None:
    """RFC 9846 §4.6.2: a fresh context per request; a second request while one
    is open is refused locally; after it, another can follow."""
    pair = _pha_pair()
    responder = pair.client.post_handshake.client_auth
    contexts: list[bytes] = []
    answer = responder.handle

    def seen(msg_type: int, body: bytes, raw: bytes) -> None:
        contexts.append(CertificateRequest.decode(body).certificate_request_context)
        answer(msg_type, body, raw)

    responder.handle = seen  # type: ignore[method-assign]
    for _ in range(3):
        pair.server.request_client_authentication()
        with pytest.raises(LocalProtocolError):
            pair.server.request_client_authentication()
        assert pair.server.post_handshake.client_auth_in_progress
        pair.pump()
        assert not pair.server.post_handshake.client_auth_in_progress
    assert len(set(contexts)) == 3 and all(len(c) == 16 for c in contexts)
    authenticated = [e for e in pair.server_events if isinstance(e, PeerAuthenticated)]
    assert len(authenticated) == 3


def test_unsolicited_client_certificate_is_unexpected_message() -> None:
    """A Certificate the server never asked for, after the handshake."""
    pair = _pha_pair()
    pair.client.queue_handshake(encode_handshake(HandshakeType.certificate, Certificate(b"x", ()).encode()))
    pair.client._flush_handshake()
    with pytest.raises(RemoteProtocolError) as info:
        pair.pump()
    assert info.value.alert == AlertDescription.unexpected_message
    closed = [e for e in pair.server.events() if isinstance(e, ConnectionClosed)]
    assert closed and closed[0].alert == AlertDescription.unexpected_message and not closed[0].by_peer



class _WaitingEKU:
    """An EKU initiator over DTLS waiting for the ACK of its last message."""

    message_types = frozenset({HandshakeType.extended_key_update})

    def __init__(self) -> None:
        self.role = Role.WAIT_ACK
        self.completions = 0

    @property
    def in_progress(self) -> bool:
        return self.role is not Role.IDLE

    def handle(self, msg_type: int, body: bytes, raw: bytes) -> None: ...

    def respond_deferred(self) -> None: ...

    def start(self, timeout: float | None = None) -> None: ...

    def peer_completed(self) -> None:
        self.completions += 1
        self.role = Role.IDLE


def test_a_certificate_request_stands_for_the_lost_ack_of_an_eku_over_dtls() -> None:
    """docs/eku-over-dtls.md: a server starts client authentication only after
    completing the update (draft-13 §8.3), so its CertificateRequest proves our
    last EKU message arrived even if the ACK was lost; our own request still waits."""
    arbiter, _ = _arbiter()
    eku = _WaitingEKU()
    arbiter.register_eku(eku)
    with pytest.raises(LocalProtocolError):
        arbiter.check_client_auth_may_start(requested_by_peer=False)
    assert eku.completions == 0
    arbiter.check_client_auth_may_start(requested_by_peer=True)
    assert eku.completions == 1 and not eku.in_progress
