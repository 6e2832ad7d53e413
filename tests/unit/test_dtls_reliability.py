"""DTLS 1.3 handshake framing, ACKs and reliability (RFC 9147 §5.2, §5.5, §5.8, §7;
draft-ietf-tls-rfc9147bis-02).

The sender and receiver are driven through a fake record layer (``FakeSealer``):
each record is an unencrypted header (epoch, sequence number, content type,
length) plus the payload and a 16-byte stand-in for the AEAD tag, so the tests
can see every fragment on the wire and check record sizes against the MTU
without depending on the real DTLS record layer.  Expected bytes are built
here from the spec's struct definitions, not from the code under test.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass, field

import pytest

from longtls.constants import AlertDescription, ContentType, HandshakeType
from longtls.errors import DecodeError, LocalProtocolError, RemoteProtocolError
from longtls.record.dtls_reliability import (
    FlightState,
    HandshakeReceiver,
    HandshakeSender,
    RetransmissionTimer,
    pack_datagrams,
)
from longtls.wire.dtls_ack import ACK, MAX_ACK_RECORD_NUMBERS, max_ack_record_numbers
from longtls.wire.dtls_handshake import (
    DTLSHandshakeFragment,
    decode_fragments,
    encode_fragment,
    split_tls_message,
    tls_message,
)
from longtls.wire.dtls_record import RecordNumber

CERTIFICATE = int(HandshakeType.certificate)
FINISHED = int(HandshakeType.finished)
KEY_UPDATE = int(HandshakeType.key_update)

_FAKE_HEADER = struct.Struct(">QQBH")  # epoch, sequence_number, content type, length
_FAKE_TAG = b"\xaa" * 16
FAKE_OVERHEAD = _FAKE_HEADER.size + len(_FAKE_TAG)


@dataclass
class FakeSealer:
    """A record layer stand-in: sequence numbers per epoch, visible payloads."""

    next_seq: dict[int, int] = field(default_factory=dict)

    def seal(self, content_type: ContentType, payload: bytes, epoch: int) -> tuple[bytes, RecordNumber]:
        seq = self.next_seq.get(epoch, 0)
        self.next_seq[epoch] = seq + 1
        record = _FAKE_HEADER.pack(epoch, seq, content_type, len(payload)) + payload + _FAKE_TAG
        return record, RecordNumber(epoch, seq)

    def max_payload(self, mtu: int, epoch: int) -> int:
        return mtu - FAKE_OVERHEAD


def open_record(record: bytes) -> tuple[RecordNumber, int, bytes]:
    epoch, seq, content_type, length = _FAKE_HEADER.unpack_from(record)
    payload = record[_FAKE_HEADER.size : _FAKE_HEADER.size + length]
    assert record[_FAKE_HEADER.size + length :] == _FAKE_TAG
    return RecordNumber(epoch, seq), content_type, payload


def open_datagram(datagram: bytes) -> list[tuple[RecordNumber, int, bytes]]:
    records = []
    pos = 0
    while pos < len(datagram):
        length = _FAKE_HEADER.unpack_from(datagram, pos)[3]
        end = pos + _FAKE_HEADER.size + length + len(_FAKE_TAG)
        records.append(open_record(datagram[pos:end]))
        pos = end
    return records


def handshake(msg_type: int, size: int, seed: int = 0) -> bytes:
    """A TLS-encoded handshake message (RFC 9846 §4: type, uint24 length, body)."""
    body = random.Random(seed).randbytes(size)
    return bytes([msg_type]) + size.to_bytes(3, "big") + body


def spec_fragment(msg_type: int, length: int, seq: int, offset: int, data: bytes) -> bytes:
    """DTLSHandshake from RFC 9147 §5.2, written out field by field."""
    return (
        bytes([msg_type]) + length.to_bytes(3, "big") + seq.to_bytes(2, "big")
        + offset.to_bytes(3, "big") + len(data).to_bytes(3, "big") + data
    )


def fragments_of(records: list[bytes]) -> list[tuple[RecordNumber, DTLSHandshakeFragment]]:
    out = []
    for record in records:
        number, content_type, payload = open_record(record)
        assert content_type == ContentType.HANDSHAKE
        out.extend((number, f) for f in decode_fragments(payload))
    return out


# -- the DTLS handshake header (§5.2) -------------------------------------------------


def test_fragment_header_is_the_spec_struct() -> None:
    data = bytes(range(100))
    wire = encode_fragment(CERTIFICATE, 5000, 7, 300, data)
    assert wire == spec_fragment(CERTIFICATE, 5000, 7, 300, data)
    assert wire[:12] == bytes.fromhex("0b 001388 0007 00012c 000064")
    (f,) = decode_fragments(wire)
    assert (f.msg_type, f.length, f.message_seq, f.fragment_offset, f.fragment_length) == (
        CERTIFICATE, 5000, 7, 300, 100,
    )
    assert f.fragment == data and f.end == 400 and f.encode() == wire
    assert "fragment=" not in repr(f) and str(data[:4]) not in repr(f)


def test_several_fragments_in_one_record() -> None:
    payload = spec_fragment(FINISHED, 3, 4, 0, b"abc") + spec_fragment(CERTIFICATE, 10, 5, 2, b"xyz")
    a, b = decode_fragments(payload)
    assert (a.message_seq, a.fragment, b.message_seq, b.fragment_offset, b.fragment) == (
        4, b"abc", 5, 2, b"xyz",
    )


@pytest.mark.parametrize(
    ("payload", "alert"),
    [
        (spec_fragment(FINISHED, 3, 0, 0, b"abc")[:11], AlertDescription.decode_error),
        (spec_fragment(FINISHED, 3, 0, 0, b"abc")[:-1], AlertDescription.decode_error),
        (spec_fragment(FINISHED, 3, 0, 0, b"abc") + b"\x14", AlertDescription.decode_error),
        (spec_fragment(FINISHED, 3, 0, 1, b"abc"), AlertDescription.decode_error),
        (spec_fragment(FINISHED, 3, 0, 3, b""), AlertDescription.unexpected_message),
        (b"", AlertDescription.unexpected_message),
    ],
    ids=["header-cut", "fragment-cut", "trailing-byte", "past-length", "zero-length", "empty-record"],
)
def test_malformed_fragments_get_their_alert(payload: bytes, alert: AlertDescription) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_fragments(payload)
    assert info.value.alert == alert


def test_tls_form_round_trip() -> None:
    message = handshake(CERTIFICATE, 70_000)
    msg_type, body = split_tls_message(message)
    assert msg_type == CERTIFICATE and tls_message(msg_type, body) == message
    with pytest.raises(ValueError):
        split_tls_message(message[:-1])


# -- the ACK message (§7) ------------------------------------------------------------


def test_ack_codec_round_trip_and_bytes() -> None:
    ack = ACK.from_records([RecordNumber(3, 9), RecordNumber(2, 1), RecordNumber(2, 0)])
    assert ack.record_numbers == (RecordNumber(2, 0), RecordNumber(2, 1), RecordNumber(3, 9))
    expected = (48).to_bytes(2, "big") + b"".join(
        e.to_bytes(8, "big") + s.to_bytes(8, "big") for e, s in [(2, 0), (2, 1), (3, 9)]
    )
    assert ack.encode() == expected
    assert ACK.decode(expected) == ack
    big = ACK((RecordNumber(2**64 - 1, 2**48 + 5),))
    assert ACK.decode(big.encode()) == big


def test_empty_ack_is_legal() -> None:
    # rfc9147bis §7.1: an ACK without record numbers is a liveness signal.
    assert ACK().encode() == b"\x00\x00"
    assert ACK.decode(b"\x00\x00").record_numbers == ()


@pytest.mark.parametrize(
    "payload",
    [b"", b"\x00", b"\x00\x10" + bytes(15), b"\x00\x0f" + bytes(15), b"\x00\x10" + bytes(17),
     b"\x00\x00\x00"],
    ids=["empty", "one-byte", "truncated", "not-multiple-of-16", "trailing", "trailing-after-empty"],
)
def test_ack_bad_lengths_are_decode_error(payload: bytes) -> None:
    with pytest.raises(DecodeError) as info:
        ACK.decode(payload)
    assert info.value.alert == AlertDescription.decode_error


def test_ack_size_bounds() -> None:
    assert MAX_ACK_RECORD_NUMBERS == 4095  # <0..2^16-1> bytes of 16-byte entries
    assert max_ack_record_numbers(2 + 16 * 10 + 15) == 10
    assert max_ack_record_numbers(1) == 0
    assert max_ack_record_numbers(1 << 20) == 4095
    with pytest.raises(ValueError):
        ACK(tuple(RecordNumber(0, i) for i in range(4096))).encode()


# -- fragmentation and reassembly (§5.5) ------------------------------------------------


def test_fragments_fit_300_byte_mtu_and_cover_the_message() -> None:
    sender = HandshakeSender(FakeSealer(), is_client=False, mtu=300)
    message = handshake(CERTIFICATE, 5000)
    assert sender.queue_message(message, 2, now=0.0) == 0
    records = sender.records_to_send()
    assert all(len(r) <= 300 for r in records)
    frags = fragments_of(records)
    assert len(frags) == len(records) == -(-5000 // (300 - FAKE_OVERHEAD - 12))
    offset = 0
    for number, f in frags:
        assert number.epoch == 2
        assert (f.msg_type, f.length, f.message_seq, f.fragment_offset) == (CERTIFICATE, 5000, 0, offset)
        offset = f.end
    assert offset == 5000
    assert b"".join(f.fragment for _, f in frags) == message[4:]
    assert all(len(d) <= 300 for d in pack_datagrams(records, 300))


def test_reassembly_from_shuffled_duplicated_overlapping_fragments() -> None:
    message = handshake(CERTIFICATE, 5000, seed=1)
    body = message[4:]
    pieces = []
    rng = random.Random(7)
    for size in (250, 173, 999):  # three transmissions cut differently: they overlap
        pieces += [(o, body[o : o + size]) for o in range(0, 5000, size)]
    pieces += rng.sample(pieces, 10)  # exact duplicates
    rng.shuffle(pieces)
    receiver = HandshakeReceiver()
    delivered = []
    for i, (offset, data) in enumerate(pieces):
        payload = spec_fragment(CERTIFICATE, 5000, 0, offset, data)
        result = receiver.receive_record(RecordNumber(2, i), payload, now=0.0)
        delivered += result.messages
    assert len(delivered) == 1
    (got,) = delivered
    assert (got.message_seq, got.epoch, got.message) == (0, 2, message)
    assert receiver.next_receive_seq == 1 and receiver.buffered_bytes == 0
    assert "message=" not in repr(got)


def test_messages_are_delivered_in_message_seq_order_once() -> None:
    messages = [handshake(t, 50 + i, seed=i) for i, t in enumerate([8, 11, 15, 20])]
    payloads = [spec_fragment(m[0], len(m) - 4, seq, 0, m[4:]) for seq, m in enumerate(messages)]
    receiver = HandshakeReceiver()
    order = []
    for i, seq in enumerate([3, 1, 1, 2, 0, 3, 0]):
        result = receiver.receive_record(RecordNumber(2, i), payloads[seq], now=0.0)
        order += [(m.message_seq, m.message) for m in result.messages]
    assert order == list(enumerate(messages))


def test_future_messages_are_buffered_within_bounds_and_dropped_beyond() -> None:
    receiver = HandshakeReceiver(max_buffered_messages=3, max_buffered_bytes=250)
    msg = [handshake(CERTIFICATE, 100, seed=i) for i in range(6)]

    def payload(seq: int) -> bytes:
        return spec_fragment(CERTIFICATE, 100, seq, 0, msg[seq][4:])

    assert receiver.receive_record(RecordNumber(2, 0), payload(3), 0.0).messages == []  # 3 ahead: dropped
    assert receiver.receive_record(RecordNumber(2, 1), payload(1), 0.0).messages == []  # buffered
    assert receiver.receive_record(RecordNumber(2, 2), payload(2), 0.0).messages == []  # buffered
    assert receiver.buffered_bytes == 200
    # 100 more bytes would pass max_buffered_bytes: dropped although within the count.
    receiver.max_buffered_messages = 10
    assert receiver.receive_record(RecordNumber(2, 3), payload(4), 0.0).messages == []
    assert receiver.buffered_bytes == 200
    # §7: dropped records are never acknowledged; buffered ones are.
    assert set(receiver.build_ack(100).record_numbers) == {RecordNumber(2, 1), RecordNumber(2, 2)}
    got = receiver.receive_record(RecordNumber(2, 4), payload(0), 0.0).messages
    assert [m.message_seq for m in got] == [0, 1, 2]
    got = receiver.receive_record(RecordNumber(2, 5), payload(3), 0.0).messages  # the retransmission
    assert [m.message for m in got] == [msg[3]]


def test_inconsistent_fragments_are_fatal() -> None:
    def fresh() -> HandshakeReceiver:
        r = HandshakeReceiver(max_message_size=1000)
        r.receive_record(RecordNumber(2, 0), spec_fragment(CERTIFICATE, 100, 0, 0, bytes(50)), 0.0)
        return r

    cases = [
        (spec_fragment(CERTIFICATE, 100, 0, 40, bytes(9) + b"\x01"), 2, AlertDescription.illegal_parameter),
        (spec_fragment(FINISHED, 100, 0, 50, bytes(10)), 2, AlertDescription.illegal_parameter),
        (spec_fragment(CERTIFICATE, 101, 0, 50, bytes(10)), 2, AlertDescription.illegal_parameter),
        (spec_fragment(CERTIFICATE, 100, 0, 50, bytes(10)), 3, AlertDescription.unexpected_message),
        (spec_fragment(CERTIFICATE, 1001, 1, 0, bytes(10)), 2, AlertDescription.illegal_parameter),
    ]
    for payload, epoch, alert in cases:
        with pytest.raises(RemoteProtocolError) as info:
            fresh().receive_record(RecordNumber(epoch, 1), payload, 0.0)
        assert info.value.alert == alert
    # Identical overlapping bytes are fine (§5.5: overlapping ranges MUST be handled).
    fresh().receive_record(RecordNumber(2, 1), spec_fragment(CERTIFICATE, 100, 0, 10, bytes(60)), 0.0)


def test_key_update_ends_its_epoch_for_the_peer() -> None:
    # rfc9147bis §8: a post-handshake message after KeyUpdate in the same epoch
    # is unexpected_message.
    receiver = HandshakeReceiver(next_receive_seq=5)
    got = receiver.receive_record(RecordNumber(3, 0), spec_fragment(KEY_UPDATE, 1, 5, 0, b"\x00"), 0.0)
    assert [m.message for m in got.messages] == [bytes([KEY_UPDATE, 0, 0, 1, 0])]
    with pytest.raises(RemoteProtocolError) as info:
        receiver.receive_record(RecordNumber(3, 1), spec_fragment(4, 5, 6, 0, bytes(5)), 0.0)
    assert info.value.alert == AlertDescription.unexpected_message
    ok = HandshakeReceiver(next_receive_seq=5)
    ok.receive_record(RecordNumber(3, 0), spec_fragment(KEY_UPDATE, 1, 5, 0, b"\x00"), 0.0)
    assert len(ok.receive_record(RecordNumber(4, 0), spec_fragment(4, 5, 6, 0, bytes(5)), 0.0).messages) == 1


def test_sender_keeps_the_key_update_epoch_rules() -> None:
    # rfc9147bis §8: nothing more in the KeyUpdate's epoch, and nothing in the
    # next until the KeyUpdate and every earlier message are acknowledged.
    sender = HandshakeSender(FakeSealer(), is_client=True)
    sender.queue_message(handshake(4, 10), 3, 0.0)
    sender.queue_message(bytes([KEY_UPDATE, 0, 0, 1, 0]), 3, 0.0)
    sender.end_flight(0.0, final=True)
    nst, ku = (open_record(r)[0] for r in sender.records_to_send())
    with pytest.raises(LocalProtocolError):
        sender.queue_message(handshake(4, 10), 3, 0.1)  # the KeyUpdate ended epoch 3
    sender.on_ack(ACK((ku,)), 3, 0.1)
    with pytest.raises(LocalProtocolError):
        sender.queue_message(handshake(4, 10), 4, 0.2)  # an earlier message is not ACKed
    sender.on_ack(ACK((nst,)), 3, 0.2)
    sender.queue_message(handshake(4, 10), 4, 0.3)


def test_message_seq_never_wraps() -> None:
    sender = HandshakeSender(FakeSealer(), is_client=True, first_message_seq=0xFFFF)
    assert sender.queue_message(handshake(FINISHED, 32), 2, 0.0) == 0xFFFF
    with pytest.raises(LocalProtocolError):
        sender.queue_message(handshake(FINISHED, 32), 2, 0.0)


# -- ACKs and retransmission (§5.8, §7) -------------------------------------------------


def sent_certificate(mtu: int = 300) -> tuple[HandshakeSender, list[RecordNumber], list[bytes]]:
    sender = HandshakeSender(FakeSealer(), is_client=False, mtu=mtu)
    sender.queue_message(handshake(CERTIFICATE, 5000), 2, now=0.0)
    sender.end_flight(0.0, final=True)
    records = sender.records_to_send()
    return sender, [open_record(r)[0] for r in records], records


def test_partial_ack_resends_only_the_missing_fragments() -> None:
    sender, numbers, records = sent_certificate()
    sent = {n: f for n, f in fragments_of(records)}
    missing = [numbers[3], numbers[7]]
    acked = [n for n in numbers if n not in missing]
    assert sender.on_ack(ACK.from_records(acked), record_epoch=3, now=0.1) == []
    resent = fragments_of(sender.records_to_send())
    assert sorted((f.fragment_offset, f.fragment) for _, f in resent) == sorted(
        (sent[n].fragment_offset, sent[n].fragment) for n in missing
    )
    # §4.2.1: same epoch as the original, new record numbers.
    assert all(n.epoch == 2 and n not in numbers for n, _ in resent)
    assert sender.on_ack(ACK.from_records(n for n, _ in resent), 2, now=0.2) == [0]
    assert sender.records_to_send() == [] and sender.next_deadline is None


def test_fragments_sent_after_the_newest_acked_record_wait_for_the_timer() -> None:
    sender, numbers, _ = sent_certificate()
    sender.on_ack(ACK.from_records([numbers[0], numbers[2]]), 2, now=0.1)
    resent = fragments_of(sender.records_to_send())
    # Only numbers[1], sent before the newest acknowledged record, is taken as lost.
    assert [f.fragment_offset for _, f in resent] == [300 - FAKE_OVERHEAD - 12]
    assert sender.on_timeout(1.0)
    again = fragments_of(sender.records_to_send())
    assert len(again) == len(numbers) - 2  # everything not acknowledged, [1] included


def test_timer_backs_off_to_60_seconds_and_adapts_on_clean_ack() -> None:
    sender = HandshakeSender(FakeSealer(), is_client=True)
    sender.queue_message(handshake(FINISHED, 32), 2, now=0.0)
    sender.end_flight(0.0, final=True)
    (first,) = sender.records_to_send()
    assert sender.next_deadline == 1.0  # §5.8.2: 1000 ms initially
    now, values = 0.0, []
    for _ in range(9):
        assert sender.next_deadline is not None
        now = sender.next_deadline
        assert not sender.on_timeout(now - 0.001)
        assert sender.on_timeout(now)
        values.append(sender.timer.value)
        assert len(sender.records_to_send()) == 1
    assert values == [2, 4, 8, 16, 32, 60, 60, 60, 60]
    # A retransmitted message gives no RTT sample (Karn): the value stays.
    last = open_record(first)[0]
    sender.on_ack(ACK((last,)), 2, now + 0.5)
    assert sender.timer.value == 60
    # A message acknowledged on its first transmission sets 1.5 x RTT (§5.8.2).
    sender.queue_message(handshake(4, 10), 3, now + 1)
    sender.end_flight(now + 1, final=True)
    (record,) = sender.records_to_send()
    sender.on_ack(ACK((open_record(record)[0],)), 3, now + 1.2)
    assert sender.timer.value == pytest.approx(0.3)
    assert sender.state is FlightState.FINISHED


def test_timer_floor_and_idle_reset() -> None:
    timer = RetransmissionTimer(0.4, minimum=0.05)  # §5.8.2: profiles may choose, e.g. DTLS-SRTP
    timer.rtt_sample(0.001)
    assert timer.value == 0.05
    sender = HandshakeSender(FakeSealer(), is_client=True, timer=timer)
    sender.queue_message(handshake(4, 10), 3, 0.0)
    sender.end_flight(0.0, final=True)
    sender.on_timeout(10.0)
    assert timer.value == 0.1
    sender.on_ack(ACK.from_records(open_record(r)[0] for r in sender.records_to_send()), 3, 10.01)
    sender.queue_message(handshake(4, 10), 3, 10.5)  # idle 0.49 s < 10 x 0.1 s: kept
    assert timer.value == 0.1
    sender.implicit_ack(10.52, 1)  # answered on its first transmission: 1.5 x 0.02 s, floored
    assert timer.value == 0.05
    sender.queue_message(handshake(4, 10), 3, 12.0)  # idle 1.48 s >= 10 x 0.05: reset
    assert timer.value == 0.4
    with pytest.raises(ValueError):
        RetransmissionTimer(0.01, minimum=0.05)


def test_full_ack_notification_and_acknowledged_through() -> None:
    sealer = FakeSealer()
    sender = HandshakeSender(sealer, is_client=True, first_message_seq=4)
    sender.queue_message(handshake(4, 100), 3, 0.0)  # seq 4
    sender.queue_message(bytes([KEY_UPDATE, 0, 0, 1, 0]), 3, 0.0)  # seq 5
    sender.end_flight(0.0, final=True)
    nst, ku = (open_record(r)[0] for r in sender.records_to_send())
    assert sender.on_ack(ACK((ku,)), 3, 0.1) == [5]
    # rfc9147bis §8: the KeyUpdate may switch keys only when it AND all earlier
    # messages are acknowledged.
    assert not sender.acknowledged_through(5)
    assert sender.outstanding == (4,)
    assert sender.on_ack(ACK((nst, ku)), 3, 0.2) == [4]
    assert sender.acknowledged_through(5) and not sender.acknowledged_through(6)


def test_late_duplicate_and_unknown_acks_are_ignored() -> None:
    sender, numbers, _ = sent_certificate()
    assert sender.on_ack(ACK.from_records(numbers), 2, 0.1) == [0]
    value = sender.timer.value
    assert sender.on_ack(ACK.from_records(numbers), 2, 0.2) == []  # late duplicate
    assert sender.on_ack(ACK((RecordNumber(2, 999), RecordNumber(0, 5))), 2, 0.3) == []
    assert sender.records_to_send() == [] and sender.timer.value == value
    assert sender.state is FlightState.FINISHED


def test_ack_naming_a_higher_epoch_is_illegal_parameter() -> None:
    sender, numbers, _ = sent_certificate()
    with pytest.raises(RemoteProtocolError) as info:
        sender.on_ack(ACK((numbers[0], RecordNumber(3, 0))), record_epoch=2, now=0.1)
    assert info.value.alert == AlertDescription.illegal_parameter
    assert sender.outstanding == (0,)  # nothing was processed


def test_retransmissions_keep_their_epoch_and_follow_a_smaller_mtu() -> None:
    sender = HandshakeSender(FakeSealer(), is_client=True, mtu=1200)
    fin = handshake(FINISHED, 32)
    cert = handshake(CERTIFICATE, 1000)
    sender.queue_message(cert, 2, 0.0)
    sender.queue_message(fin, 2, 0.0)
    sender.end_flight(0.0, final=True)
    sender.queue_message(handshake(4, 60), 3, 0.0)
    sender.end_flight(0.0, final=True)
    first = [open_record(r)[0] for r in sender.records_to_send()]
    assert [n.epoch for n in first] == [2, 2, 3]
    sender.mtu = 300  # §4.4: the PMTU estimate dropped; §5.5: smaller fragments are fine
    sender.on_timeout(1.0)
    again = sender.records_to_send()
    assert all(len(r) <= 300 for r in again)
    numbers = [open_record(r)[0] for r in again]
    assert {n.epoch for n in numbers} == {2, 3} and not set(numbers) & set(first)
    receiver = HandshakeReceiver()
    got = []
    for record in again:
        number, _, payload = open_record(record)
        if number.epoch == 2:
            got += receiver.receive_record(number, payload, 1.0).messages
    assert [m.message for m in got] == [cert, fin]


def test_implicit_ack_covers_the_named_flight_only() -> None:
    sender = HandshakeSender(FakeSealer(), is_client=True)
    sender.queue_message(handshake(1, 200), 0, 0.0)  # ClientHello
    sender.end_flight(0.0)
    assert sender.state is FlightState.SENDING
    sender.records_to_send()
    assert sender.state is FlightState.WAITING
    assert sender.implicit_ack(0.1) == [0]  # ServerHello arrived (§7.2)
    assert sender.state is FlightState.PREPARING and sender.next_deadline is None
    sender.queue_message(handshake(FINISHED, 32), 2, 0.2)
    sender.end_flight(0.2, final=True)  # the client's last flight needs an explicit ACK
    sender.queue_message(handshake(13, 40), 3, 0.2)
    sender.end_flight(0.2)
    sender.records_to_send()
    assert sender.implicit_ack(0.3) == [2]  # only the flight that expects a reply
    assert sender.implicit_ack(0.3, 9) == []
    assert sender.implicit_ack(0.3, 1) == [1]
    assert sender.state is FlightState.PREPARING


def test_implicit_ack_of_a_first_transmission_adapts_the_timer() -> None:
    """§5.8.2 + §7.2: a message answered without having been retransmitted
    sets the timer to 1.5 x RTT, as an explicit ACK does; a side that is only
    ever answered (an EKU responder) must not keep its back-off for good."""
    sender = HandshakeSender(FakeSealer(), is_client=False)
    for now in (0.0, 2.0, 6.0):  # two expiries: 1 -> 2 -> 4 s
        if now == 0.0:
            sender.queue_message(handshake(28, 40), 3, now)
            sender.end_flight(now)
        else:
            assert sender.on_timeout(now)
        sender.records_to_send()
    assert sender.timer.value == 4
    assert sender.implicit_ack(6.5, 0) == [0]
    assert sender.timer.value == 4  # Karn: the answer may be to any copy
    sender.queue_message(handshake(28, 40), 3, 7.0)
    sender.end_flight(7.0)
    sender.records_to_send()
    assert sender.implicit_ack(7.2, 1) == [1]
    assert sender.timer.value == pytest.approx(1.5 * 0.2)


def test_hello_retry_request_is_not_retransmitted() -> None:
    # §3.1: the server keeps no retransmission timer for a HelloRetryRequest.
    sender = HandshakeSender(FakeSealer(), is_client=False)
    assert sender.queue_message(handshake(2, 90), 0, 0.0, retransmit=False) == 0
    (record,) = sender.records_to_send()
    assert decode_fragments(open_record(record)[2])[0].message_seq == 0
    sender.end_flight(0.0)
    assert sender.outstanding == () and sender.next_deadline is None
    assert not sender.on_timeout(100.0)
    assert sender.on_ack(ACK((open_record(record)[0],)), 0, 0.1) == []
    assert sender.queue_message(handshake(2, 90), 0, 1.0) == 1  # the ServerHello


def test_server_states_and_last_flight() -> None:
    sender = HandshakeSender(FakeSealer(), is_client=False)
    assert sender.state is FlightState.WAITING and sender.next_deadline is None
    sender.queue_message(handshake(2, 90), 0, 0.0)
    assert sender.state is FlightState.PREPARING
    sender.end_flight(0.0)
    sender.records_to_send()
    sender.implicit_ack(0.2, last_flight=True)  # the client's Finished arrived
    assert sender.state is FlightState.FINISHED


def test_peer_retransmission_triggers_one_fast_retransmission() -> None:
    sender = HandshakeSender(FakeSealer(), is_client=True, mtu=300)
    sender.queue_message(handshake(CERTIFICATE, 1000), 2, 0.0)
    sender.end_flight(0.0, final=True)
    numbers = [open_record(r)[0] for r in sender.records_to_send()]
    assert sender.on_peer_retransmission(0.5)
    assert len(sender.records_to_send()) == len(numbers)
    assert sender.next_deadline == 1.5  # re-armed
    assert not sender.on_peer_retransmission(0.6)  # same burst: once
    sender.on_ack(ACK((numbers[0],)), 2, 0.7)
    sender.records_to_send()
    # Something was acknowledged: the peer has our flight, the timer will do.
    assert not sender.on_peer_retransmission(2.0)
    assert sender.records_to_send() == []


# -- when to ACK (§7.1) ---------------------------------------------------------------


def test_ack_timer_policy() -> None:
    timer = RetransmissionTimer()
    receiver = HandshakeReceiver(timer=timer)
    m = handshake(CERTIFICATE, 600)
    frag = [spec_fragment(CERTIFICATE, 600, 0, o, m[4 + o : 4 + o + 200]) for o in (0, 200, 400)]
    receiver.receive_record(RecordNumber(2, 0), frag[0], 10.0)
    # In order, flight incomplete: ACK after 1/4 of the retransmit timer.
    assert receiver.ack_deadline == 10.25 and not receiver.ack_due(10.2) and receiver.ack_due(10.25)
    receiver.receive_record(RecordNumber(2, 1), frag[2], 10.1)  # a gap: ACK now
    assert receiver.ack_due(10.1)
    assert receiver.build_ack(10).record_numbers == (RecordNumber(2, 0), RecordNumber(2, 1))
    assert receiver.ack_deadline is None
    got = receiver.receive_record(RecordNumber(2, 2), frag[1], 10.2).messages
    assert [g.message for g in got] == [m]
    assert receiver.ack_deadline == 10.45
    # The connection answers with its next flight: an implicit ACK, no ACK record.
    receiver.clear_acks()
    assert receiver.ack_deadline is None
    # The peer retransmits a message we have: ACK now, listing earlier records too.
    receiver.receive_record(RecordNumber(2, 3), frag[0], 11.0)
    receiver.build_ack(10)
    receiver.receive_record(RecordNumber(2, 4), frag[1], 12.0)
    assert receiver.ack_due(12.0)
    assert receiver.build_ack(10).record_numbers == (RecordNumber(2, 3), RecordNumber(2, 4))
    # An explicit request with nothing recorded is an empty ACK (rfc9147bis §7.1).
    receiver.clear_acks()
    receiver.acknowledge_now(13.0)
    assert receiver.ack_due(13.0) and receiver.build_ack(10) == ACK()


def test_ack_favours_records_not_yet_acknowledged() -> None:
    receiver = HandshakeReceiver(max_ack_records=8)
    for seq in range(12):
        receiver.receive_record(RecordNumber(3, seq), spec_fragment(4, 8, seq, 0, bytes(8)), 0.0)
    # Only the 8 most recent are kept; 3 fit: the newest three.
    assert receiver.build_ack(3).record_numbers == tuple(RecordNumber(3, s) for s in (9, 10, 11))
    assert receiver.build_ack(3).record_numbers == tuple(RecordNumber(3, s) for s in (6, 7, 8))
    receiver.receive_record(RecordNumber(3, 12), spec_fragment(4, 8, 12, 0, bytes(8)), 0.0)
    # Record 4 was evicted (8 kept), 5 was never listed, 6..11 were: 5 and 12
    # only, records listed before are not repeated without need.
    assert receiver.build_ack(3).record_numbers == (RecordNumber(3, 5), RecordNumber(3, 12))


def test_pack_datagrams() -> None:
    records = [bytes([i]) * n for i, n in enumerate([100, 150, 60, 290, 10])]
    datagrams = pack_datagrams(records, 300)
    assert b"".join(datagrams) == b"".join(records)
    assert [len(d) for d in datagrams] == [250, 60, 300]  # 100+150 | 60 | 290+10


# -- a lossy link ---------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_lossy_link_delivers_every_message_once_in_order(seed: int) -> None:
    """20% loss, 10% duplication and reordering in both directions.

    KeyUpdates among the messages move the sender to the next epoch (its
    later messages go there, rfc9147bis §8), and ACKs go under the highest
    epoch received, so the ACK epoch rule (§7.2) is exercised too.
    """
    rng = random.Random(seed)
    mtu = 300
    sealer = FakeSealer()
    sender = HandshakeSender(sealer, is_client=False, mtu=mtu)
    receiver = HandshakeReceiver()
    ack_sealer = FakeSealer()
    messages = [handshake(rng.choice([4, 11, 24, 27]), rng.choice([1, 40, 700, 5000]), seed=i)
                for i in range(30)]
    in_flight: list[tuple[float, int, bytes]] = []  # (arrival, direction, datagram)
    order = 0

    def transmit(direction: int, datagrams: list[bytes], now: float) -> None:
        nonlocal order
        for d in datagrams:
            for _ in range(2 if rng.random() < 0.1 else 1):
                if rng.random() >= 0.2:
                    order += 1
                    in_flight.append((now + rng.uniform(0.01, 0.08), order, d if direction else b"A" + d))

    now = 0.0
    delivered: list[bytes] = []
    queued = 0
    send_epoch = ack_epoch = 3
    records_sent = 0
    for _ in range(20_000):
        if queued < len(messages) and sender.state in (FlightState.FINISHED, FlightState.WAITING) and (
            not sender.outstanding
        ):
            for _ in range(rng.choice([1, 2, 3])):
                if queued < len(messages):
                    sender.queue_message(messages[queued], send_epoch, now)
                    queued += 1
                    if messages[queued - 1][0] == KEY_UPDATE:
                        send_epoch += 1  # usable once this flight is acknowledged
                        break
            sender.end_flight(now, final=True)
        records = sender.records_to_send()
        records_sent += len(records)
        transmit(1, pack_datagrams(records, mtu), now)
        if receiver.ack_due(now):
            record, _ = ack_sealer.seal(ContentType.ACK, receiver.build_ack(16).encode(), ack_epoch)
            transmit(0, [record], now)
        if len(delivered) == len(messages) and not sender.outstanding:
            break
        deadlines = [t for t in (sender.next_deadline, receiver.ack_deadline) if t is not None]
        deadlines += [a for a, _, _ in in_flight]
        now = max(now, min(deadlines))
        sender.on_timeout(now)
        arrived = sorted(x for x in in_flight if x[0] <= now)
        in_flight[:] = [x for x in in_flight if x[0] > now]
        for _, _, datagram in arrived:
            if datagram[:1] == b"A":
                (number, _, payload), = open_datagram(datagram[1:])
                sender.on_ack(ACK.decode(payload), number.epoch, now)
                continue
            for number, _, payload in open_datagram(datagram):
                ack_epoch = max(ack_epoch, number.epoch)
                result = receiver.receive_record(number, payload, now)
                delivered += [m.message for m in result.messages]
                if result.messages:
                    receiver.acknowledge_now(now)  # a final flight: MUST be ACKed
    assert delivered == messages
    assert not sender.outstanding and sender.state is FlightState.FINISHED
    assert send_epoch > 3  # KeyUpdates were among the messages
    first_transmissions = sum(-(-max(len(m) - 4, 1) // (mtu - FAKE_OVERHEAD - 12)) for m in messages)
    assert records_sent > first_transmissions  # losses were repaired by retransmission
    assert receiver.buffered_bytes == 0


class _Endpoint:
    """One side of a simulated handshake: sender, receiver, one shared timer."""

    def __init__(self, is_client: bool) -> None:
        self.timer = RetransmissionTimer()
        self.sender = HandshakeSender(FakeSealer(), is_client=is_client, mtu=300, timer=self.timer)
        self.receiver = HandshakeReceiver(timer=self.timer)
        self.ack_sealer = FakeSealer()
        self.delivered: list[bytes] = []
        self.highest_epoch = 0  # ACKs go in the highest epoch received (§7)

    def send_flight(self, flight: list[tuple[bytes, int]], now: float, *, final: bool) -> None:
        for message, epoch in flight:
            self.sender.queue_message(message, epoch, now)
        self.sender.end_flight(now, final=final)


@pytest.mark.parametrize("seed", [11, 12, 13, 14, 15, 16])
def test_lossy_handshake_with_implicit_acks_and_a_final_ack(seed: int) -> None:
    """The lock-step handshake of §5.7 over a link with 20% loss, duplication
    and reordering: ClientHello; the server's flight (implicitly acknowledging
    it); the client's last flight (implicitly acknowledging the server's,
    explicitly ACKed); then a NewSessionTicket, explicitly ACKed.  Exercises
    the calls a DTLS connection makes: implicit_ack, clear_acks,
    on_peer_retransmission, acknowledge_now."""
    rng = random.Random(seed)
    client, server = _Endpoint(True), _Endpoint(False)
    ch = handshake(1, 250, seed=1)
    server_flight = [(handshake(2, 120, 2), 0), (handshake(8, 40, 3), 2), (handshake(11, 5000, 4), 2),
                     (handshake(15, 80, 5), 2), (handshake(20, 32, 6), 2)]
    client_flight = [(handshake(11, 1500, 7), 2), (handshake(15, 80, 8), 2), (handshake(20, 32, 9), 2)]
    ticket = handshake(4, 200, seed=10)
    in_flight: list[tuple[float, int, _Endpoint, bytes]] = []
    counter = 0

    def transmit(to: _Endpoint, datagrams: list[bytes], now: float) -> None:
        nonlocal counter
        for d in datagrams:
            for _ in range(2 if rng.random() < 0.1 else 1):
                if rng.random() >= 0.2:
                    counter += 1
                    in_flight.append((now + rng.uniform(0.005, 0.06), counter, to, d))

    def on_delivered(me: _Endpoint, messages: list[bytes], now: float) -> None:
        for message in messages:
            me.delivered.append(message)
            n = len(me.delivered)
            if me is server and n == 1:
                me.receiver.clear_acks()  # our flight answers the ClientHello
                me.send_flight(server_flight, now, final=False)
            elif me is client and n == 1:
                me.sender.implicit_ack(now)  # the server's flight answers ours (§7.2)
            elif me is client and n == len(server_flight):
                me.receiver.clear_acks()
                me.send_flight(client_flight, now, final=True)
            elif me is server and n == 2:
                me.sender.implicit_ack(now, last_flight=True)
            elif me is server and n == 1 + len(client_flight):
                me.receiver.acknowledge_now(now)  # the client's last flight MUST be ACKed
                me.send_flight([(ticket, 3)], now, final=True)
            elif me is client and n == len(server_flight) + 1:
                me.receiver.acknowledge_now(now)  # NewSessionTicket: MUST be ACKed

    client.send_flight([(ch, 0)], 0.0, final=False)
    now = 0.0
    for _ in range(50_000):
        for me, peer in ((client, server), (server, client)):
            records = me.sender.records_to_send()
            if me.receiver.ack_due(now):
                ack = me.receiver.build_ack(16).encode()
                records.append(me.ack_sealer.seal(ContentType.ACK, ack, me.highest_epoch)[0])
            transmit(peer, pack_datagrams(records, 300), now)
        done = (
            client.delivered == [m for m, _ in server_flight] + [ticket]
            and server.delivered == [ch] + [m for m, _ in client_flight]
            and not client.sender.outstanding and not server.sender.outstanding
        )
        if done:
            break
        deadlines = [t for e in (client, server) for t in (e.sender.next_deadline, e.receiver.ack_deadline)
                     if t is not None] + [a for a, _, _, _ in in_flight]
        assert deadlines, "stalled: nothing in flight and no timer armed"
        now = max(now, min(deadlines))
        client.sender.on_timeout(now)
        server.sender.on_timeout(now)
        arrived = sorted((x for x in in_flight if x[0] <= now), key=lambda x: (x[0], x[1]))
        in_flight[:] = [x for x in in_flight if x[0] > now]
        for _, _, me, datagram in arrived:
            for number, content_type, payload in open_datagram(datagram):
                if content_type == ContentType.ACK:
                    me.sender.on_ack(ACK.decode(payload), number.epoch, now)
                    continue
                me.highest_epoch = max(me.highest_epoch, number.epoch)
                result = me.receiver.receive_record(number, payload, now)
                if result.retransmission:
                    me.sender.on_peer_retransmission(now)  # §5.8.1 case 3
                on_delivered(me, [m.message for m in result.messages], now)
    else:
        pytest.fail("the handshake did not complete")
    assert client.sender.state is FlightState.FINISHED
    assert server.sender.state is FlightState.FINISHED
    assert now < 120, f"took {now:.1f} simulated seconds"
