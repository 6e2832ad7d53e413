"""``Connection.receive_data_into``: longtls.aio's receive path (issue 16).

The contents of application data records go to a sink, a run of records
decrypted into one scratch buffer (``RecordReader.open_application_data_into``),
instead of one ApplicationData event per record.  What the application reads
must be exactly what ``receive_data``'s events carry: the same bytes in the
same order, whatever the records around them (padding, empty records,
KeyUpdate and EKU messages, close_notify, a record that fails) and wherever
TCP cuts them.  Records are sealed here with keys derived from the key log
(tests/unit/test_record_bulk.py's ``Keys``: RFC 9846 §7.3, §5.2, §5.3).
"""

from __future__ import annotations

import random

import pytest
from tests.unit.test_record_bulk import MAX, SUITES, client_keys, established

from helpers.pair import Pair, configs, connect
from longtls.config import pad_to_block
from longtls.connection import Connection
from longtls.constants import AlertDescription, CipherSuite
from longtls.errors import RemoteProtocolError
from longtls.events import (
    ApplicationData,
    CloseNotifyReceived,
    ConnectionClosed,
    Event,
    KeyUpdateCompleted,
    KeyUpdated,
)
from longtls.record.tls import SCRATCH_MINIMUM

SCRATCH = 256 * 1024


class Sink:
    """Records what reaches the sink, copied at once (the memoryview is valid only during the call)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def __call__(self, data: memoryview) -> None:
        assert isinstance(data, memoryview)
        self.chunks.append(bytes(data))

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)


def data_of(events: list[Event]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, ApplicationData))


def both_ways(wire: bytes, cuts: list[int] | None = None, **kwargs: object) -> tuple[list[Event], Sink, list[Event]]:
    """``wire`` (records the test sealed for the server of a fresh pair) given to
    two servers with the same keys: one through receive_data, one through
    receive_data_into.  Returns the first's events, the second's sink and events."""
    results = []
    for into in (False, True):
        pair, log = established(**kwargs)  # type: ignore[arg-type]
        keys = client_keys(log)
        sealed = wire_of(keys, wire)
        sink = Sink()
        scratch = bytearray(SCRATCH)
        events: list[Event] = []
        for start, end in zip([0, *(cuts or [])], [*(cuts or []), len(sealed)], strict=True):
            try:
                if into:
                    pair.server.receive_data_into(sealed[start:end], scratch, sink)
                else:
                    pair.server.receive_data(sealed[start:end])
            except RemoteProtocolError:
                pass
            events += pair.server.events()
        results.append((events, sink))
    (plain_events, _), (into_events, sink) = results
    return plain_events, sink, into_events


def wire_of(keys: object, inners: bytes) -> bytes:
    """``inners``: TLSInnerPlaintexts separated by b"|" (a test's shorthand), sealed in order."""
    return b"".join(keys.seal(inner) for inner in inners.split(b"|"))  # type: ignore[attr-defined]


def test_a_run_reaches_the_sink_as_one_piece_and_no_event() -> None:
    """Several full records and a short one: one sink call with all their contents, no ApplicationData."""
    contents = [bytes([i]) * MAX for i in range(1, 6)] + [b"tail"]
    events, sink, into_events = both_ways(b"|".join(c + b"\x17" for c in contents))
    assert data_of(events) == sink.data == b"".join(contents)
    assert len(sink.chunks) == 1
    assert into_events == []


def test_a_run_longer_than_the_scratch_is_handed_over_in_pieces() -> None:
    """With the smallest scratch (one TLSInnerPlaintext) each record is its own piece, in order."""
    pair, log = established()
    keys = client_keys(log)
    contents = [b"a" * MAX, b"b" * 10, b"c" * MAX, b"d" * (MAX - 9)]
    sink = Sink()
    pair.server.receive_data_into(b"".join(keys.seal(c + b"\x17") for c in contents), bytearray(SCRATCH_MINIMUM), sink)
    assert sink.chunks == contents


def test_a_scratch_smaller_than_a_record_is_refused_before_anything_is_read() -> None:
    """The caller's mistake: ValueError, the bytes not consumed, the connection unharmed."""
    pair, log = established()
    keys = client_keys(log)
    record = keys.seal(b"x\x17")
    with pytest.raises(ValueError, match="scratch"):
        pair.server.receive_data_into(record, bytearray(SCRATCH_MINIMUM - 1), Sink())
    sink = Sink()
    pair.server.receive_data_into(record, bytearray(SCRATCH_MINIMUM), sink)
    assert sink.data == b"x" and pair.server.events() == []


def test_padded_and_empty_records_inside_a_run_keep_their_order() -> None:
    """§5.4: padded records leave the fast loop (they go the general way) and empty ones carry
    nothing; the bytes still reach the sink in record order."""
    wire = b"one\x17|two\x17" + bytes(300) + b"|\x17|three\x17|\x17" + bytes(10) + b"|four\x17|five\x17" + bytes(1)
    events, sink, into_events = both_ways(wire)
    assert data_of(events) == sink.data == b"onetwothreefourfive"
    assert into_events == []


def test_every_cut_of_a_record_header_gives_the_same_bytes() -> None:
    """A record split across two receives at every offset of its header (and of the bytes
    around it): the sink gets the same bytes as receive_data's events, nothing lost."""
    first, second = b"a" * 1000 + b"\x17", b"b" * MAX + b"\x17"
    wire = first + b"|" + second + b"|c\x17"
    header_of_second = 5 + len(first) + 16
    for cut in range(header_of_second - 2, header_of_second + 8):
        events, sink, _ = both_ways(wire, [cut])
        assert data_of(events) == sink.data == b"a" * 1000 + b"b" * MAX + b"c", cut


def test_random_cuts_give_the_same_bytes() -> None:
    rng = random.Random(1616)
    contents = [bytes([i]) * rng.choice((1, 200, 5000, MAX)) for i in range(1, 9)]
    wire = b"|".join(c + b"\x17" for c in contents)
    for _ in range(10):
        total = sum(5 + len(c) + 1 + 16 for c in contents)
        cuts = sorted(rng.sample(range(1, total), rng.randint(1, 12)))
        events, sink, _ = both_ways(wire, cuts)
        assert data_of(events) == sink.data == b"".join(contents)


def test_records_before_one_that_fails_reach_the_sink_then_bad_record_mac() -> None:
    """§5.2: a record that does not open ends the connection; the ones before it were genuine
    and are delivered; nothing of the failed record's (unauthenticated) output is."""
    pair, log = established()
    keys = client_keys(log)
    good = keys.seal(b"one\x17") + keys.seal(b"two\x17")
    bad = bytearray(keys.seal(b"three\x17"))
    bad[7] ^= 1
    sink = Sink()
    with pytest.raises(RemoteProtocolError) as info:
        pair.server.receive_data_into(good + bytes(bad) + keys.seal(b"four\x17"), bytearray(SCRATCH), sink)
    assert info.value.alert is AlertDescription.bad_record_mac
    assert sink.data == b"onetwo"
    events = pair.server.events()
    assert isinstance(events[-1], ConnectionClosed) and events[-1].alert is AlertDescription.bad_record_mac
    assert not any(isinstance(e, ApplicationData) for e in events)


def test_close_notify_ends_the_data_in_the_same_buffer() -> None:
    """RFC 9846 §6.1: data before close_notify is delivered, data behind it ignored."""
    events, sink, into_events = both_ways(b"last\x17|\x01\x00\x15|late\x17")
    assert data_of(events) == sink.data == b"last"
    assert [type(e) for e in into_events] == [CloseNotifyReceived]


@pytest.mark.parametrize("suite", list(SUITES))
def test_a_key_update_between_records_in_one_buffer(suite: CipherSuite) -> None:
    """RFC 9846 §4.6.3: a KeyUpdate in the same bytes as application records on each side of
    it; the records after it open under the next generation, the bytes stay in order, the
    event is queued as with receive_data."""
    pair, _ = established(suite, client_extended_key_update=False, server_extended_key_update=False)
    before, after = b"before" * 5000, b"after" * 5000
    pair.client.send(before)
    pair.client.update_keys(request_peer_update=False)
    pair.client.send(after)
    sink = Sink()
    pair.server.receive_data_into(pair.client.data_to_send(), bytearray(SCRATCH), sink)
    assert sink.data == before + after
    events = pair.server.events()
    assert [type(e) for e in events] == [KeyUpdated]
    assert pair.server.read_generation == 1


def test_an_extended_key_update_between_records_in_both_directions() -> None:
    """EKU (draft-13) messages in the same bytes as application data on both sides of them,
    both ways, every receive through receive_data_into: the bytes arrive in order and the
    update completes on both ends."""
    client_cfg, server_cfg, _ = configs()
    pair = connect(client_cfg, server_cfg)
    pair.client.events(), pair.server.events()
    received = {"client": Sink(), "server": Sink()}
    sent = {"client": b"", "server": b""}
    events: dict[str, list[Event]] = {"client": [], "server": []}
    scratch = bytearray(SCRATCH)
    pair.client.send(b"ahead" * 4000)  # records before the request, in the same bytes
    sent["client"] += b"ahead" * 4000
    pair.client.extended_key_update()
    for round_ in range(8):
        for side, conn in (("client", pair.client), ("server", pair.server)):
            chunk = f"{side}{round_}-".encode() * 3000
            conn.send(chunk)
            sent[side] += chunk
        for side, conn, peer in (("client", pair.client, pair.server), ("server", pair.server, pair.client)):
            other = "server" if side == "client" else "client"
            wire = conn.data_to_send()
            if wire:
                peer.receive_data_into(wire, scratch, received[other])
            events[other] += peer.events()
    assert received["server"].data == sent["client"]
    assert received["client"].data == sent["server"]
    for side in ("client", "server"):
        assert any(isinstance(e, KeyUpdateCompleted) for e in events[side]), side
        assert not any(isinstance(e, ApplicationData) for e in events[side])
    assert pair.client.key_generation == pair.server.key_generation == 1


def test_two_connections_sharing_one_scratch() -> None:
    """The scratch holds nothing between calls (longtls.aio shares one per thread)."""
    scratch = bytearray(SCRATCH)
    pairs: list[tuple[Pair, Sink, bytes]] = []
    for i in range(2):
        pair, log = established()
        keys = client_keys(log)
        contents = bytes([65 + i]) * (3 * MAX) + bytes([97 + i]) * 7
        pairs.append((pair, Sink(), b"".join(keys.seal(contents[j : j + MAX] + b"\x17") for j in range(0, len(contents), MAX))))
    for cut in (0, 7000, 20000, 40000):
        for pair, sink, wire in pairs:
            end = {0: 7000, 7000: 20000, 20000: 40000, 40000: len(wire)}[cut]
            pair.server.receive_data_into(wire[cut:end], scratch, sink)
    assert pairs[0][1].data == b"A" * (3 * MAX) + b"a" * 7
    assert pairs[1][1].data == b"B" * (3 * MAX) + b"b" * 7


def test_receive_data_still_gives_one_event_per_record_after_receive_data_into() -> None:
    """The sink is the call's only: a later receive_data queues ApplicationData events again."""
    pair, log = established()
    keys = client_keys(log)
    sink = Sink()
    pair.server.receive_data_into(keys.seal(b"one\x17"), bytearray(SCRATCH), sink)
    pair.server.receive_data(keys.seal(b"two\x17") + keys.seal(b"three\x17"))
    assert sink.data == b"one"
    assert [e.data for e in pair.server.events() if isinstance(e, ApplicationData)] == [b"two", b"three"]


def test_padding_policy_records_reach_the_sink() -> None:
    """A peer that pads every record (§5.4): every record goes the general way, in order."""
    pair, _ = established(client_record_padding=pad_to_block(512))
    data = bytes(range(256)) * 300
    pair.client.send(data)
    sink = Sink()
    pair.server.receive_data_into(pair.client.data_to_send(), bytearray(SCRATCH), sink)
    assert sink.data == data


def test_a_connection_handed_to_receive_data_into_before_the_handshake() -> None:
    """The handshake itself goes through receive_data_into too (longtls.aio does): events as usual."""
    client_cfg, server_cfg, _ = configs()
    client, server = Connection(client_cfg), Connection(server_cfg)
    scratch = bytearray(SCRATCH)
    sinks = {"client": Sink(), "server": Sink()}
    client.start_handshake()
    for _ in range(10):
        c2s = client.data_to_send()
        if c2s:
            server.receive_data_into(c2s, scratch, sinks["server"])
        s2c = server.data_to_send()
        if s2c:
            client.receive_data_into(s2c, scratch, sinks["client"])
        if not c2s and not s2c:
            break
    assert client.handshake_complete and server.handshake_complete
    client.send(b"hello")
    server.receive_data_into(client.data_to_send(), scratch, sinks["server"])
    assert sinks["server"].data == b"hello"


def test_damaged_records_give_the_same_bytes_events_and_alert() -> None:
    """Differential check of the bad-input side: a run of sealed records with a byte
    changed (header, length, ciphertext or tag), a record left out, bytes put in front
    of a header, or the end cut off, each cut once more by TCP, gives through
    receive_data_into the bytes, the events and the alert (RFC 9846 §5.2, §6) that
    receive_data gives.  Each path runs on its own pair (its own keys), so the damage
    never moves ciphertext into a header: what is parsed there is the same for both."""
    rng = random.Random(160016)
    inners = [b"a" * 700 + b"\x17", b"b" * MAX + b"\x17", b"c\x17" + bytes(20), b"\x17", b"d" * 300 + b"\x17"]
    wire = b"|".join(inners)
    headers, start = [], 0  # where each record's 5-byte header is (§5.2: 16-byte tags)
    for inner in inners:
        headers.append(start)
        start += 5 + len(inner) + 16
    length = start

    def outcome(into: bool, damage: tuple[str, int, bytes], cut: int) -> tuple[bytes, list[str], object]:
        pair, log = established()
        sealed = bytearray(wire_of(client_keys(log), wire))
        kind, pos, extra = damage
        if kind == "flip":
            sealed[pos] ^= extra[0]
        elif kind == "leave out":
            del sealed[headers[pos] : headers[pos + 1] if pos + 1 < len(headers) else length]
        elif kind == "put in":
            sealed[headers[pos] : headers[pos]] = extra
        else:
            del sealed[pos:]
        sink, scratch, events, alert = Sink(), bytearray(SCRATCH_MINIMUM), [], None
        for chunk in (bytes(sealed[:cut]), bytes(sealed[cut:])):
            try:
                if into:
                    pair.server.receive_data_into(chunk, scratch, sink)
                else:
                    pair.server.receive_data(chunk)
            except RemoteProtocolError as error:
                alert = error.alert
            events += pair.server.events()
        delivered = data_of(events) + sink.data
        return delivered, [type(e).__name__ for e in events if not isinstance(e, ApplicationData)], alert

    alerts = set()
    for _ in range(200):
        kind = rng.choice(("flip", "flip", "leave out", "put in", "truncate"))
        if kind == "flip":  # half of them in a header (type, version, length)
            pos = rng.choice(headers) + rng.randrange(5) if rng.random() < 0.5 else rng.randrange(length)
            extra = bytes([rng.randrange(1, 256)])
        elif kind == "truncate":
            pos, extra = rng.randrange(length), b""
        else:
            pos, extra = rng.randrange(len(headers)), rng.randbytes(rng.randrange(5, 40))
        cut = rng.randrange(length)
        plain = outcome(False, (kind, pos, extra), cut)
        assert outcome(True, (kind, pos, extra), cut) == plain, (kind, pos, extra, cut)
        alerts.add(plain[2])
    # The damage reached the checks that matter: MACs (§5.2), record types, the
    # legacy version and record lengths (§5.1, §5.2 record_overflow).
    assert {
        AlertDescription.bad_record_mac, AlertDescription.unexpected_message,
        AlertDescription.protocol_version, AlertDescription.record_overflow,
    } <= alerts, alerts
