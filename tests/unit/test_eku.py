"""Extended Key Update (draft-13 profile) between two longtls peers in memory."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from tests.vectors.rfc8448 import derive_secret, expand_label, hkdf_extract

from helpers.pair import Pair, configs, connect
from longtls.connection import Connection
from longtls.constants import AlertDescription, EKUProfileName, HandshakeType, NamedGroup
from longtls.errors import LocalProtocolError, RemoteProtocolError
from longtls.events import (
    ConnectionClosed,
    ExporterUpdated,
    HandshakeComplete,
    KeyUpdateCompleted,
    KeyUpdateRejected,
    KeyUpdateStarted,
    SessionTicketReceived,
)
from longtls.handshake.eku_profiles import PROFILES
from longtls.wire.messages import KeyUpdate, encode_handshake

GROUPS = [NamedGroup.x25519, NamedGroup.secp256r1, NamedGroup.X25519MLKEM768, NamedGroup.MLKEM768]
# Issue 9's groups (not offered by default; both peers list them, docs/groups-and-suites.md).
NEW_GROUPS = [
    NamedGroup.secp521r1, NamedGroup.x448, NamedGroup.brainpoolP256r1tls13,
    NamedGroup.brainpoolP384r1tls13, NamedGroup.brainpoolP512r1tls13, NamedGroup.ffdhe2048,
    NamedGroup.ffdhe3072, NamedGroup.ffdhe4096, NamedGroup.ffdhe6144, NamedGroup.ffdhe8192,
]
PROFILE_NAMES = list(PROFILES)


def _pair(group: NamedGroup = NamedGroup.x25519, profile: str = "draft-13", **kw: Any) -> Pair:
    c, s, _ = configs(
        client_groups=[group], client_key_share_groups=[group], server_groups=[group],
        client_eku_profile=profile, server_eku_profile=profile, **kw,
    )
    return connect(c, s)


def _completed(events: list[Any]) -> list[KeyUpdateCompleted]:
    return [e for e in events if isinstance(e, KeyUpdateCompleted)]


def test_negotiated_by_default_and_tickets_disabled() -> None:
    pair = _pair()
    for events in (pair.client_events, pair.server_events):
        (done,) = [e for e in events if isinstance(e, HandshakeComplete)]
        assert done.extended_key_update
    # draft-13 §6: ticket resumption is disabled when EKU is negotiated.
    assert not [e for e in pair.client_events if isinstance(e, SessionTicketReceived)]


@pytest.mark.parametrize("side", ["client", "server"])
def test_not_negotiated_when_one_side_declines(side: str) -> None:
    pair = _pair(**{f"{side}_extended_key_update": False})
    (done,) = [e for e in pair.client_events if isinstance(e, HandshakeComplete)]
    assert not done.extended_key_update
    with pytest.raises(LocalProtocolError):
        pair.client.extended_key_update()
    pair.client.update_keys()  # the standard KeyUpdate keeps working
    pair.client.send(b"ok")
    pair.pump()
    assert pair.received("server") == b"ok"


@pytest.mark.parametrize("profile", PROFILE_NAMES)
@pytest.mark.parametrize("group", GROUPS + NEW_GROUPS, ids=lambda g: g.name)
def test_updates_from_both_sides_while_data_flows(group: NamedGroup, profile: str) -> None:
    pair = _pair(group, profile)
    sent_c, sent_s = bytearray(), bytearray()
    for i in range(20):
        initiator = pair.client if i % 2 == 0 else pair.server
        initiator.extended_key_update()
        for _ in range(3):  # data before, during and after the exchange
            chunk = bytes([i]) * (1000 + i)
            pair.client.send(chunk)
            sent_c += chunk
            pair.server.send(chunk[::-1])
            sent_s += chunk[::-1]
            if _ == 0:
                pair.step()
            else:
                pair.pump()
    pair.pump()
    assert pair.received("server") == bytes(sent_c)
    assert pair.received("client") == bytes(sent_s)
    client_done, server_done = _completed(pair.client_events), _completed(pair.server_events)
    assert [e.generation for e in client_done] == list(range(1, 21))
    assert [e.generation for e in server_done] == list(range(1, 21))
    assert [e.initiator for e in client_done] == ["client", "server"] * 10
    assert all(e.group == group for e in client_done)
    assert pair.client.key_generation == pair.server.key_generation == 20


def _spy(pair: Pair, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Record the EKU messages each side sends and the responder's shared secret."""
    seen: dict[str, Any] = {"messages": [], "shared": []}
    for conn in (pair.client, pair.server):
        original_queue = conn.queue_handshake

        def queue(message: bytes, _orig: Any = original_queue) -> None:
            if message[0] in (27, 28, 29):
                seen["messages"].append(message)
            _orig(message)

        monkeypatch.setattr(conn, "queue_handshake", queue)
    assert pair.client.eku is not None
    group = pair.client.eku.group  # one Group object serves both ends
    original_respond = group.respond

    def respond(peer: bytes, ephemeral: Any = None) -> Any:
        out = original_respond(peer, ephemeral)
        seen["shared"].append(out[1])
        return out

    monkeypatch.setattr(group, "respond", respond)
    return seen


LABELS = {
    "draft-13": ("derived", "c ap traffic", "s ap traffic", "exp master"),
    "draft-2025-10": ("key derived", "c ap traffic2", "s ap traffic2", "exp main2"),
    "draft-05": ("key derived", "c ap traffic2", "s ap traffic2", "exp master2"),
}


@pytest.mark.parametrize("profile", PROFILE_NAMES)
@pytest.mark.parametrize("group", [NamedGroup.x25519, *NEW_GROUPS], ids=lambda g: g.name)
def test_secrets_match_the_spec_formulas(
    group: NamedGroup, profile: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each text's derivation, computed here with HKDF directly (not longtls' key
    schedule): draft-13 §6 (chained transcript), draft-2025-10 §7, draft-05 §5."""
    logged: dict[str, bytes] = {}

    def log(line: str) -> None:
        label, _rand, secret = line.split()
        logged[label] = bytes.fromhex(secret)

    pair = _pair(group, profile=profile, client_keylog=log)
    spy = _spy(pair, monkeypatch)
    secrets = pair.client.handshake.secrets
    assert secrets is not None
    main0 = secrets.main_secret
    th0 = secrets.client_finished_hash
    derived, c_label, s_label, e_label = LABELS[profile]
    for generation in (1, 2):
        spy["messages"].clear()
        spy["shared"].clear()
        (pair.client if generation == 1 else pair.server).extended_key_update()
        pair.pump()
        request, response = spy["messages"][:2]
        finishes = spy["messages"][2:]
        assert len(finishes) == (1 if profile == "draft-13" else 2)
        (shared,) = spy["shared"]
        salt = derive_secret("sha256", main0, derived, b"")
        main1 = hkdf_extract("sha256", salt, shared)
        if profile == "draft-13":
            context = hashlib.sha256(th0 + request + response).digest()
        else:
            context = hashlib.sha256(request + response).digest()
        c_ap = expand_label("sha256", main1, c_label, context, 32)
        s_ap = expand_label("sha256", main1, s_label, context, 32)
        exp = expand_label("sha256", main1, e_label, context, 32)
        assert logged[f"CLIENT_TRAFFIC_SECRET_{generation}"] == c_ap
        assert logged[f"SERVER_TRAFFIC_SECRET_{generation}"] == s_ap
        if profile == "draft-05":
            assert f"EXPORTER_SECRET_{generation}" not in logged
        else:
            assert logged[f"EXPORTER_SECRET_{generation}"] == exp
        assert pair.client._records.write_secret == c_ap and pair.server._records.write_secret == s_ap
        assert pair.client.eku is not None and pair.client.eku.exporter_secret == exp
        main0 = main1
        if profile == "draft-13":
            th0 = context


def test_exporters_follow_the_generation() -> None:
    pair = _pair()  # draft-13: generation 0 of the epoch-aware exporter is "exporter eku"
    before = pair.client.export_keying_material("EXPORTER-x", b"", 32)
    epoch0 = pair.client.export_epoch_keying_material("EXPORTER-x", b"", 32)
    assert epoch0 != before  # "exporter eku" is distinct from the TLS exporter (§9.1)
    assert epoch0 == pair.server.export_epoch_keying_material("EXPORTER-x", b"", 32)
    pair.server.extended_key_update()
    pair.pump()
    assert [e.generation for e in pair.client_events if isinstance(e, ExporterUpdated)] == [1]
    after = pair.client.export_keying_material("EXPORTER-x", b"", 32)
    assert after != before
    assert after == pair.server.export_keying_material("EXPORTER-x", b"", 32)
    assert pair.client.export_epoch_keying_material("EXPORTER-x", b"", 32, generation=1) == after
    assert pair.client.export_epoch_keying_material("EXPORTER-x", b"", 32, generation=0) == epoch0


@pytest.mark.parametrize("profile", PROFILE_NAMES)
def test_crossed_requests_resolve_to_one_update(profile: str) -> None:
    pair = _pair(profile=profile)
    pair.client.extended_key_update()
    pair.server.extended_key_update()
    pair.pump()
    assert [e.generation for e in _completed(pair.client_events)] == [1]
    assert [e.generation for e in _completed(pair.server_events)] == [1]
    assert _completed(pair.client_events)[0].initiator == _completed(pair.server_events)[0].initiator
    pair.client.send(b"still in step")
    pair.pump()
    assert pair.received("server") == b"still in step"


@pytest.mark.parametrize("profile", PROFILE_NAMES)
def test_crossed_requests_with_equal_shares_are_refused(
    profile: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pair = _pair(profile=profile)
    fixed = bytes(range(32))
    assert pair.client.eku is not None
    group = pair.client.eku.group
    monkeypatch.setattr(group, "generate", lambda: group.from_private_bytes(fixed))
    pair.client.extended_key_update()
    pair.server.extended_key_update()
    with pytest.raises(RemoteProtocolError) as info:
        pair.pump()
    assert info.value.alert == AlertDescription.unexpected_message


def test_classic_key_update_is_refused_once_eku_is_negotiated() -> None:
    pair = _pair()
    with pytest.raises(LocalProtocolError):
        pair.client.update_keys()
    # A peer that sends one anyway: forge it with the client's record protection.
    pair.client.queue_handshake(encode_handshake(HandshakeType.key_update, KeyUpdate(0).encode()))
    pair.client._flush_handshake()
    with pytest.raises(RemoteProtocolError) as info:
        pair.server.receive_data(pair.client.data_to_send())
    assert info.value.alert == AlertDescription.unexpected_message
    closed = next(e for e in pair.server.events() if isinstance(e, ConnectionClosed))
    assert closed.alert == AlertDescription.unexpected_message


def _inject(pair: Pair, message: bytes) -> RemoteProtocolError:
    pair.client.queue_handshake(message)
    with pytest.raises(RemoteProtocolError) as info:
        pair.server.receive_data(pair.client.data_to_send())
    return info.value


@pytest.mark.parametrize(
    ("message", "alert"),
    [
        (bytes([27, 0, 0, 1, 7]), AlertDescription.unexpected_message),  # unknown subtype
        (bytes([27, 0, 0, 1, 2]), AlertDescription.unexpected_message),  # finish out of place
        (bytes([27, 0, 0, 6, 1, 0, 0x1D, 0, 1, 9]), AlertDescription.unexpected_message),  # response, no request
        (bytes([27, 0, 0, 6, 0, 0, 0x17, 0, 1, 9]), AlertDescription.illegal_parameter),  # wrong group
        (bytes([27, 0, 0, 6, 0, 0, 0x1D, 0, 1, 9]), AlertDescription.illegal_parameter),  # bad x25519 share
        (bytes([27, 0, 0, 3, 0, 0, 0x1D]), AlertDescription.decode_error),  # truncated
    ],
)
def test_bad_eku_messages(message: bytes, alert: AlertDescription) -> None:
    assert _inject(_pair(), message).alert == alert


@pytest.mark.parametrize("share_length", [32, 1184, 65535])  # x25519, an ML-KEM-768 key, the most a vector holds
def test_subtyped_messages_on_the_wire(share_length: int) -> None:
    """draft-13 §4: extended_key_update (27), uint24 length, subtype, then a
    KeyShareEntry (NamedGroup, key_exchange<1..2^16-1>); the finish is the
    subtype alone."""
    codec = PROFILES[EKUProfileName.draft_13].codec
    share = bytes(range(256)) * (share_length // 256) + bytes(share_length % 256)
    body_length = 5 + share_length
    for subtype, message in ((0, codec.request(0x11EC, share)), (1, codec.response(0x11EC, share))):
        assert message.encode() == bytes([
            27, body_length >> 16, (body_length >> 8) & 0xFF, body_length & 0xFF,
            subtype, 0x11, 0xEC, share_length >> 8, share_length & 0xFF,
        ]) + share
        assert (codec.request_message if subtype == 0 else codec.response_message)(0x11EC, share) == message.encode()
    assert codec.finish().encode() == codec.finish_message() == bytes([27, 0, 0, 1, 2])
    with pytest.raises(ValueError):
        codec.request(0x1D, bytes(65536)).encode()
    with pytest.raises(ValueError):
        codec.response_message(0x1D, bytes(65536))


def test_draft05_messages_on_the_wire() -> None:
    """draft-05 §4: one HandshakeType per message; the response starts with its status."""
    codec = PROFILES[EKUProfileName.draft_05].codec
    share = bytes(range(32))
    assert codec.request_message(0x1D, share) == bytes([
        HandshakeType.extended_key_update_request, 0, 0, 36, 0, 0x1D, 0, 32,
    ]) + share
    assert codec.response_message(0x1D, share) == bytes([
        HandshakeType.extended_key_update_response, 0, 0, 37, 0, 0, 0x1D, 0, 32,
    ]) + share
    assert codec.finish_message() == bytes([HandshakeType.new_key_update, 0, 0, 0])


@pytest.mark.parametrize("profile", PROFILE_NAMES)
def test_new_request_while_responder_waits_for_finish(profile: str) -> None:
    pair = _pair(profile=profile)
    pair.client.extended_key_update()
    pair.server.receive_data(pair.client.data_to_send())  # server answered, waits for finish
    assert pair.client.eku is not None
    share = pair.client.eku.group.generate()
    request = PROFILES[profile].codec.request(NamedGroup.x25519, share.public).encode()
    err = _inject(pair, request)
    assert err.alert == AlertDescription.unexpected_message


def test_rate_limit_defers_the_response() -> None:
    import time

    start = time.time()
    clock = [start]
    pair = _pair(server_eku_min_interval=10.0, server_now=lambda: clock[0], client_now=lambda: clock[0])
    pair.client.extended_key_update()
    pair.pump()
    pair.client.extended_key_update()
    pair.pump()
    # The second request is held back, not refused; data keeps flowing meanwhile.
    assert [e.generation for e in _completed(pair.client_events)] == [1]
    assert [e.generation for e in pair.server_events if isinstance(e, KeyUpdateStarted)] == [1, 2]
    pair.client.send(b"flowing")
    pair.pump()
    assert pair.received("server") == b"flowing"
    deadline = pair.server.get_timer()
    assert deadline == start + 10.0
    clock[0] = start + 10.0
    pair.server.handle_timer()
    pair.pump()
    assert [e.generation for e in _completed(pair.client_events)] == [1, 2]
    assert pair.server.get_timer() is None


def _clocked_pair(profile: str, **kw: Any) -> tuple[Pair, list[float]]:
    import time

    clock = [time.time()]
    pair = _pair(profile=profile, server_now=lambda: clock[0], client_now=lambda: clock[0], **kw)
    return pair, clock


def test_rate_limit_defers_in_draft_2025_10() -> None:
    pair, clock = _clocked_pair("draft-2025-10", server_eku_min_interval=5.0)
    pair.client.extended_key_update()
    pair.pump()
    pair.client.extended_key_update()
    pair.pump()
    assert [e.generation for e in _completed(pair.client_events)] == [1]
    clock[0] += 5.0
    pair.server.handle_timer()
    pair.pump()
    assert [e.generation for e in _completed(pair.client_events)] == [1, 2]


def test_draft05_rate_limit_answers_retry_with_a_delay() -> None:
    pair, clock = _clocked_pair("draft-05", server_eku_min_interval=30.0)
    pair.client.extended_key_update()
    pair.pump()
    pair.client.extended_key_update()
    pair.pump()
    (rejected,) = [e for e in pair.client_events if isinstance(e, KeyUpdateRejected)]
    assert rejected.status == "retry" and rejected.retry_after == 30
    with pytest.raises(LocalProtocolError):
        pair.client.extended_key_update()  # draft-05 §4: not within the delay
    clock[0] += 30.0
    pair.client.extended_key_update()
    pair.pump()
    assert [e.generation for e in _completed(pair.client_events)] == [1, 2]


def test_draft05_rejected_and_extended_key_update_required() -> None:
    pair = _pair(profile="draft-05", server_eku_max_peer_updates=1, client_eku_required=True)
    pair.client.extended_key_update()
    pair.pump()
    pair.client.extended_key_update()
    with pytest.raises(RemoteProtocolError) as info:
        pair.pump()
    assert info.value.alert == AlertDescription.extended_key_update_required
    pair.client_events.extend(pair.client.events())
    (rejected,) = [e for e in pair.client_events if isinstance(e, KeyUpdateRejected)]
    assert rejected.status == "rejected"
    pair.server.receive_data(pair.client.data_to_send())
    closed = [e for e in pair.server.events() if isinstance(e, ConnectionClosed)]
    assert closed[0].alert == AlertDescription.extended_key_update_required


@pytest.mark.parametrize(
    ("message", "alert"),
    [
        (bytes([28, 0, 0, 1, 9]), AlertDescription.illegal_parameter),  # unknown status
        (bytes([28, 0, 0, 1, 0]), AlertDescription.decode_error),  # accepted without a share
        (bytes([29, 0, 0, 0]), AlertDescription.unexpected_message),  # NewKeyUpdate out of place
        (bytes([28, 0, 0, 1, 3]), AlertDescription.unexpected_message),  # clashed, no request
    ],
)
def test_bad_draft05_messages(message: bytes, alert: AlertDescription) -> None:
    assert _inject(_pair(profile="draft-05"), message).alert == alert


@pytest.mark.parametrize("profile", ["draft-2025-10", "draft-05"])
def test_older_profiles_invalidate_tickets_issued_before_an_update(profile: str) -> None:
    from longtls.config import Configuration

    c, s, _ = configs(client_eku_profile=profile, server_eku_profile=profile)
    first = connect(c, s)
    old = [e.ticket for e in first.client_events if isinstance(e, SessionTicketReceived)]
    assert len(old) == 2
    first.client.extended_key_update()
    first.pump()
    new = [e.ticket for e in first.client_events if isinstance(e, SessionTicketReceived)][2:]
    assert len(new) == 2  # fresh tickets from the new resumption secret
    stale = connect(Configuration(**{**c.__dict__, "session_ticket": old[0]}), s)
    assert not next(e for e in stale.client_events if isinstance(e, HandshakeComplete)).resumed
    fresh = connect(Configuration(**{**c.__dict__, "session_ticket": new[0]}), s)
    assert next(e for e in fresh.client_events if isinstance(e, HandshakeComplete)).resumed


def test_eku_message_before_the_peer_finished_is_unexpected() -> None:
    """draft-13 §4: an ExtendedKeyUpdate before its sender's Finished is
    unexpected_message.  The client sends one under its handshake key where
    its Finished belongs."""
    from longtls.constants import ContentType
    from longtls.crypto.suites import suite_info
    from longtls.record.tls import RecordProtection

    logged: dict[str, bytes] = {}

    def log(line: str) -> None:
        label, _rand, secret = line.split()
        logged[label] = bytes.fromhex(secret)

    c, s, _ = configs(client_keylog=log)
    pair = Pair(Connection(c), Connection(s))
    pair.client.start_handshake()
    pair.server.receive_data(pair.client.data_to_send())
    pair.client.receive_data(pair.server.data_to_send())
    pair.client.data_to_send()  # the client's real Finished never arrives
    assert pair.server.handshake.suite is not None
    suite = suite_info(pair.server.handshake.suite.suite)
    sealer = RecordProtection(suite, logged["CLIENT_HANDSHAKE_TRAFFIC_SECRET"])
    request = PROFILES[EKUProfileName.draft_13].codec.request(NamedGroup.X25519MLKEM768, b"\x01").encode()
    with pytest.raises(RemoteProtocolError) as info:
        pair.server.receive_data(sealer.seal(ContentType.HANDSHAKE, request))
    assert info.value.alert == AlertDescription.unexpected_message


@pytest.mark.parametrize("profile", PROFILE_NAMES)
def test_post_handshake_auth_after_and_across_updates(profile: str) -> None:
    from helpers.pki import make_ca, make_leaf
    from longtls.events import PeerAuthenticated

    ca = make_ca("ecdsa-p256")
    leaf = make_leaf(ca, "ecdsa-p256", client=True)
    c, s, _ = configs(ca=ca, client_post_handshake_auth=True, client_eku_profile=profile,
                      server_eku_profile=profile)
    c.certificate_chain, c.private_key = leaf.chain, leaf.key
    pair = connect(c, s)
    pair.client.extended_key_update()
    pair.pump()
    # After an update (draft-13 §8.1: the context starts from transcript_hash_N+1).
    pair.server.request_client_authentication()
    pair.pump()
    assert len([e for e in pair.server_events if isinstance(e, PeerAuthenticated)]) == 1
    # Crossing (§8.3): the client's request meets the server's CertificateRequest;
    # the server answers the update only once authentication completed.
    pair.server.request_client_authentication()
    pair.client.extended_key_update()
    with pytest.raises(LocalProtocolError):
        pair.server.extended_key_update()  # no EKU while client authentication runs
    pair.pump()
    assert len([e for e in pair.server_events if isinstance(e, PeerAuthenticated)]) == 2
    if profile == "draft-05":
        # draft-05 has a status for "not now": retry after a delay.
        (retry,) = [e for e in pair.client_events if isinstance(e, KeyUpdateRejected)]
        assert retry.status == "retry"
        assert [e.generation for e in _completed(pair.client_events)] == [1]
    else:
        assert [e.generation for e in _completed(pair.client_events)] == [1, 2]
    pair.client.send(b"after both")
    pair.pump()
    assert pair.received("server") == b"after both"


@pytest.mark.parametrize("eku", [True, False])
def test_rekey_policy_by_bytes_and_records(eku: bool) -> None:
    pair = _pair(client_rekey_bytes=10_000, client_extended_key_update=eku)
    for _ in range(10):
        pair.client.send(b"b" * 4000)
        pair.pump()
    assert pair.received("server") == b"b" * 40_000
    if eku:
        assert len(_completed(pair.client_events)) == 3  # after 12k, 24k and 36k bytes
    else:
        from longtls.events import KeyUpdated

        sends = [e for e in pair.client_events if isinstance(e, KeyUpdated) and e.direction == "send"]
        assert len(sends) == 3
    records = _pair(client_rekey_records=5)
    for _ in range(12):
        records.client.send(b"r")
        records.pump()
    assert len(_completed(records.client_events)) == 2


def test_rekey_policy_by_interval() -> None:
    pair, clock = _clocked_pair("draft-13", client_rekey_interval=60.0)
    start = clock[0]
    assert pair.client.get_timer() == start + 60.0
    assert pair.server.get_timer() is None
    clock[0] += 59.0
    pair.client.handle_timer()
    assert not pair.client.data_to_send()
    clock[0] += 1.0
    pair.client.handle_timer()
    pair.pump()
    assert [e.generation for e in _completed(pair.client_events)] == [1]
    assert pair.client.get_timer() == clock[0] + 60.0


@pytest.mark.parametrize("profile", PROFILE_NAMES)
def test_nothing_is_sent_after_our_close_notify(profile: str) -> None:
    """RFC 9846 §6.1: after close_notify an endpoint sends nothing, not even EKU."""
    pair = _pair(profile=profile)
    pair.client.extended_key_update()
    out = pair.client.data_to_send()
    pair.client.close()
    out += pair.client.data_to_send()
    pair.server.receive_data(out)
    pair.client.receive_data(pair.server.data_to_send())
    assert pair.client.data_to_send() == b""
    # The other way round: the server closed, then the client asks for an
    # update.  The server could never answer it: refused at once, nothing sent.
    other = _pair(profile=profile)
    other.server.close()
    other.client.receive_data(other.server.data_to_send())
    with pytest.raises(LocalProtocolError, match="closed its side"):
        other.client.extended_key_update()
    assert other.client.data_to_send() == b""
    other.client.send(b"half-closed but flowing")
    other.server.receive_data(other.client.data_to_send())
    assert [e for e in other.server.events() if getattr(e, "data", None) == b"half-closed but flowing"]


def test_rekey_timer_waits_while_an_update_is_under_way() -> None:
    """The timer never asks to be called in the past while nothing can be done
    (an event loop would spin)."""
    pair, clock = _clocked_pair("draft-13", client_rekey_interval=10.0)
    pair.server.extended_key_update()  # the peer's update is in flight
    pair.client.receive_data(pair.server.data_to_send())
    answered_at = clock[0]
    clock[0] += 20.0
    assert pair.client.eku is not None and pair.client.eku.in_progress
    # Not the rekey time (in the past), only the deadline of the server's
    # finish: rekey_timeout (30 s) after our response.
    assert pair.client.get_timer() == answered_at + 30.0
    pair.server.receive_data(pair.client.data_to_send())  # finish
    pair.pump()
    assert pair.client.get_timer() == clock[0] + 10.0  # counted from the completed update


@pytest.mark.parametrize("profile", ["draft-13", "draft-2025-10"])
def test_max_peer_updates_holds_responses_back_for_good(profile: str) -> None:
    pair = _pair(profile=profile, server_eku_max_peer_updates=2)
    for _ in range(3):
        pair.client.extended_key_update()
        pair.pump()
    assert pair.server.key_generation == 2
    assert pair.server.get_timer() is None  # nothing to wait for: the third is never answered
    pair.client.send(b"old keys still work")
    pair.pump()
    assert pair.received("server") == b"old keys still work"


def test_abort_sends_the_chosen_alert() -> None:
    pair = _pair()
    pair.client.abort(AlertDescription.insufficient_security, "peer lacks a required feature")
    pair.server.receive_data(pair.client.data_to_send())
    closed = next(e for e in pair.server.events() if isinstance(e, ConnectionClosed))
    assert closed.alert == AlertDescription.insufficient_security and closed.by_peer
    assert pair.client.is_closed
