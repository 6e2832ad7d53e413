"""Extended Key Update (draft-13 profile) between two longtls peers in memory."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from tests.vectors.rfc8448 import derive_secret, expand_label, hkdf_extract

from helpers.pair import Pair, configs, connect
from longtls.constants import AlertDescription, HandshakeType, NamedGroup
from longtls.errors import LocalProtocolError, RemoteProtocolError
from longtls.events import (
    ConnectionClosed,
    ExporterUpdated,
    HandshakeComplete,
    KeyUpdateCompleted,
    KeyUpdateStarted,
    SessionTicketReceived,
)
from longtls.wire.messages import KeyUpdate, encode_handshake

GROUPS = [NamedGroup.x25519, NamedGroup.secp256r1, NamedGroup.X25519MLKEM768, NamedGroup.MLKEM768]


def _pair(group: NamedGroup = NamedGroup.x25519, **kw: Any) -> Pair:
    c, s, _ = configs(client_groups=[group], client_key_share_groups=[group], **kw)
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


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.name)
def test_updates_from_both_sides_while_data_flows(group: NamedGroup) -> None:
    pair = _pair(group)
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


def _spy(pair: Pair) -> dict[str, Any]:
    """Record the EKU messages each side sends and the responder's shared secret."""
    seen: dict[str, Any] = {"messages": [], "shared": []}
    for conn in (pair.client, pair.server):
        original_queue = conn.queue_handshake

        def queue(message: bytes, _orig: Any = original_queue) -> None:
            if message[0] == HandshakeType.extended_key_update:
                seen["messages"].append(message)
            _orig(message)

        conn.queue_handshake = queue  # type: ignore[method-assign]
        assert conn.eku is not None
        group = conn.eku.group
        if getattr(group, "_spied", False):
            continue  # the Group object is shared by both ends
        original_respond = group.respond
        group._spied = True  # type: ignore[attr-defined]

        def respond(peer: bytes, ephemeral: Any = None, _orig: Any = original_respond) -> Any:
            out = _orig(peer, ephemeral)
            seen["shared"].append(out[1])
            return out

        group.respond = respond  # type: ignore[method-assign]
    return seen


def test_secrets_match_the_spec_formulas() -> None:
    """draft-13 §6, computed here with HKDF directly (not longtls' key schedule)."""
    logged: dict[str, bytes] = {}

    def log(line: str) -> None:
        label, _rand, secret = line.split()
        logged[label] = bytes.fromhex(secret)

    pair = _pair(client_keylog=log)
    spy = _spy(pair)
    secrets = pair.client.handshake.secrets
    assert secrets is not None
    main0 = secrets.main_secret
    th0 = secrets.client_finished_hash
    for generation in (1, 2):
        spy["messages"].clear()
        spy["shared"].clear()
        (pair.client if generation == 1 else pair.server).extended_key_update()
        pair.pump()
        request, response, finish = spy["messages"]
        assert request[4] == 0 and response[4] == 1 and finish == bytes([27, 0, 0, 1, 2])
        (shared,) = spy["shared"]
        salt = derive_secret("sha256", main0, "derived", b"")
        main1 = hkdf_extract("sha256", salt, shared)
        th1 = hashlib.sha256(th0 + request + response).digest()
        c_ap = expand_label("sha256", main1, "c ap traffic", th1, 32)
        s_ap = expand_label("sha256", main1, "s ap traffic", th1, 32)
        exp = expand_label("sha256", main1, "exp master", th1, 32)
        assert logged[f"CLIENT_TRAFFIC_SECRET_{generation}"] == c_ap
        assert logged[f"SERVER_TRAFFIC_SECRET_{generation}"] == s_ap
        assert logged[f"EXPORTER_SECRET_{generation}"] == exp
        assert pair.client._write_secret == c_ap and pair.server._write_secret == s_ap
        main0, th0 = main1, th1


def test_exporters_follow_the_generation() -> None:
    pair = _pair()
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


def test_crossed_requests_resolve_to_one_update() -> None:
    pair = _pair()
    pair.client.extended_key_update()
    pair.server.extended_key_update()
    pair.pump()
    assert [e.generation for e in _completed(pair.client_events)] == [1]
    assert [e.generation for e in _completed(pair.server_events)] == [1]
    assert _completed(pair.client_events)[0].initiator == _completed(pair.server_events)[0].initiator
    pair.client.send(b"still in step")
    pair.pump()
    assert pair.received("server") == b"still in step"


def test_crossed_requests_with_equal_shares_are_refused() -> None:
    pair = _pair()
    fixed = bytes(range(32))
    for conn in (pair.client, pair.server):
        assert conn.eku is not None
        group = conn.eku.group
        group.generate = lambda g=group: g.from_private_bytes(fixed)  # type: ignore[method-assign]
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


def test_new_request_while_responder_waits_for_finish() -> None:
    pair = _pair()
    pair.client.extended_key_update()
    pair.server.receive_data(pair.client.data_to_send())  # server answered, waits for finish
    assert pair.client.eku is not None
    share = pair.client.eku.group.generate()
    from longtls.eku import EKUType, encode_eku

    err = _inject(pair, encode_eku(EKUType.key_update_request, NamedGroup.x25519, share.public))
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
