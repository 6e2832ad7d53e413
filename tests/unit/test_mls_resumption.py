"""MLS-TLS resumption in memory (two-party profile §6, docs/mls-tls.md §8).

Two MLSConnections over an in-memory link that can lose what one side sent
(an interrupted connection): resumption by either original role, with and
without a ConnectionUpdate waiting for its EpochKeyUpdate (lost on either
side of the peer), crossed ResumptionRequests, data byte-exact afterwards,
the record keys checked against RFC 8446 §7.3 from MLS-Exporter, and the
failures, each an alert on both ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from helpers.mls_link import pump
from helpers.peers import LOOPBACK
from longtls import aio
from longtls.config import Configuration
from longtls.constants import AlertDescription
from longtls.errors import LocalProtocolError, ProtocolError, RemoteProtocolError, TLSError
from longtls.events import (
    ApplicationData,
    ConnectionClosed,
    HandshakeComplete,
    KeyUpdateCompleted,
    Side,
)
from longtls.mls.framing import MLSMessage
from longtls.mls.two_party import (
    Action,
    Established,
    InstallKey,
    Role,
    SendMessage,
    SessionState,
    TwoPartySession,
)
from longtls.mls_connection import MLSConnection, MLSResumptionState
from longtls.record.tls import plaintext_record
from longtls.wire.mls_tls import (
    MLSTLSEpochKeyUpdate,
    MLSTLSMessage,
    MLSTLSResumptionRequest,
    MLSTLSResumptionResponse,
    decode_mls_tls_body,
    encode_mls_tls,
)

CLIENT_LABEL = b"MLS-TLS c ap traffic"




def initiator_config() -> Configuration:
    return Configuration(is_client=True, verify_peer=False)


def responder_config() -> Configuration:
    return Configuration(is_client=False)


def first_connection(updates: int = 3) -> tuple[MLSConnection, MLSConnection]:
    c = MLSConnection(initiator_config())
    s = MLSConnection(responder_config())
    c.start_handshake()
    pump(c, s)
    for i in range(updates):
        (c if i % 2 == 0 else s).update_keys()
        pump(c, s)
    c.send(b"before")
    s.send(b"interruption")
    pump(c, s)
    assert c.epoch == s.epoch == 1 + updates
    c.events(), s.events()
    return c, s


def states(*conns: MLSConnection) -> list[MLSResumptionState]:
    out = []
    for conn in conns:
        state = conn.resumption_state()
        assert state is not None
        out.append(state)
    return out


def resume(resumer: MLSResumptionState, responder: MLSResumptionState) -> tuple[MLSConnection, MLSConnection]:
    """The holder of ``resumer`` connects; the other answers from its store."""
    store = {responder.group_id: responder}
    r = MLSConnection(initiator_config(), resume=resumer)
    p = MLSConnection(responder_config(), resumption_states=store.get)
    r.start_handshake()
    pump(r, p)
    return r, p


def completed(conn: MLSConnection) -> HandshakeComplete:
    (done,) = [e for e in conn.events() if isinstance(e, HandshakeComplete)]
    assert done.resumed and done.mode == "mls" and done.epoch == conn.epoch
    return done


def closed_with(conn: MLSConnection) -> ConnectionClosed:
    closed = [e for e in conn.events() if isinstance(e, ConnectionClosed)]
    assert len(closed) == 1 and conn.is_closed
    return closed[0]


def check_channel(r: MLSConnection, p: MLSConnection, epoch: int) -> None:
    """Both at ``epoch``, data both ways byte-exact, equal exporters, updates both ways."""
    assert r.epoch == p.epoch == epoch and r.is_client and not p.is_client
    payload_r, payload_p = bytes(range(256)) * 70, b"pong" * 3
    r.send(payload_r)
    p.send(payload_p)
    pump(r, p)
    assert b"".join(e.data for e in p.events() if isinstance(e, ApplicationData)) == payload_r
    assert b"".join(e.data for e in r.events() if isinstance(e, ApplicationData)) == payload_p
    assert r.export_keying_material("EXPORTER-x", b"c", 32) == p.export_keying_material("EXPORTER-x", b"c", 32)
    # Phase 2 goes on; in a crossed update the resumer, now the initiator, wins (§5).
    r.update_keys()
    p.update_keys()
    pump(r, p)
    updates = [e for e in r.events() if isinstance(e, KeyUpdateCompleted)]
    assert [(u.epoch, u.initiator) for u in updates] == [(epoch + 1, Side.client)]
    p.update_keys()
    pump(r, p)
    assert r.epoch == p.epoch == epoch + 2


def hkdf_expand_label(secret: bytes, label: bytes, length: int) -> bytes:
    """RFC 8446 §7.1 HKDF-Expand-Label with an empty context, written out."""
    full = b"tls13 " + label
    info = struct.pack("!HB", length, len(full)) + full + b"\x00"
    return HKDFExpand(hashes.SHA256(), length, info).derive(secret)


# -------------------------------------------------------------- resumption


@pytest.mark.parametrize("resumer", ["original initiator", "original responder"])
@pytest.mark.parametrize("ending", ["close_notify", "interrupted"])
def test_resume_by_either_original_role(resumer: str, ending: str) -> None:
    c, s = first_connection()
    before = c.export_keying_material("EXPORTER-x", b"", 32)
    if ending == "close_notify":
        c.close()
        pump(c, s)
        s.close()
        pump(c, s)
        assert c.is_closed and s.is_closed
    state_c, state_s = states(c, s)
    assert state_c.original_role is Role.INITIATOR and state_s.original_role is Role.RESPONDER
    assert state_c.epoch == state_s.epoch == 4 and state_c.group_id == state_s.group_id
    mine, theirs = (state_c, state_s) if resumer == "original initiator" else (state_s, state_c)
    r, p = resume(mine, theirs)
    # The request's commit and the response's each make an epoch (§6).
    for conn in (r, p):
        completed(conn)
    assert r.export_keying_material("EXPORTER-x", b"", 32) != before
    check_channel(r, p, 6)
    # The original roles carry on to the next resumption.
    again_r, again_p = states(r, p)
    assert again_r.original_role is mine.original_role and again_p.original_role is theirs.original_role


def test_the_wire_of_a_resumption_and_its_record_keys() -> None:
    c, s = first_connection()
    state_c, state_s = states(c, s)
    r = MLSConnection(initiator_config(), resume=state_c)
    p = MLSConnection(responder_config(), resumption_states={state_s.group_id: state_s}.get)
    r.start_handshake()
    request = r.data_to_send()
    # A TLS-shaped plaintext first record (docs §2, §6): type 22, 0x0301, mls_tls (242), resumption_request (5).
    assert request[:3] == bytes((22, 3, 1)) and request[5] == 242 and request[9] == 5
    decoded = decode_mls_tls_body(request[9:])
    assert isinstance(decoded, MLSTLSResumptionRequest)
    framed = MLSMessage.from_bytes(decoded.commit).body
    assert framed.content.epoch == 4 and framed.content.group_id == state_c.group_id  # type: ignore[union-attr]
    p.receive_data(request)
    response = p.data_to_send()
    assert response[:3] == bytes((22, 3, 3)) and response[5] == 242 and response[9] == 6  # resumption_response
    assert isinstance(decode_mls_tls_body(response[9:]), MLSTLSResumptionResponse)
    assert not p.handshake_complete  # waits for the resumer's confirmation (docs §8)
    r.receive_data(response)
    confirmation = r.data_to_send()
    # The resumer's first protected record: EpochKeyUpdate(6) under the client
    # key of epoch 6, derived here from the responder's own group by
    # MLS-Exporter("MLS-TLS c ap traffic", "", 32) and RFC 8446 §7.3.
    assert p.group is not None and p.group.epoch == 6
    secret = p.group.group.export(CLIENT_LABEL, b"", 32)
    key, iv = hkdf_expand_label(secret, b"key", 16), hkdf_expand_label(secret, b"iv", 12)
    header = confirmation[:5]
    assert header[:3] == bytes((23, 3, 3)) and len(confirmation) == 5 + int.from_bytes(header[3:], "big")
    inner = AESGCM(key).decrypt(iv, confirmation[5:], header)  # sequence number 0: the nonce is the iv
    assert inner.rstrip(b"\x00") == bytes((242, 0, 0, 9, 4)) + (6).to_bytes(8, "big") + bytes((22,))
    p.receive_data(confirmation)
    assert completed(r).epoch == completed(p).epoch == 6


# ------------------------------------------------- a ConnectionUpdate pending


@pytest.mark.parametrize("lost", ["connection_update", "epoch_key_update"])
@pytest.mark.parametrize("resumer", ["committer", "peer"])
@pytest.mark.parametrize("committer", ["initiator", "responder"])
def test_resume_with_a_connection_update_pending(lost: str, resumer: str, committer: str) -> None:
    c, s = first_connection()
    a, b = (c, s) if committer == "initiator" else (s, c)
    a.update_keys()
    update = a.data_to_send()
    if lost == "epoch_key_update":  # b applied the commit; its answer is lost with the connection
        b.receive_data(update)
        b.data_to_send()
        assert b.epoch == 5
    assert a.update_in_progress and a.epoch == 4
    state_a, state_b = states(a, b)
    assert state_a.session.group.pending_commit is not None
    r, p = resume(state_a, state_b) if resumer == "committer" else resume(state_b, state_a)
    for conn in (r, p):
        completed(conn)
    # The committer's request resends its commit (4 -> 5), applied by the peer
    # or recognised as applied already, then the response's commit: 6.  The
    # peer's request is a fresh commit: on 4 if it never saw the update (the
    # committer drops its pending commit): 6; on 5 if it applied it (the
    # committer merges its commit first): 5 -> 6, then the response: 7.
    expected = 7 if resumer == "peer" and lost == "epoch_key_update" else 6
    check_channel(r, p, expected)


def test_the_committer_resends_its_pending_commit_as_it_was() -> None:
    c, s = first_connection()
    c.update_keys()
    assert c.group is not None
    pending = c.group.pending_commit
    (state_c,) = states(c)
    r = MLSConnection(initiator_config(), resume=state_c)
    r.start_handshake()
    request = decode_mls_tls_body(r.data_to_send()[9:])
    # Profile §6: "MUST include the commit from the last ConnectionUpdate".
    assert isinstance(request, MLSTLSResumptionRequest) and request.commit == pending
    # Without a pending commit the request carries a fresh one, for the stored epoch.
    (state_s,) = states(s)
    r2 = MLSConnection(initiator_config(), resume=state_s)
    r2.start_handshake()
    fresh = decode_mls_tls_body(r2.data_to_send()[9:])
    assert isinstance(fresh, MLSTLSResumptionRequest) and fresh.commit != pending
    assert MLSMessage.from_bytes(fresh.commit).body.content.epoch == 4  # type: ignore[union-attr]


# ---------------------------------------------- a resumption interrupted itself


@pytest.mark.parametrize(("lost", "again", "expected"), [
    ("response", "resumer", 6),        # resends its commit (4 -> 5): the responder has applied it: 5 -> 6
    ("response", "responder", 7),      # resends its response (5 -> 6) on top of the resumer's commit: 6 -> 7
    ("confirmation", "resumer", 8),    # at 6, fresh commit 6 -> 7 on the responder's pending one, then 7 -> 8
    ("confirmation", "responder", 7),  # resends its response (5 -> 6), applied already: 6 -> 7
])
def test_a_resumption_interrupted_before_its_confirmation_resumes_again(lost: str, again: str, expected: int) -> None:
    c, s = first_connection()
    state_c, state_s = states(c, s)
    r = MLSConnection(initiator_config(), resume=state_c)
    p = MLSConnection(responder_config(), resumption_states={state_s.group_id: state_s}.get)
    r.start_handshake()
    p.receive_data(r.data_to_send())
    response = p.data_to_send()
    if lost == "confirmation":
        r.receive_data(response)
        assert r.handshake_complete and r.epoch == 6
        r.data_to_send()  # the EpochKeyUpdate never arrives
    assert not p.handshake_complete
    state_r, state_p = states(r, p)
    # Until the confirmation the responder's state is the epoch before its
    # response, the response pending (docs §8), whatever the resumer saw.
    assert state_p.epoch == 5 and state_p.session.group.pending_commit is not None
    r2, p2 = resume(state_r, state_p) if again == "resumer" else resume(state_p, state_r)
    for conn in (r2, p2):
        completed(conn)
    check_channel(r2, p2, expected)


# ------------------------------------------------------------------ crossed


@pytest.mark.parametrize(("before", "expected"), [
    ("nothing pending", 6),
    ("initiator's update lost", 6),           # its request resends it (4 -> 5), applied by the responder
    ("initiator's update applied", 6),        # the responder recognises the resent commit as applied (5)
    ("responder's update applied", 7),        # the initiator's fresh 5 -> 6 on the responder's merged commit
])
@pytest.mark.parametrize("first_reader", ["original initiator", "original responder"])
def test_crossed_resumption_requests(before: str, expected: int, first_reader: str) -> None:
    c, s = first_connection()
    a_, b_ = (c, s) if before.startswith("initiator") else (s, c)
    if before != "nothing pending":
        a_.update_keys()
        update = a_.data_to_send()
        if before.endswith("applied"):
            b_.receive_data(update)
            b_.data_to_send()
    state_c, state_s = states(c, s)
    # Both sides resume at once over one link: both send a ResumptionRequest first.
    i = MLSConnection(initiator_config(), resume=state_c)
    r = MLSConnection(initiator_config(), resume=state_s)
    i.start_handshake()
    r.start_handshake()
    from_i, from_r = i.data_to_send(), r.data_to_send()
    assert from_i[9] == from_r[9] == 5  # two ResumptionRequests
    if first_reader == "original initiator":
        i.receive_data(from_r)
        assert i.data_to_send() == b""  # §6: the original initiator drops it and keeps waiting
        r.receive_data(from_i)  # the original responder drops its own and answers
    else:
        r.receive_data(from_i)
        response = r.data_to_send()
        assert response[9] == 6  # a ResumptionResponse
        i.receive_data(from_r + response)  # the dropped request, then the answer to ours
    pump(i, r)
    for conn in (i, r):
        completed(conn)
    # The original initiator's request won: it is the initiator (client) again.
    check_channel(i, r, expected)


# ------------------------------------------------------------------ failures


def fails_with(r: MLSConnection, p: MLSConnection, alert: AlertDescription) -> None:
    with pytest.raises(ProtocolError) as raised:
        pump(r, p)
    assert raised.value.alert is alert
    ends = {id(conn): closed_with(conn) for conn in (r, p)}
    assert all(end.alert is alert for end in ends.values())
    assert sum(end.by_peer for end in ends.values()) == 1


def test_an_unknown_group_is_unknown_psk_identity() -> None:
    c, _ = first_connection()
    (state_c,) = states(c)
    r = MLSConnection(initiator_config(), resume=state_c)
    p = MLSConnection(responder_config(), resumption_states=lambda group_id: None)
    r.start_handshake()
    fails_with(r, p, AlertDescription.unknown_psk_identity)


def test_a_responder_without_stored_states_refuses_with_handshake_failure() -> None:
    c, _ = first_connection()
    (state_c,) = states(c)
    r = MLSConnection(initiator_config(), resume=state_c)
    p = MLSConnection(responder_config())
    r.start_handshake()
    fails_with(r, p, AlertDescription.handshake_failure)


@pytest.mark.parametrize("stale", ["resumer", "responder"])
def test_a_stale_state_is_unknown_psk_identity(stale: str) -> None:
    c, s = first_connection()
    old_c, old_s = states(c, s)
    r, p = resume(old_c, old_s)
    completed(r), completed(p)
    new_c, new_s = states(r, p)
    # Only the newest state resumes: either side's older one is refused.
    r2 = MLSConnection(initiator_config(), resume=old_c if stale == "resumer" else new_c)
    store = {old_s.group_id: new_s if stale == "resumer" else old_s}
    p2 = MLSConnection(responder_config(), resumption_states=store.get)
    r2.start_handshake()
    fails_with(r2, p2, AlertDescription.unknown_psk_identity)


@pytest.mark.parametrize("behind", ["resumer", "responder"])
def test_a_state_one_epoch_behind_is_unknown_psk_identity(behind: str) -> None:
    c, s = first_connection()
    old_c, old_s = states(c, s)  # a snapshot while the connection goes on ...
    c.update_keys()
    pump(c, s)  # ... is outdated by the next epoch change
    new_c, new_s = states(c, s)
    assert new_c.epoch == old_c.epoch + 1
    r = MLSConnection(initiator_config(), resume=old_c if behind == "resumer" else new_c)
    stored = new_s if behind == "resumer" else old_s
    p = MLSConnection(responder_config(), resumption_states={stored.group_id: stored}.get)
    r.start_handshake()
    fails_with(r, p, AlertDescription.unknown_psk_identity)


def test_a_state_of_another_group_is_refused() -> None:
    c, _ = first_connection(0)
    _, other = first_connection(0)
    (state_c,) = states(c)
    (state_other,) = states(other)
    r = MLSConnection(initiator_config(), resume=state_c)
    p = MLSConnection(responder_config(), resumption_states=lambda group_id: state_other)
    r.start_handshake()
    fails_with(r, p, AlertDescription.illegal_parameter)


@pytest.mark.parametrize(("commit", "alert"), [
    (b"\x00\x01\x00\x01\xff", AlertDescription.decode_error),  # an MLSMessage header, then garbage
    (None, AlertDescription.illegal_parameter),  # a KeyPackage where a commit belongs
])
def test_a_request_without_a_commit_is_refused(commit: bytes | None, alert: AlertDescription) -> None:
    _, s = first_connection(0)
    (state_s,) = states(s)
    if commit is None:
        fresh = MLSConnection(initiator_config())
        fresh.start_handshake()
        commit = decode_mls_tls_body(fresh.data_to_send()[9:]).key_package  # type: ignore[union-attr]
    p = MLSConnection(responder_config(), resumption_states={state_s.group_id: state_s}.get)
    record = plaintext_record(22, encode_mls_tls(MLSTLSResumptionRequest(commit)), 0x0301)
    with pytest.raises(ProtocolError) as raised:
        p.receive_data(record)
    assert raised.value.alert is alert and closed_with(p).alert is alert
    assert p.data_to_send()[:1] == b"\x15"  # the alert, in a plaintext record


def flip_last_byte(wire: bytes) -> bytes:
    return wire[:-1] + bytes((wire[-1] ^ 1,))


@pytest.mark.parametrize("garbled", ["request", "response"])
def test_a_garbled_commit_fails_and_the_states_still_resume(garbled: str) -> None:
    c, s = first_connection()
    state_c, state_s = states(c, s)
    r = MLSConnection(initiator_config(), resume=state_c)
    p = MLSConnection(responder_config(), resumption_states={state_s.group_id: state_s}.get)
    r.start_handshake()
    request = r.data_to_send()
    if garbled == "request":
        # The PublicMessage's last byte is its membership_tag's (RFC 9420 §6.2).
        with pytest.raises(ProtocolError):
            p.receive_data(flip_last_byte(request))
    else:
        p.receive_data(request)
        with pytest.raises(ProtocolError):
            r.receive_data(flip_last_byte(p.data_to_send()))
    failed, other = (p, r) if garbled == "request" else (r, p)
    other.receive_data(failed.data_to_send())  # the alert, in plaintext: no keys on its sender's side
    assert closed_with(failed).alert is closed_with(other).alert is AlertDescription.illegal_parameter
    # The failure changed no state: the failed connections' states resume.
    r2, p2 = resume(*states(r, p))
    for conn in (r2, p2):
        completed(conn)
    check_channel(r2, p2, 6)


def test_resumption_messages_out_of_place_are_unexpected_message() -> None:
    c, s = first_connection()
    state_c, state_s = states(c, s)
    r, p = resume(state_c, state_s)
    completed(r), completed(p)
    # A new request inside the resumed channel (protected, after the keys).
    again = MLSConnection(initiator_config(), resume=state_c)
    again.start_handshake()
    body = again.data_to_send()[5:]
    r._records.send(22, body)  # the raw handshake message, under r's current key
    fails_with(r, p, AlertDescription.unexpected_message)


def session_pair() -> tuple[TwoPartySession, TwoPartySession, list[Action]]:
    """The state machines alone: a resumer and a responder after the request."""
    c, s = first_connection(0)
    state_c, state_s = states(c, s)
    resumer = TwoPartySession.resumer(state_c.session)
    responder = TwoPartySession.responder(None, lambda commit: state_s.session)
    (request,) = resumer.start()
    assert isinstance(request, SendMessage)
    return resumer, responder, responder.receive(request.message)


@pytest.mark.parametrize(("message", "alert"), [
    (MLSTLSEpochKeyUpdate(2), AlertDescription.illegal_parameter),  # the response moves to 3
    (MLSTLSEpochKeyUpdate(4), AlertDescription.illegal_parameter),
    (MLSTLSResumptionRequest(b"\x00\x01\x00\x01"), AlertDescription.unexpected_message),
    (MLSTLSResumptionResponse(b"\x00\x01\x00\x01"), AlertDescription.unexpected_message),
])
def test_the_responder_waits_for_the_confirmation_of_its_epoch(message: MLSTLSMessage,
                                                                alert: AlertDescription) -> None:
    _, responder, actions = session_pair()
    assert isinstance(actions[0], SendMessage) and isinstance(actions[0].message, MLSTLSResumptionResponse)
    assert [type(a) for a in actions[1:]] == [InstallKey, InstallKey]  # no Established before the confirmation
    assert responder.state is SessionState.WAIT_RESUMPTION_CONFIRMATION and responder.epoch == 3
    assert not responder.may_send_records and not responder.may_start_update
    with pytest.raises(RemoteProtocolError) as raised:
        responder.receive(message)
    assert raised.value.alert is alert


def test_the_confirmation_completes_the_responder() -> None:
    resumer, responder, actions = session_pair()
    response = actions[0]
    assert isinstance(response, SendMessage)
    done = resumer.receive(response.message)
    assert [type(a) for a in done] == [InstallKey, InstallKey, SendMessage, Established]
    confirm = done[2]
    assert isinstance(confirm, SendMessage) and confirm.message == MLSTLSEpochKeyUpdate(3)
    assert responder.receive(confirm.message) == [Established(3, resumed=True)]
    assert responder.may_start_update and resumer.role is Role.INITIATOR and responder.role is Role.RESPONDER


def test_resumption_state_api() -> None:
    fresh = MLSConnection(initiator_config())
    assert fresh.resumption_state() is None  # no group yet
    c, _ = first_connection(0)
    (state,) = states(c)
    text = repr(state)
    assert text == "<MLSResumptionState epoch=1 pending_commit=False original_role=initiator>"
    with pytest.raises(Exception, match="resumption_states is for a responder"):
        MLSConnection(initiator_config(), resumption_states=lambda group_id: None)
    r = MLSConnection(responder_config(), resume=state)
    assert r.is_client  # the resumer is the initiator whatever the configuration says
    with pytest.raises(LocalProtocolError):
        MLSConnection(responder_config()).start_handshake()


# ------------------------------------------------------- asyncio, real sockets


def test_asyncio_resume_by_either_side_over_loopback() -> None:
    """First connection with updates by both sides, close, resume by the
    client, more updates, close, then the server resumes to a listening
    client: one group throughout, equal exporters on both ends at every
    epoch, none repeated, data echoed byte-exact."""

    async def echo(reader: aio.TLSReader, writer: aio.MLSWriter, accepted: asyncio.Queue[aio.MLSWriter],
                   ended: asyncio.Queue[MLSResumptionState]) -> None:
        await accepted.put(writer)
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(TLSError, OSError):
                await writer.wait_closed()
            state = writer.resumption_state()
            assert state is not None
            await ended.put(state)

    async def rounds(reader: aio.TLSReader, writer: aio.MLSWriter, peer: aio.MLSWriter, count: int,
                     seen: list[bytes]) -> None:
        assert writer.epoch == peer.epoch
        for i in range(count):
            start = writer.epoch
            assert await writer.update_keys() == start + 1
            assert await peer.update_keys() == start + 2
            payload = os.urandom(1000 + 3000 * i)
            writer.write(payload)
            assert await reader.readexactly(len(payload)) == payload
            value = writer.export_keying_material("EXPORTER-resumption-test", b"", 32)
            assert value == peer.export_keying_material("EXPORTER-resumption-test", b"", 32)
            seen.append(value)

    async def main() -> None:
        store: dict[bytes, MLSResumptionState] = {}
        accepted: asyncio.Queue[aio.MLSWriter] = asyncio.Queue()
        ended: asyncio.Queue[MLSResumptionState] = asyncio.Queue()

        async def on_server(reader: aio.TLSReader, writer: aio.MLSWriter) -> None:
            await echo(reader, writer, accepted, ended)

        server = await aio.start_mls_server(on_server, LOOPBACK, 0, responder_config(),
                                            resumption_states=store.get)
        port = server.sockets[0].getsockname()[1]
        seen: list[bytes] = []
        try:
            reader, writer = await aio.connect_mls(LOOPBACK, port, initiator_config())
            peer = await accepted.get()
            assert not writer.handshake.resumed and writer.epoch == 1
            await rounds(reader, writer, peer, 3, seen)  # epoch 7
            writer.close()
            await writer.wait_closed()
            server_state = await ended.get()
            store[server_state.group_id] = server_state
            client_state = writer.resumption_state()
            assert client_state is not None and client_state.epoch == server_state.epoch == 7

            # The original client resumes: epoch 7 -> 8 (its commit) -> 9 (the server's).
            reader, writer = await aio.connect_mls(LOOPBACK, port, initiator_config(), resume=client_state)
            peer = await accepted.get()  # its handshake completes on our EpochKeyUpdate
            assert writer.handshake.resumed and peer.handshake.resumed
            assert writer.epoch == peer.epoch == 9
            await rounds(reader, writer, peer, 2, seen)  # epoch 13
            writer.close()
            await writer.wait_closed()
            server_state = await ended.get()
            client_state = writer.resumption_state()
            assert client_state is not None and client_state.group_id == server_state.group_id
        finally:
            server.close()
            await server.wait_closed()

        # The original server resumes, to the original client now listening.
        client_side: asyncio.Queue[aio.MLSWriter] = asyncio.Queue()
        listener = await aio.start_mls_server(
            lambda r, w: echo(r, w, client_side, ended), LOOPBACK, 0, responder_config(),
            resumption_states={client_state.group_id: client_state}.get)
        port = listener.sockets[0].getsockname()[1]
        try:
            reader, writer = await aio.connect_mls(LOOPBACK, port, responder_config(), resume=server_state)
            peer = await client_side.get()
            assert writer.handshake.resumed and peer.handshake.resumed and writer.epoch == peer.epoch == 15
            # The resumer is the initiator ("client") of this connection (§6).
            assert writer.connection.is_client and not peer.connection.is_client
            await rounds(reader, writer, peer, 2, seen)
            writer.close()
            await writer.wait_closed()
            await ended.get()
        finally:
            listener.close()
            await listener.wait_closed()
        assert len(set(seen)) == len(seen) == 7

    asyncio.run(asyncio.wait_for(main(), 60))
