"""DTLS 1.3 handshake reliability: message_seq, fragmentation, ACKs and
retransmission (RFC 9147 §5.2, §5.5, §5.8, §7; draft-ietf-tls-rfc9147bis-02).

Sans-I/O and clock-free: every call that depends on time takes ``now``
(seconds, any monotonic origin) and timers come out as deadlines.  The DTLS
connection drives three objects:

- ``HandshakeSender`` takes TLS-encoded handshake messages from the engines,
  gives each its message_seq (§5.2), cuts it into DTLSHandshake fragments that
  fit the path MTU (§5.5), has each fragment sealed as one record under the
  message's epoch (through the ``RecordSealer`` seam), remembers which record
  carried which bytes, and retransmits what is neither acknowledged nor
  implicitly acknowledged (§5.8, §7.2).
- ``HandshakeReceiver`` reassembles fragments that arrive out of order,
  duplicated or overlapping, hands back whole messages strictly in
  message_seq order as TLS-encoded bytes (the transcript form, §5.2), and
  keeps the list of records to acknowledge and the ACK timer (§7, §7.1).
- ``RetransmissionTimer`` holds the one retransmission timeout both share
  (§5.8.2): the sender's back-off and the receiver's ACK delay (1/4 of it).

Per-message retransmission state.  RFC 9147 §5.8.1 describes one state
machine per flight; the revision keeps that text but its rules are about
messages: §8 (rfc9147bis) lets a KeyUpdate switch keys only once "the
KeyUpdate and all preceding messages have been acknowledged", §5.8.4 runs an
independent state machine per post-handshake category, and §7.2 acknowledges
records, not flights.  So, following the revision, each message here keeps
its own state (unacknowledged byte ranges, deadline, whether it was ever
retransmitted), and a flight is only the group the timer is armed for
(``end_flight``) and that an implicit acknowledgement covers.  Messages of one
flight share a deadline, so on a timeout the whole unacknowledged part of the
flight goes again, which is §5.8.1's behaviour.

Decisions where the texts leave room are marked "Decision" and collected in
docs/dtls-reliability.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum
from typing import NamedTuple, Protocol

from ..constants import (
    MAX_HANDSHAKE_MESSAGE_DEFAULT,
    AlertDescription,
    ContentType,
    HandshakeType,
)
from ..errors import LocalProtocolError, RemoteProtocolError
from ..wire.dtls_ack import ACK
from ..wire.dtls_handshake import (
    DTLS_HANDSHAKE_HEADER_LENGTH,
    MAX_MESSAGE_SEQ,
    decode_fragments,
    encode_fragment,
    split_tls_message,
    tls_message,
)
from ..wire.dtls_record import RecordNumber

__all__ = [
    "DEFAULT_ACK_RECORDS_KEPT",
    "DEFAULT_MAX_BUFFERED_MESSAGES",
    "DEFAULT_MTU",
    "INITIAL_RETRANSMIT_TIMEOUT",
    "MAX_RETRANSMIT_TIMEOUT",
    "MIN_RETRANSMIT_TIMEOUT",
    "FlightState",
    "HandshakeReceiver",
    "HandshakeSender",
    "ReceiveResult",
    "ReceivedMessage",
    "RecordSealer",
    "RetransmissionTimer",
    "pack_datagrams",
]

#: Path MTU assumed when none is configured: fits the IPv6 minimum of 1280
#: with room for IP and UDP headers (RFC 9147 §4.4 leaves PMTU to the application).
DEFAULT_MTU = 1200
#: §5.8.2: "SHOULD use an initial timer value of 1000 ms" without RTT knowledge.
INITIAL_RETRANSMIT_TIMEOUT = 1.0
#: §5.8.2: double "up to no less than 60 seconds" (RFC 6298's maximum).
MAX_RETRANSMIT_TIMEOUT = 60.0
#: Decision: the floor under 1.5 x RTT (§5.8.2 names none).  On loopback an
#: RTT sample is well under a millisecond, and a timer that short would
#: retransmit while the peer is still computing its answer.
MIN_RETRANSMIT_TIMEOUT = 0.05
#: Decision: how many messages beyond next_receive_seq we buffer (§5.2 "SHOULD
#: queue the message but MAY discard it").  A full server flight is at most
#: 7 messages; 16 leaves room for post-handshake messages in flight.
DEFAULT_MAX_BUFFERED_MESSAGES = 16
#: Decision: how many received record numbers we remember for ACKs.
DEFAULT_ACK_RECORDS_KEPT = 64


class RecordSealer(Protocol):
    """The seam to the DTLS record layer: seal one record, and say how much fits.

    ``seal`` protects ``payload`` as one record of ``content_type`` under
    ``epoch`` (which must still be available for writing: retransmissions use
    their original epoch, RFC 9147 §4.2.1) and returns the record's bytes and
    its RecordNumber.  ``max_payload`` is the most plaintext bytes one record
    under ``epoch`` may carry so that the record fits ``mtu`` bytes.
    ``record.dtls_layer.DTLSRecordLayer`` has both, in this argument order.
    """

    def seal(
        self, content_type: ContentType, payload: bytes, epoch: int, /
    ) -> tuple[bytes, RecordNumber]: ...

    def max_payload(self, mtu: int, epoch: int, /) -> int: ...


class RetransmissionTimer:
    """The retransmission timeout (RFC 9147 §5.8.2), shared by sender and receiver.

    - starts at ``initial`` (1 s by default; §5.8.2 allows profiles to choose
      another value, e.g. 400 ms for DTLS-SRTP, or 1.5 x a known RTT);
    - doubles at each retransmission caused by a timeout, up to ``maximum``;
    - is set to 1.5 x the measured round trip once a message is acknowledged
      without having been retransmitted (§5.8.2 "SHOULD be adjusted to 1.5
      times the measured round trip time"), never below ``minimum``;
    - may go back to ``initial`` after an idle period of at least 10 times its
      value (§5.8.2 "MAY reset"): ``HandshakeSender`` does so.
    """

    __slots__ = ("initial", "maximum", "minimum", "value")

    def __init__(
        self,
        initial: float = INITIAL_RETRANSMIT_TIMEOUT,
        *,
        minimum: float = MIN_RETRANSMIT_TIMEOUT,
        maximum: float = MAX_RETRANSMIT_TIMEOUT,
    ) -> None:
        if not 0 < minimum <= initial <= maximum:
            raise ValueError("retransmission timer needs 0 < minimum <= initial <= maximum")
        self.initial = initial
        self.minimum = minimum
        self.maximum = maximum
        self.value = initial

    def __repr__(self) -> str:
        return f"<RetransmissionTimer value={self.value:g}s initial={self.initial:g}s>"

    def back_off(self) -> None:
        """§5.8.2: "double the value at each retransmission"."""
        self.value = min(self.value * 2, self.maximum)

    def rtt_sample(self, rtt: float) -> None:
        """A message was acknowledged without being retransmitted after ``rtt`` s."""
        self.value = min(max(1.5 * rtt, self.minimum), self.maximum)

    def reset(self) -> None:
        self.value = self.initial

    @property
    def ack_delay(self) -> float:
        """§7.1: one approach is "a timer for 1/4 the current retransmit timer value"."""
        return self.value / 4


class FlightState(Enum):
    """RFC 9147 §5.8.1's states, as ``HandshakeSender.state`` reports them."""

    #: Building the next flight: messages queued, ``end_flight`` not called yet.
    PREPARING = "preparing"
    #: Records sealed and waiting in ``records_to_send()``.
    SENDING = "sending"
    #: Nothing to send; waiting for an ACK, the peer's next flight or the timer
    #: (also the server's initial state, with no timer).
    WAITING = "waiting"
    #: The last flight was acknowledged (or the peer's last flight received).
    FINISHED = "finished"


def pack_datagrams(records: Iterable[bytes], mtu: int) -> list[bytes]:
    """Put records back to back into as few datagrams of at most ``mtu`` bytes
    as keep their order (§4.3: several records per datagram, none spanning
    two).  Records must carry their length field; a record larger than
    ``mtu`` travels alone.
    """
    datagrams: list[bytes] = []
    current: list[bytes] = []
    size = 0
    for record in records:
        if current and size + len(record) > mtu:
            datagrams.append(b"".join(current))
            current, size = [], 0
        current.append(record)
        size += len(record)
    if current:
        datagrams.append(b"".join(current))
    return datagrams


# -- Sending -------------------------------------------------------------------


class _Range:
    """Unacknowledged bytes [start, end) of a message body, and the send index
    of the record that last carried them."""

    __slots__ = ("end", "send_index", "start")

    def __init__(self, start: int, end: int, send_index: int) -> None:
        self.start = start
        self.end = end
        self.send_index = send_index


class _OutgoingMessage:
    __slots__ = (
        "body", "deadline", "epoch", "final", "flight", "message_seq", "msg_type",
        "partly_acknowledged", "pending", "records", "retransmitted",
    )

    def __init__(self, message_seq: int, msg_type: int, epoch: int, body: bytes, flight: int) -> None:
        self.message_seq = message_seq
        self.msg_type = msg_type
        self.epoch = epoch
        self.body = body
        self.flight = flight
        self.final = False
        self.pending: list[_Range] = []  # unacknowledged ranges, by offset
        self.records: list[RecordNumber] = []  # every record that carried a fragment
        self.deadline: float | None = None  # None until its flight ends
        self.retransmitted = False  # Karn: no RTT sample from a retransmitted message
        self.partly_acknowledged = False  # some record of it was acknowledged

    def __repr__(self) -> str:  # no body: handshake messages can carry secrets
        return f"<message_seq={self.message_seq} type={self.msg_type} epoch={self.epoch}>"


class _SentRecord:
    __slots__ = ("end", "message", "send_index", "sent_at", "start")

    def __init__(self, message: _OutgoingMessage, start: int, end: int, send_index: int, sent_at: float) -> None:
        self.message = message
        self.start = start
        self.end = end
        self.send_index = send_index
        self.sent_at = sent_at


class HandshakeSender:
    """Our side of handshake reliability: message_seq, fragments, retransmission.

    The connection calls ``queue_message`` for every handshake message the
    engines produce (TLS-encoded, with the epoch it must go under), then
    ``end_flight`` once the last message of a flight is queued, which arms the
    retransmission timer.  Sealed records come out of ``records_to_send()``.
    Acknowledgements come in through ``on_ack`` (explicit ACK records) and
    ``implicit_ack`` (the peer's next flight started arriving, §7.2); both
    return the message_seqs that just became fully acknowledged, and
    ``acknowledged_through(seq)`` tells whether a message and every earlier
    one are (what a KeyUpdate or EKU key switch waits for, rfc9147bis §8).
    ``next_deadline`` / ``on_timeout(now)`` drive retransmission.

    A fragment is one record (Decision: no packing of several fragments into
    a record; several records share a datagram instead, ``pack_datagrams``).
    """

    __slots__ = (
        "_building", "_flight", "_idle_since", "_key_update_epoch", "_key_update_seq",
        "_last_fast_retransmit",
        "_next_seq", "_outbox", "_outstanding", "_sealer", "_send_index", "_sent", "_state",
        "mtu", "timer",
    )

    def __init__(
        self,
        sealer: RecordSealer,
        *,
        is_client: bool,
        mtu: int = DEFAULT_MTU,
        timer: RetransmissionTimer | None = None,
        first_message_seq: int = 0,
    ) -> None:
        self._sealer = sealer
        #: The path MTU; may change at any time (§4.4): retransmissions are cut
        #: to the new size, and overlapping ranges are legal for the receiver (§5.5).
        self.mtu = mtu
        self.timer = timer if timer is not None else RetransmissionTimer()
        # §5.2: "The first message each side transmits in each association
        # always has message_seq = 0"; a server that answered with a stateless
        # HelloRetryRequest resumes the count where the cookie says.
        self._next_seq = first_message_seq
        self._outstanding: dict[int, _OutgoingMessage] = {}  # by message_seq, in order
        self._sent: dict[RecordNumber, _SentRecord] = {}
        self._outbox: list[bytes] = []
        self._building: list[_OutgoingMessage] = []
        self._send_index = 0
        self._flight = 0
        self._key_update_epoch = -1
        self._key_update_seq = -1
        self._last_fast_retransmit = float("-inf")
        self._idle_since: float | None = None
        # §5.8.1: "DTLS clients ... start in the PREPARING state.  DTLS servers
        # start in the WAITING state, but with empty buffers and no retransmit timer."
        self._state = FlightState.PREPARING if is_client else FlightState.WAITING

    def __repr__(self) -> str:
        return (
            f"<HandshakeSender state={self.state.value} next_message_seq={self._next_seq} "
            f"outstanding={list(self._outstanding)}>"
        )

    # -- what the connection reads ------------------------------------------

    @property
    def state(self) -> FlightState:
        if self._building:
            return FlightState.PREPARING
        if self._outbox:
            return FlightState.SENDING
        return self._state

    @property
    def next_message_seq(self) -> int:
        return self._next_seq

    @property
    def outstanding(self) -> tuple[int, ...]:
        """message_seqs sent and not yet (implicitly) acknowledged, in order."""
        return tuple(self._outstanding)

    @property
    def epochs_in_use(self) -> frozenset[int]:
        """Epochs a retransmission may still need: keep their write keys (§4.2.1)."""
        return frozenset(m.epoch for m in self._outstanding.values())

    @property
    def next_deadline(self) -> float | None:
        """When ``on_timeout`` must be called next, or None (nothing armed)."""
        deadlines = [m.deadline for m in self._outstanding.values() if m.deadline is not None]
        return min(deadlines) if deadlines else None

    def acknowledged_through(self, message_seq: int) -> bool:
        """True once ``message_seq`` and every earlier message we sent are
        acknowledged (explicitly or implicitly).

        rfc9147bis §8: "Implementations MUST NOT send records with the new keys
        until the KeyUpdate and all preceding messages have been acknowledged";
        the DTLS connection confirms a send-key switch on this.
        """
        if message_seq >= self._next_seq:
            return False
        oldest = next(iter(self._outstanding), None)  # dict order is message_seq order
        return oldest is None or oldest > message_seq

    def records_to_send(self) -> list[bytes]:
        """Sealed records waiting to go out, oldest first (and forget them)."""
        out, self._outbox = self._outbox, []
        return out

    # -- sending ---------------------------------------------------------------

    def queue_message(self, message: bytes, epoch: int, now: float, *, retransmit: bool = True) -> int:
        """Send one TLS-encoded handshake message under ``epoch``; its message_seq.

        The fragments are sealed at once and wait in ``records_to_send()``;
        the retransmission timer is armed by ``end_flight``.  ``retransmit=False``
        sends it once and keeps no state for it: the HelloRetryRequest, for
        which the server "maintains [no] retransmission timer" (§3.1), the
        client's retransmitted ClientHello prompting a new one.
        """
        if self._next_seq > MAX_MESSAGE_SEQ:
            # §5.2: "MUST NOT allow message_seq to wrap, but instead MUST
            # establish a new association".
            raise LocalProtocolError(
                "handshake message_seq would wrap past 65535 (RFC 9147 §5.2): "
                "this association is used up; start a new one",
                AlertDescription.internal_error,
            )
        msg_type, body = split_tls_message(message)
        if epoch <= self._key_update_epoch:
            # rfc9147bis §8: "After sending KeyUpdate in an epoch,
            # implementations MUST NOT send any new post-handshake messages in
            # that epoch" (send them once the KeyUpdate is acknowledged).
            raise LocalProtocolError(
                f"a KeyUpdate ended our epoch {self._key_update_epoch}: wait for its ACK "
                "and send under the next epoch (RFC 9147bis §8)",
                AlertDescription.internal_error,
            )
        if epoch > self._key_update_epoch >= 0 and not self.acknowledged_through(self._key_update_seq):
            # rfc9147bis §8: "MUST NOT send records with the new keys until the
            # KeyUpdate and all preceding messages have been acknowledged".
            raise LocalProtocolError(
                f"epoch {epoch} is not in use yet: our KeyUpdate (message_seq "
                f"{self._key_update_seq}) or an earlier message is not acknowledged",
                AlertDescription.internal_error,
            )
        if msg_type == HandshakeType.key_update:
            self._key_update_epoch = epoch
            self._key_update_seq = self._next_seq
        m = _OutgoingMessage(self._next_seq, msg_type, epoch, body, self._flight)
        self._next_seq += 1
        if not retransmit:
            self._transmit(m, [_Range(0, len(body), -1)], now)
            for rn in m.records:
                del self._sent[rn]
            return m.message_seq
        idle_since = self._idle_since
        if not self._outstanding and idle_since is not None and now - idle_since >= 10 * self.timer.value:
            # §5.8.2: "After a long period of idleness, no less than 10 times
            # the current timer value, implementations MAY reset the timer".
            self.timer.reset()
        self._idle_since = None
        self._outstanding[m.message_seq] = m
        self._building.append(m)
        m.pending = self._transmit(m, [_Range(0, len(body), -1)], now)
        return m.message_seq

    def end_flight(self, now: float, *, final: bool = False) -> None:
        """The last message of our flight is queued: arm its timer (§5.8.1 SENDING → WAITING).

        ``final``: no reply flight is expected, so only an explicit ACK
        completes it (the client's last handshake flight, NewSessionTicket,
        KeyUpdate, NewConnectionId, RequestConnectionId: §5.7 note 1, §5.8.4).
        """
        deadline = now + self.timer.value
        for m in self._building:
            m.final = final
            if m.message_seq in self._outstanding:
                m.deadline = deadline
        self._building = []
        self._flight += 1
        self._state = FlightState.WAITING

    def _transmit(self, m: _OutgoingMessage, ranges: list[_Range], now: float) -> list[_Range]:
        """Seal ``ranges`` of ``m`` as fragments; the ranges as now sent."""
        room = self._sealer.max_payload(self.mtu, m.epoch) - DTLS_HANDSHAKE_HEADER_LENGTH
        if room < 1:
            raise LocalProtocolError(
                f"an MTU of {self.mtu} bytes leaves no room for a handshake fragment",
                AlertDescription.internal_error,
            )
        body = memoryview(m.body)
        length = len(m.body)
        seal = self._sealer.seal
        sent: list[_Range] = []
        for r in ranges:
            offset = r.start
            while True:
                end = min(offset + room, r.end)
                record, number = seal(
                    ContentType.HANDSHAKE,
                    encode_fragment(m.msg_type, length, m.message_seq, offset, body[offset:end]),
                    m.epoch,
                )
                index = self._send_index
                self._send_index += 1
                self._outbox.append(record)
                self._sent[number] = _SentRecord(m, offset, end, index, now)
                m.records.append(number)
                sent.append(_Range(offset, end, index))
                offset = end
                if offset >= r.end:
                    break
        return sent

    def _retransmit(self, m: _OutgoingMessage, lost: list[_Range], now: float) -> None:
        kept = [r for r in m.pending if r not in lost]
        m.pending = sorted(kept + self._transmit(m, lost, now), key=lambda r: r.start)
        m.retransmitted = True
        m.deadline = now + self.timer.value

    # -- acknowledgements ------------------------------------------------------

    def on_ack(self, ack: ACK, record_epoch: int, now: float) -> list[int]:
        """Process an ACK that arrived in a record of ``record_epoch``.

        Returns the message_seqs that became fully acknowledged, in order.
        Records we never sent, or already saw acknowledged, are ignored (late
        and duplicate ACKs, §7.2).  Unacknowledged fragments sent before the
        newest record this ACK acknowledges are taken as lost and go again at
        once (§5.8.1 case 2, §7.2: "SHOULD retransmit the unacknowledged
        messages or fragments"); later ones may still be on their way and
        wait for the timer.
        """
        for rn in ack.record_numbers:
            if rn.epoch > record_epoch:
                # rfc9147bis §7.2 (new in the revision): "If any element of
                # record_numbers in the ACK references an epoch that is higher
                # than the epoch in which the ACK was received, the
                # implementation MUST terminate the connection with an
                # illegal_parameter alert."
                raise RemoteProtocolError(
                    f"ACK in epoch {record_epoch} acknowledges a record of epoch {rn.epoch}",
                    AlertDescription.illegal_parameter,
                )
        newest = -1
        rtt: float | None = None
        touched: list[_OutgoingMessage] = []
        sent_records = self._sent
        for rn in ack.record_numbers:
            sent = sent_records.pop(rn, None)
            if sent is None:
                continue
            m = sent.message
            m.pending = _subtract(m.pending, sent.start, sent.end)
            m.partly_acknowledged = True
            newest = max(newest, sent.send_index)
            if not m.retransmitted:
                sample = now - sent.sent_at
                rtt = sample if rtt is None else min(rtt, sample)
            touched.append(m)
        if newest < 0:
            return []
        if rtt is not None:
            self.timer.rtt_sample(rtt)  # §5.8.2
        done = sorted({m.message_seq for m in touched if not m.pending})
        finals = all(self._outstanding[s].final for s in done)
        for seq in done:
            self._complete(self._outstanding[seq])
        for m in self._outstanding.values():
            lost = [r for r in m.pending if r.send_index < newest]
            if lost:
                self._retransmit(m, lost, now)
        if not self._outstanding:
            self._idle_since = now
            if done and finals:
                # §5.8.1: "if the ACK was for the final flight, transitions to FINISHED".
                self._state = FlightState.FINISHED
        return done

    def implicit_ack(
        self, now: float, message_seq: int | None = None, *, last_flight: bool = False
    ) -> list[int]:
        """The peer's next flight started arriving: it acknowledges ours (§7.2:
        "the receipt of any record responding to a given flight MUST be taken
        as an implicit acknowledgement for the entire flight").

        ``message_seq`` names the flight (the one holding that message); None
        means every outstanding flight that expects a reply (not ``final``),
        which in the lock-step handshake is the previous flight.  Crossed
        requests are not responses (§7.1 note): name the flight.
        ``last_flight``: what arrived is the peer's last flight (the server
        receiving the client's Finished), so with nothing outstanding we are
        FINISHED (§5.8.1 "Receive last flight"); otherwise PREPARING.
        Returns the message_seqs acknowledged.
        """
        if message_seq is None:
            targets = [m for m in self._outstanding.values() if not m.final]
        else:
            named = self._outstanding.get(message_seq)
            if named is None:
                return []
            targets = [m for m in self._outstanding.values() if m.flight == named.flight]
        if targets and not any(m.retransmitted for m in targets):
            # §5.8.2: "acknowledged without having to be retransmitted" -- an
            # implicit acknowledgement (§7.2) is one too.  Without this sample
            # a side whose messages are only ever answered, never ACKed (an
            # EKU responder), would keep every back-off up to 60 s for good.
            # From the flight's last record; Karn: none of it was resent.
            sent = self._sent
            last = max((sent[rn].sent_at for m in targets for rn in m.records if rn in sent), default=None)
            if last is not None:
                self.timer.rtt_sample(now - last)
        for m in targets:
            self._complete(m)
        if not self._outstanding:
            self._idle_since = now
            self._state = FlightState.FINISHED if last_flight else FlightState.PREPARING
        return [m.message_seq for m in targets]

    def on_peer_retransmission(self, now: float) -> bool:
        """The peer retransmitted messages we already had (§5.8.1 case 3).

        If none of our outstanding messages has had any fragment acknowledged,
        the peer most likely lost our answer: retransmit it now and re-arm the
        timer.  At most once per quarter timer value (Decision), so a peer's
        whole retransmitted flight, several records, triggers one
        retransmission, not one per record.  Returns True if we retransmitted.
        """
        if not self._outstanding or now - self._last_fast_retransmit < self.timer.ack_delay:
            return False
        messages = list(self._outstanding.values())
        if any(m.partly_acknowledged for m in messages):
            return False  # the peer has (part of) our answer: the timer will do
        self._last_fast_retransmit = now
        for m in messages:
            self._retransmit(m, list(m.pending), now)
        return True

    def on_timeout(self, now: float) -> bool:
        """Retransmit every message whose deadline has passed (§5.8.1 case 1).

        The timer value doubles once per expiry (§5.8.2), however many
        messages were due; returns True if anything was retransmitted.
        """
        due = [m for m in self._outstanding.values() if m.deadline is not None and m.deadline <= now]
        if not due:
            return False
        self.timer.back_off()
        for m in due:
            self._retransmit(m, list(m.pending), now)
        return True

    def _complete(self, m: _OutgoingMessage) -> None:
        del self._outstanding[m.message_seq]
        m.pending = []
        m.deadline = None
        sent = self._sent
        for rn in m.records:
            sent.pop(rn, None)
        m.records = []


def _subtract(ranges: list[_Range], start: int, end: int) -> list[_Range]:
    """``ranges`` without [start, end) (an empty message's [0, 0) is removed by
    an acknowledgement of its empty fragment)."""
    out: list[_Range] = []
    empty_ack = start == end
    for r in ranges:
        disjoint = r.end <= start or r.start >= end
        if disjoint and not (empty_ack and r.start == r.end == start):
            out.append(r)
        else:
            if r.start < start:
                out.append(_Range(r.start, start, r.send_index))
            if r.end > end:
                out.append(_Range(end, r.end, r.send_index))
    return out


# -- Receiving -----------------------------------------------------------------


class ReceivedMessage(NamedTuple):
    """One whole handshake message, in message_seq order.

    ``message`` is TLS-encoded (4-byte header + body), the form the engines
    decode and the transcript hashes (§5.2); ``epoch`` is the epoch its
    records arrived in.
    """

    message_seq: int
    epoch: int
    message: bytes

    def __repr__(self) -> str:  # no bytes: a handshake body can carry secrets
        return (
            f"ReceivedMessage(message_seq={self.message_seq}, epoch={self.epoch}, "
            f"msg_type={self.message[0]}, length={len(self.message) - 4})"
        )


class ReceiveResult(NamedTuple):
    """What one handshake record brought."""

    #: Messages now complete, in message_seq order (usually none or one).
    messages: list[ReceivedMessage]
    #: The record carried a message we already delivered: the peer is
    #: retransmitting (our ACK or answer was lost).  The connection calls
    #: ``HandshakeSender.on_peer_retransmission`` (§5.8.1 case 3); the
    #: receiver has already made an ACK due (§5.8.1 "Retransmit ACK").
    retransmission: bool


class _IncomingMessage:
    __slots__ = ("body", "epoch", "length", "msg_type", "ranges")

    def __init__(self, msg_type: int, length: int, epoch: int) -> None:
        self.msg_type = msg_type
        self.length = length
        self.epoch = epoch
        self.body = bytearray(length)
        self.ranges: list[list[int]] = []  # received [start, end), merged, by offset

    def __repr__(self) -> str:
        return f"<incoming type={self.msg_type} length={self.length} ranges={self.ranges}>"

    @property
    def contiguous(self) -> int:
        """Bytes received from offset 0 without a hole."""
        ranges = self.ranges
        return ranges[0][1] if ranges and ranges[0][0] == 0 else 0

    @property
    def complete(self) -> bool:
        return self.length == 0 or self.contiguous == self.length

    def add(self, offset: int, data: bytes) -> None:
        end = offset + len(data)
        body = self.body
        view = memoryview(data)
        merged_start, merged_end = offset, end
        kept: list[list[int]] = []
        for r in self.ranges:
            s, e = r
            if e < offset or s > end:
                kept.append(r)
                continue
            lo, hi = max(s, offset), min(e, end)
            if lo < hi and body[lo:hi] != view[lo - offset : hi - offset]:
                # §5.5: "Receivers MAY check that retransmitted bytes are
                # identical and SHOULD abort the handshake with an
                # illegal_parameter alert if the value of a byte changes."
                raise RemoteProtocolError(
                    "retransmitted handshake bytes differ from the first copy",
                    AlertDescription.illegal_parameter,
                )
            merged_start, merged_end = min(merged_start, s), max(merged_end, e)
        body[offset:end] = view
        kept.append([merged_start, merged_end])
        kept.sort()
        self.ranges = kept


class HandshakeReceiver:
    """The peer's side: reassembly in message_seq order, and what to ACK when.

    ``receive_record(record_number, payload, now)`` takes the plaintext of each
    handshake record (after the record layer opened it) and returns the
    messages now deliverable.  It follows §5.2's next_receive_seq: an older
    message_seq is a retransmission (discarded, but its record acknowledged),
    a newer one is buffered within bounds (``max_buffered_messages`` ahead,
    ``max_buffered_bytes`` in all), and beyond them dropped without ACK
    (§7: "MUST NOT acknowledge records containing handshake messages or
    fragments which have not been processed or buffered").

    ACKs (§7.1): the connection sends one when ``ack_due(now)`` and builds it
    with ``build_ack``.  An ACK becomes due at once on a gap (a message or a
    fragment out of order) and on a retransmission; otherwise ``ack_delay``
    (1/4 of the retransmission timer) after the first unacknowledged record,
    unless the connection answers with a flight first (``clear_acks``:
    implicit acknowledgement, "ACKs SHOULD NOT be sent for these flights")
    or asks for one now (``acknowledge_now``: a flight that expects no reply,
    the client's Finished or a post-handshake message, "MUST be ACKed").
    """

    __slots__ = (
        "_ack_deadline", "_acks", "_buffered_bytes", "_ended_epoch", "_gap_reported",
        "_messages", "_next", "_relist", "max_ack_records", "max_buffered_bytes",
        "max_buffered_messages", "max_message_size", "timer",
    )

    def __init__(
        self,
        *,
        timer: RetransmissionTimer | None = None,
        next_receive_seq: int = 0,
        max_message_size: int = MAX_HANDSHAKE_MESSAGE_DEFAULT,
        max_buffered_messages: int = DEFAULT_MAX_BUFFERED_MESSAGES,
        max_buffered_bytes: int = 2 * MAX_HANDSHAKE_MESSAGE_DEFAULT,
        max_ack_records: int = DEFAULT_ACK_RECORDS_KEPT,
    ) -> None:
        self.timer = timer if timer is not None else RetransmissionTimer()
        self.max_message_size = max_message_size
        self.max_buffered_messages = max_buffered_messages
        self.max_buffered_bytes = max_buffered_bytes
        self.max_ack_records = max_ack_records
        # §5.2: "a next_receive_seq counter.  This counter is initially set to
        # zero" (a stateless-HRR server starts after the ClientHello it answered).
        self._next = next_receive_seq
        self._messages: dict[int, _IncomingMessage] = {}
        self._buffered_bytes = 0
        # Records to acknowledge, oldest first; True once listed in an ACK.
        self._acks: dict[RecordNumber, bool] = {}
        self._ack_deadline: float | None = None
        self._gap_reported = False
        self._relist = False
        self._ended_epoch = -1

    def __repr__(self) -> str:
        return (
            f"<HandshakeReceiver next_receive_seq={self._next} buffered={sorted(self._messages)} "
            f"ack_records={len(self._acks)}>"
        )

    @property
    def next_receive_seq(self) -> int:
        return self._next

    @property
    def buffered_bytes(self) -> int:
        return self._buffered_bytes

    # -- reassembly ----------------------------------------------------------

    def receive_record(self, record_number: RecordNumber, payload: bytes, now: float) -> ReceiveResult:
        """Take one handshake record's plaintext.

        Raises RemoteProtocolError (the alert is the spec's, see
        ``wire.dtls_handshake`` and below) for malformed or inconsistent
        fragments; whether such an error in an unprotected epoch-0 record is
        fatal or silently dropped (§4.5.2) is the connection's choice.
        """
        fragments = decode_fragments(payload)
        epoch = record_number.epoch
        accepted = True
        retransmission = False
        out_of_order = False
        delivered: list[ReceivedMessage] = []
        for f in fragments:
            seq = f.message_seq
            if seq < self._next:
                # §5.2: "If the sequence number is less than next_receive_seq,
                # the message MUST be discarded" -- it is a retransmission.
                retransmission = True
                continue
            m = self._messages.get(seq)
            if m is None:
                if f.length > self.max_message_size:
                    # As the TLS reassembler: a valid uint24 we refuse to buffer.
                    raise RemoteProtocolError(
                        f"handshake message of {f.length} bytes exceeds the limit of "
                        f"{self.max_message_size}",
                        AlertDescription.illegal_parameter,
                    )
                if seq != self._next:
                    # §5.2: "SHOULD queue the message but MAY discard it":
                    # within bounds we queue, beyond them we drop (no ACK).
                    if (
                        seq - self._next >= self.max_buffered_messages
                        or self._buffered_bytes + f.length > self.max_buffered_bytes
                    ):
                        accepted = False
                        continue
                elif f.fragment_offset == 0 and len(f.fragment) == f.length:
                    # The common case: the next message, whole, in one record.
                    delivered.append(self._deliver(seq, f.msg_type, epoch, f.fragment))
                    self._deliver_buffered(delivered)
                    continue
                m = _IncomingMessage(f.msg_type, f.length, epoch)
                self._messages[seq] = m
                self._buffered_bytes += f.length
            elif m.msg_type != f.msg_type or m.length != f.length:
                # Decision: a changed msg_type or length is a changed byte of
                # the message (§5.5, illegal_parameter).
                raise RemoteProtocolError(
                    f"fragments of handshake message {seq} disagree on type or length",
                    AlertDescription.illegal_parameter,
                )
            elif m.epoch != epoch:
                # §4.2.1: retransmissions use "the same epoch ... as the
                # original transmission"; RFC 9846 §5.1: a handshake message
                # must not span a key change (unexpected_message).
                raise RemoteProtocolError(
                    f"fragments of handshake message {seq} arrived in epochs {m.epoch} and {epoch}",
                    AlertDescription.unexpected_message,
                )
            if seq != self._next or f.fragment_offset > m.contiguous:
                out_of_order = True
            m.add(f.fragment_offset, f.fragment)
            if seq == self._next and m.complete:
                self._deliver_buffered(delivered)
        if delivered:
            self._gap_reported = False
        if accepted:
            self._note_ack(record_number)
            if retransmission:
                # §5.8.1: in FINISHED, "respond to retransmission of the
                # client's final flight with a retransmit of its ACK"; §7.1
                # post-handshake: ACK records "discarded because a previous
                # copy has been received".  Re-list what we acknowledged before.
                self._relist = True
                self._ack_deadline = now
            elif out_of_order and not self._gap_reported:
                # §7.1: ACK when "they receive a message or fragment which is
                # out of order" -- once per gap (Decision), not per record.
                self._gap_reported = True
                self._ack_deadline = now
            elif self._ack_deadline is None:
                # §7.1: "set a timer for 1/4 the current retransmit timer value
                # when the first record in the flight is received".
                self._ack_deadline = now + self.timer.ack_delay
        return ReceiveResult(delivered, retransmission)

    def _deliver(self, seq: int, msg_type: int, epoch: int, body: bytes | bytearray) -> ReceivedMessage:
        if epoch <= self._ended_epoch:
            # rfc9147bis §8 (new in the revision): "A KeyUpdate message
            # terminates the post-handshake stream in an epoch ... If a peer
            # violates this rule, the receiving peer MUST ... send an
            # unexpected_message alert".
            raise RemoteProtocolError(
                f"handshake message {seq} in epoch {epoch}, which the peer's KeyUpdate ended",
                AlertDescription.unexpected_message,
            )
        if msg_type == HandshakeType.key_update:
            self._ended_epoch = epoch
        self._next = seq + 1
        return ReceivedMessage(seq, epoch, tls_message(msg_type, body))

    def _deliver_buffered(self, delivered: list[ReceivedMessage]) -> None:
        messages = self._messages
        while (m := messages.get(self._next)) is not None and m.complete:
            del messages[self._next]
            self._buffered_bytes -= m.length
            delivered.append(self._deliver(self._next, m.msg_type, m.epoch, m.body))

    # -- acknowledgements ------------------------------------------------------

    def _note_ack(self, record_number: RecordNumber) -> None:
        acks = self._acks
        if record_number not in acks:
            acks[record_number] = False
            if len(acks) > self.max_ack_records:
                del acks[next(iter(acks))]

    @property
    def ack_deadline(self) -> float | None:
        """When an ACK should go out, or None."""
        return self._ack_deadline

    def ack_due(self, now: float) -> bool:
        return self._ack_deadline is not None and now >= self._ack_deadline

    def acknowledge_now(self, now: float) -> None:
        """Make an ACK due now: the flight needs an explicit ACK (§7.1 "All
        other flights MUST be ACKed"), or, with nothing recorded, an empty ACK
        (rfc9147bis §7.1: a liveness signal, e.g. for a record we cannot
        deprotect yet)."""
        self._ack_deadline = now

    def clear_acks(self) -> None:
        """Our next flight answers the peer's (an implicit acknowledgement, §7.1),
        or the peer's next flight started ("clearing their ACK list upon
        receiving the start of the next flight", §7): forget the records and
        cancel the ACK timer."""
        self._acks.clear()
        self._ack_deadline = None
        self._relist = False

    def build_ack(self, max_record_numbers: int) -> ACK:
        """The ACK to send now (possibly empty), and the ACK timer cancelled.

        Records not yet acknowledged come first, the most recent if they do
        not all fit (§7.1: "SHOULD favor including records which have not yet
        been acknowledged"); after a peer retransmission the ones acknowledged
        before are listed again with the room left ("SHOULD ACK as many
        received packets as can fit").  Sorted increasing (§7).
        """
        fresh = [rn for rn, listed in self._acks.items() if not listed]
        chosen = fresh[-max_record_numbers:] if max_record_numbers > 0 else []
        room = max_record_numbers - len(chosen)
        if self._relist and room > 0:
            old = [rn for rn, listed in self._acks.items() if listed]
            chosen.extend(old[-room:])
        for rn in chosen:
            self._acks[rn] = True
        self._ack_deadline = None
        self._relist = False
        return ACK.from_records(chosen)
