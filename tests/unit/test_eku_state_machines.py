"""Table-driven tests of the EKU state machines of each profile's appendix.

The subject is a longtls client brought into one state of the machine
(START/IDLE, WAIT_RESP, the responder's WAIT_I_FIN / WAIT_I_NKU, the
four-message initiator's WAIT_R_NKU); the server then sends one message, and
the table says where the subject must go or which alert it must send.
"""

from __future__ import annotations

import pytest

from helpers.pair import Pair, configs, connect
from longtls.constants import AlertDescription, HandshakeType, NamedGroup
from longtls.errors import RemoteProtocolError
from longtls.handshake.eku import Role
from longtls.handshake.eku_profiles import PROFILES
from longtls.wire.messages import KeyUpdate, encode_handshake

UNEXPECTED = AlertDescription.unexpected_message
ILLEGAL = AlertDescription.illegal_parameter


def _setup(profile: str, state: str) -> Pair:
    c, s, _ = configs(
        client_groups=[NamedGroup.x25519], client_key_share_groups=[NamedGroup.x25519],
        client_eku_profile=profile, server_eku_profile=profile,
    )
    pair = connect(c, s)
    client, server = pair.client, pair.server
    if state == "wait_resp":
        client.extended_key_update()
        client.data_to_send()  # the request is lost in flight: the server never sees it
    elif state == "wait_finish":
        server.extended_key_update()
        client.receive_data(server.data_to_send())
        client.data_to_send()  # our response is not delivered
    elif state == "wait_peer_finish":
        client.extended_key_update()
        server.receive_data(client.data_to_send())
        # the server's response reaches us; we send NKU and wait for the server's
        server_out = server.data_to_send()
        client.receive_data(server_out)
        client.data_to_send()
    assert client.eku is not None
    expected_role = {
        "idle": Role.IDLE, "wait_resp": Role.WAIT_RESP, "wait_finish": Role.WAIT_FINISH,
        "wait_peer_finish": Role.WAIT_PEER_FINISH,
    }[state]
    assert client.eku.role is expected_role
    return pair


def _message(pair: Pair, profile: str, what: str) -> bytes:
    codec = PROFILES[profile].codec
    client_eku = pair.client.eku
    assert client_eku is not None
    group = client_eku.group
    if what == "key_update":
        return encode_handshake(HandshakeType.key_update, KeyUpdate(0).encode())
    if what == "unknown_subtype":
        return bytes([27, 0, 0, 1, 9])
    if what == "wrong_group":
        share = group.generate()
        return codec.request(NamedGroup.secp256r1, share.public).encode()
    if what == "finish":
        return codec.finish().encode()
    if what == "response":
        return codec.response(group.code, group.generate().public).encode()
    if what.startswith("request"):
        ours = client_eku._share.public if client_eku._share is not None else None
        if what == "request_equal":
            assert ours is not None
            return codec.request(group.code, ours).encode()
        while True:
            share = group.generate().public
            if what == "request" or ours is None:
                break
            if (what == "request_lower") == (share < ours):
                break
        return codec.request(group.code, share).encode()
    raise AssertionError(what)


def _outcome(profile: str, state: str, what: str) -> Role | AlertDescription | None:
    """The table: what each profile's appendix says happens; None = row not applicable."""
    three = PROFILES[profile].three_messages
    draft05 = PROFILES[profile].separate_types
    table: dict[tuple[str, str], Role | AlertDescription | None] = {
        ("idle", "request"): Role.WAIT_FINISH,
        ("idle", "response"): UNEXPECTED,
        ("idle", "finish"): UNEXPECTED,
        ("idle", "unknown_subtype"): None if draft05 else UNEXPECTED,
        ("idle", "wrong_group"): ILLEGAL,
        ("idle", "key_update"): UNEXPECTED,
        ("wait_resp", "request_lower"): Role.WAIT_RESP,
        ("wait_resp", "request_higher"): Role.WAIT_FINISH,
        ("wait_resp", "request_equal"): UNEXPECTED,
        ("wait_resp", "finish"): UNEXPECTED,
        ("wait_resp", "key_update"): UNEXPECTED,
        ("wait_finish", "request"): UNEXPECTED,
        ("wait_finish", "response"): UNEXPECTED,
        ("wait_finish", "finish"): Role.IDLE,
        ("wait_finish", "key_update"): UNEXPECTED,
        ("wait_peer_finish", "request"): None if three else UNEXPECTED,
        ("wait_peer_finish", "response"): None if three else UNEXPECTED,
        ("wait_peer_finish", "finish"): None if three else Role.IDLE,
    }
    return table[(state, what)]


ROWS = [
    (profile, state, what)
    for profile in PROFILES
    for state, what in [
        ("idle", "request"), ("idle", "response"), ("idle", "finish"),
        ("idle", "unknown_subtype"), ("idle", "wrong_group"), ("idle", "key_update"),
        ("wait_resp", "request_lower"), ("wait_resp", "request_higher"),
        ("wait_resp", "request_equal"), ("wait_resp", "finish"), ("wait_resp", "key_update"),
        ("wait_finish", "request"), ("wait_finish", "response"), ("wait_finish", "finish"),
        ("wait_finish", "key_update"),
        ("wait_peer_finish", "request"), ("wait_peer_finish", "response"),
        ("wait_peer_finish", "finish"),
    ]
    if _outcome(profile, state, what) is not None
]


@pytest.mark.parametrize(("profile", "state", "what"), ROWS)
def test_transition(profile: str, state: str, what: str) -> None:
    if state == "wait_peer_finish" and PROFILES[profile].three_messages:
        pytest.fail("row should have been filtered")  # pragma: no cover
    pair = _setup(profile, state)
    expected = _outcome(profile, state, what)
    message = _message(pair, profile, what)
    pair.server.queue_handshake(message)
    wire = pair.server.data_to_send()
    client = pair.client
    if isinstance(expected, AlertDescription):
        with pytest.raises(RemoteProtocolError) as info:
            client.receive_data(wire)
        assert info.value.alert == expected
        assert client.is_closed
    else:
        client.receive_data(wire)
        assert client.eku is not None and client.eku.role is expected
        assert not client.is_closed


@pytest.mark.parametrize("profile", list(PROFILES))
def test_lower_crossed_request_in_draft05_is_answered_clashed(
    profile: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pair = _setup(profile, "wait_resp")
    sent: list[bytes] = []
    original = pair.client.queue_handshake
    monkeypatch.setattr(pair.client, "queue_handshake", lambda m: (sent.append(m), original(m)))
    pair.server.queue_handshake(_message(pair, profile, "request_lower"))
    pair.client.receive_data(pair.server.data_to_send())
    if PROFILES[profile].separate_types:
        # draft-05 §4: ExtendedKeyUpdateResponse with status clashed (3), no key share.
        assert sent == [bytes([HandshakeType.extended_key_update_response, 0, 0, 1, 3])]
    else:
        assert sent == []  # draft-13 / draft-2025-10: silently ignored
