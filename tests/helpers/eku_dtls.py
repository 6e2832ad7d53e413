"""A model DTLS 1.3 host for the Extended Key Update state machine (handshake/eku.py).

What a DTLS connection does around the EKU state machine, reduced to what
the EKU texts talk about (draft-13 §6, draft-2025-10 §6, Appendix B.2, and
the working group's SPIN models), so tests can drive two state machines step
by step and read both ends' epochs after each step:

- epochs per direction (``tx``, ``rx``) and the retained old receive epoch
  (``old_rx``), which stays readable until a record under the new one
  arrives (draft-13 §6: "receivers MUST retain the pre-update keying
  material until receipt and successful decryption of a message using the
  new keys"; App. B.2.1's acceptance rule);
- one record per datagram, tagged with the sender's epoch; a record under an
  epoch the receiver cannot read is discarded (RFC 9147 §4.5.2);
- handshake messages numbered by message_seq, delivered in order, a repeated
  one recognised and not delivered again (RFC 9147 §5.2); a repeat makes the
  receiver acknowledge it again and retransmit its own unacknowledged
  messages (§5.8.1 case 3);
- ACKs (RFC 9147 §7) only when the state machine asks (``send_ack``) or for
  a repeat; they name message_seqs (one record per message in this model);
- retransmission only when the test says (``retransmit``: the timer fired).

Nothing is sent or delivered by itself: each host's records wait in its
``outbox`` until the test moves them (``deliver``, ``take``), so a test can
drop, duplicate and reorder them at will.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import NamedTuple

from longtls.constants import CipherSuite, EKUProfileName, NamedGroup
from longtls.crypto.suites import SUITES
from longtls.events import Event
from longtls.handshake.eku import EKUAdmission, ExtendedKeyUpdate
from longtls.handshake.eku_profiles import PROFILES
from longtls.handshake.transport import DTLS
from longtls.wire.eku import Kind

SUITE = SUITES[CipherSuite.TLS_AES_128_GCM_SHA256]
#: The epoch of application data right after a DTLS 1.3 handshake (RFC 9147
#: §6.1: 0 plaintext, 1 early data, 2 handshake, 3 application data); the
#: drafts' examples start there too.
APPLICATION_EPOCH = 3


@dataclass
class ModelConfig:
    rekey_timeout: float | None = None
    eku_required: bool = False

    def now(self) -> float:
        return 0.0


class Record(NamedTuple):
    """One record (one datagram in this model), tagged with the sender's epoch."""

    content: str  # "handshake", "ack" or "app"
    epoch: int
    message_seq: int = -1
    message: bytes = b""  # the TLS-encoded handshake message
    acks: tuple[int, ...] = ()  # message_seqs acknowledged
    label: str = ""  # "Req", "Resp", "Fin", "NKU", "ACK", "APP"


def message_label(profile: EKUProfileName, message: bytes) -> str:
    """Req / Resp / Fin (draft-13) or NKU (the four-message texts)."""
    p = PROFILES[profile]
    kind = p.codec.decode(message[0], message[4:]).kind
    if kind is Kind.REQUEST:
        return "Req"
    if kind is Kind.RESPONSE:
        return "Resp"
    return "Fin" if p.three_messages else "NKU"


@dataclass
class ModelHost:
    """An EKUHost with the DTLS facts the EKU texts rely on (see the module docstring)."""

    name: str
    is_client: bool
    profile: EKUProfileName
    tx: int = APPLICATION_EPOCH
    rx: int = APPLICATION_EPOCH
    admission: EKUAdmission = EKUAdmission.ACCEPT
    configuration: ModelConfig = field(default_factory=ModelConfig)
    close_sent: bool = False
    #: The receive epoch kept readable after a switch (None: none kept).
    old_rx: int | None = None
    tx_secrets: dict[int, bytes] = field(default_factory=dict)
    rx_secrets: dict[int, bytes] = field(default_factory=dict)
    outbox: list[Record] = field(default_factory=list)
    #: Our handshake messages not yet acknowledged, by message_seq (as first sent).
    unacked: dict[int, Record] = field(default_factory=dict)
    next_seq: int = 0
    next_receive_seq: int = 0
    buffered: dict[int, Record] = field(default_factory=dict)
    to_ack: list[int] = field(default_factory=list)
    app_received: list[tuple[int, bytes]] = field(default_factory=list)
    discarded: list[Record] = field(default_factory=list)
    implicitly_acknowledged: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    completed: int = 0
    eku: ExtendedKeyUpdate = field(init=False)

    # -- EKUHost -----------------------------------------------------------------

    def queue_handshake(self, message: bytes) -> None:
        record = Record("handshake", self.tx, self.next_seq, message, label=message_label(self.profile, message))
        self.next_seq += 1
        self.unacked[record.message_seq] = record
        self.outbox.append(record)

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def log_secret(self, label: str, secret: bytes) -> None:
        pass

    def request_send_switch(self, secret: bytes) -> None:
        self.tx += 1
        self.tx_secrets[self.tx] = secret
        self.eku.send_switch_done()

    def switch_receive(self, secret: bytes) -> None:
        self.old_rx = self.rx
        self.rx += 1
        self.rx_secrets[self.rx] = secret

    def eku_admission(self) -> EKUAdmission:
        return self.admission

    def eku_wait_seconds(self) -> float:
        return 1.0

    def eku_completed(self) -> None:
        self.completed += 1

    def send_ack(self) -> None:
        if self.to_ack:
            self.outbox.append(Record("ack", self.tx, acks=tuple(self.to_ack), label="ACK"))
            self.to_ack = []

    def acknowledged_implicitly(self, message: bytes) -> None:
        seq = next((s for s, r in self.unacked.items() if r.message == message), None)
        if seq is None:
            return
        # The peer reads our messages in message_seq order: it has every earlier one too.
        for s in [s for s in self.unacked if s <= seq]:
            self.implicitly_acknowledged.append(self.unacked.pop(s).label)

    # -- the transport, driven by the test -----------------------------------------

    def send_app(self, data: bytes = b"app") -> None:
        self.outbox.append(Record("app", self.tx, message=data, label="APP"))

    def readable(self, epoch: int) -> bool:
        """App. B.2.1: accept if e == rx or (retain_old && e == old_rx)."""
        return epoch == self.rx or epoch == self.old_rx

    def retransmit(self) -> None:
        """The retransmission timer fired: every unacknowledged message again,
        under its original epoch (RFC 9147 §4.2.1)."""
        self.outbox.extend(self.unacked.values())

    def receive(self, record: Record) -> None:
        if not self.readable(record.epoch):
            self.discarded.append(record)  # RFC 9147 §4.5.2: silently discarded
            return
        if record.epoch == self.rx:
            self.old_rx = None  # a record under the new epoch decrypted: retention ends
        if record.content == "app":
            self.app_received.append((record.epoch, record.message))
        elif record.content == "ack":
            for seq in record.acks:
                sent = self.unacked.pop(seq, None)
                if sent is not None:  # late and repeated ACKs name nothing outstanding
                    self.eku.message_acknowledged(sent.message)
        else:
            self._receive_handshake(record)

    def _receive_handshake(self, record: Record) -> None:
        if record.message_seq < self.next_receive_seq or record.message_seq in self.buffered:
            # RFC 9147 §5.2: a message we already have.  Acknowledge it again
            # (our ACK may have been lost) and resend what the peer may be
            # missing (§5.8.1 case 3).
            self.to_ack.append(record.message_seq)
            self.send_ack()
            self.retransmit()
            return
        self.buffered[record.message_seq] = record
        while self.next_receive_seq in self.buffered:
            r = self.buffered.pop(self.next_receive_seq)
            self.next_receive_seq += 1
            self.to_ack.append(r.message_seq)
            self.eku.handle(r.message[0], r.message[4:], r.message)

    @property
    def epochs(self) -> tuple[int, int]:
        return self.tx, self.rx


def take(host: ModelHost, label: str | None = None) -> Record:
    """Remove from ``host``'s outbox its first record (with that label)."""
    for i, record in enumerate(host.outbox):
        if label is None or record.label == label:
            return host.outbox.pop(i)
    raise AssertionError(f"{host.name} has no {label or 'record'} to send: {[r.label for r in host.outbox]}")


def deliver(src: ModelHost, dst: ModelHost, label: str | None = None) -> Record:
    """Move ``src``'s first record (with that label) to ``dst``."""
    record = take(src, label)
    dst.receive(record)
    return record


def flush(a: ModelHost, b: ModelHost) -> None:
    """Deliver everything either side has to send, until both are quiet."""
    while a.outbox or b.outbox:
        for src, dst in ((a, b), (b, a)):
            while src.outbox:
                dst.receive(src.outbox.pop(0))


def pair(
    profile: EKUProfileName, *, initiator_is_client: bool = True, epoch: int = APPLICATION_EPOCH,
    main_secret: bytes | None = None, handshake_hash: bytes | None = None,
) -> tuple[ModelHost, ModelHost]:
    """(initiator's host, responder's host), each with its EKU state machine over
    DTLS; the handshake's main secret and transcript hash are random unless given."""
    main = os.urandom(32) if main_secret is None else main_secret
    handshake_hash = os.urandom(32) if handshake_hash is None else handshake_hash
    exporter = os.urandom(32)
    hosts = []
    for name, is_client in (("I", initiator_is_client), ("R", not initiator_is_client)):
        host = ModelHost(name, is_client, profile, tx=epoch, rx=epoch)
        host.eku = ExtendedKeyUpdate(
            host, PROFILES[profile], SUITE, NamedGroup.x25519, main, handshake_hash, exporter, exporter,
            transport=DTLS,
        )
        hosts.append(host)
    return hosts[0], hosts[1]


def key_exchange(record: Record, profile: EKUProfileName) -> bytes:
    """The key_exchange of a request record (the crossed-requests tie-break compares these)."""
    msg = PROFILES[profile].codec.decode(record.message[0], record.message[4:])
    assert msg.kind is Kind.REQUEST
    return msg.key_exchange  # type: ignore[union-attr]
