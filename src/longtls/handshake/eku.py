"""Extended Key Update over TLS 1.3 (draft-ietf-tls-extended-key-update): the state machine.

A fresh key exchange inside a live connection, with the group negotiated in
the handshake, derives a new main secret and new application traffic,
exporter and resumption secrets.  The draft changed twice; longtls speaks all
three texts, one per connection (handshake/eku_profiles.py, docs/eku-profiles.md):

- ``draft-13`` (default): one HandshakeType with subtypes request, response,
  finish; three messages; the responder switches its send keys right after
  its response; chained transcript hash.
- ``draft-2025-10``: same message type, subtype 2 is new_key_update; four
  messages (NKU from each side); context Hash(Req || Resp).
- ``draft-05``: three HandshakeTypes (request, response, new_key_update); the
  response carries a status (accepted, retry + delay, rejected, clashed);
  four messages.

The parts: the messages are in :mod:`longtls.wire.eku`, the derivation of
generation N+1 is :func:`longtls.crypto.key_schedule.next_eku_generation`,
the profiles are data in :mod:`longtls.handshake.eku_profiles`; this module
only decides what to send and when to switch keys.

**Key switches are requested, then confirmed.**  The state machine never
installs keys itself; it talks to its connection through :class:`EKUHost`:

- a receive switch is immediate: ``host.switch_receive(secret)``;
- a send switch is a request: ``host.request_send_switch(secret)``.  The host
  answers with :meth:`ExtendedKeyUpdate.send_switch_done` once the new write
  key is in use.  A TLS connection does that at once, from inside
  ``request_send_switch`` (every message queued before the request leaves
  under the old key).  Over DTLS the state machine itself waits for the ACK
  the text names before it asks (below), so a DTLS host confirms at once too;
  a host that confirms later still works.  The generation completes when
  both directions have switched; until the send switch is confirmed the
  state is :attr:`Role.SWITCHING` (never seen with TLS).

**Over DTLS 1.3** (``transport=DTLS``; docs/eku-over-dtls.md) the texts move
each direction's epoch at other steps than over TLS, and some steps wait for
an ACK (RFC 9147 §7).  The state machine owns those steps; the host reports
and carries out the DTLS facts:

- the host tells the state machine that the peer acknowledged one of our EKU
  messages with an ACK: :meth:`ExtendedKeyUpdate.message_acknowledged`;
- the state machine tells the host that the message it is handling answers
  one of ours, which is thereby implicitly acknowledged (RFC 9147 §7.2):
  ``host.acknowledged_implicitly(message)`` (stop retransmitting it);
- the state machine asks for an ACK at the steps the texts name one
  (``host.send_ack()``): the responder's ACK of draft-13's Finish, the
  initiator's ACK of the responder's new_key_update, a deferred request;
- a send switch is requested only once the text's condition holds (the ACK
  arrived, or the peer's message proves delivery), so a DTLS host confirms
  it at once, like TLS.  That is also what rfc9147bis-02 §8 asks of a
  KeyUpdate: no record under the new keys "until the KeyUpdate and all
  preceding messages have been acknowledged" (RFC 9147 §8 names only the
  KeyUpdate's own ACK; we follow the revision); ``switch_receive`` advances the receive epoch and the
  host keeps the old one readable until a record under the new one arrives
  (draft-13 §6: "receivers MUST retain the pre-update keying material").

Retransmission, duplicate suppression (message_seq, RFC 9147 §5.2) and the
record epochs themselves are the host's: a retransmitted message never
reaches this state machine twice.

Decisions where the texts are silent (../shared/specs/README.md): EKU
messages enter every hash with their 4-byte handshake header; key_exchange
values compare byte-wise (a prefix is lower); draft-13's transcript_hash_N is
used directly as the HKDF-Expand-Label context.  In the four-message flows the
initiator switches its send keys right after its new_key_update (draft-2025-10
§5 step 4, and the only reading of draft-05 §4 under which "the NewKeyUpdate
encrypted with the old key is received before any message with the new key").
"""

from __future__ import annotations

import math
from enum import Enum
from typing import TYPE_CHECKING, Protocol

from ..constants import AlertDescription
from ..crypto import key_schedule as ks
from ..crypto.groups import KeyShare, get_group
from ..crypto.suites import SuiteInfo
from ..errors import LocalProtocolError, RemoteProtocolError
from ..events import (
    ExporterUpdated,
    KeyUpdateCompleted,
    KeyUpdateRejected,
    KeyUpdateStarted,
    Side,
    UpdateRejection,
)
from ..wire.eku import (
    EKUMessage,
    EKUResponse,
    ExtendedKeyUpdateFinish,
    ExtendedKeyUpdateRequest,
    ExtendedKeyUpdateRequestD05,
    ExtendedKeyUpdateResponseD05,
    NewKeyUpdateD05,
    Status,
)
from .eku_profiles import EKUProfile
from .transport import TLS, Transport

if TYPE_CHECKING:
    from ..config import Configuration
    from ..events import Event


class EKUAdmission(Enum):
    """The host's answer to a peer's update request (EKU draft-13 §11.3, §8.3)."""

    ACCEPT = "accept"  # answer now
    DEFER = "defer"  # hold the response back (rate limit, client authentication under way)
    REJECT = "reject"  # refuse for good (eku_max_peer_updates reached)


class EKUHost(Protocol):
    """What the EKU state machine needs from its connection (TLS today; DTLS next)."""

    @property
    def is_client(self) -> bool: ...

    @property
    def configuration(self) -> Configuration: ...

    @property
    def close_sent(self) -> bool:
        """We sent close_notify: send nothing more (RFC 9846 §6.1)."""
        ...

    def queue_handshake(self, message: bytes) -> None:
        """Send one handshake message (with its header) under the current write key."""

    def emit(self, event: Event) -> None: ...

    def log_secret(self, label: str, secret: bytes) -> None: ...

    def request_send_switch(self, secret: bytes) -> None:
        """Use ``secret`` for everything sent after what is queued now; call
        ``send_switch_done()`` on the state machine once it is in use."""

    def switch_receive(self, secret: bytes) -> None:
        """Read everything after the current message with ``secret``."""

    def eku_admission(self) -> EKUAdmission: ...

    def eku_wait_seconds(self) -> float:
        """draft-05 "retry": how long the peer should wait before asking again."""
        ...

    def eku_completed(self) -> None:
        """A generation completed (rekey policy, tickets)."""

    def send_ack(self) -> None:
        """DTLS only: send now an ACK (RFC 9147 §7) of the handshake records
        received so far, under the current write epoch (so after a send switch
        requested just before).  Called at the steps the EKU texts name an ACK.
        TLS: never called; implement as a no-op (TCP acknowledges)."""

    def acknowledged_implicitly(self, message: bytes) -> None:
        """DTLS only: the peer's message being handled answers ``message`` (one
        of ours, the bytes given to ``queue_handshake``), so the peer has it
        (RFC 9147 §7.2 implicit acknowledgement): stop retransmitting it, and
        every message we sent before it (the peer reads ours in message_seq
        order, RFC 9147 §5.2, so it has those too: e.g. a request we abandoned
        to a crossing one).
        TLS: never called; implement as a no-op (nothing is retransmitted)."""


class Role(Enum):
    IDLE = "idle"
    WAIT_RESP = "wait_resp"  # initiator: request sent
    # initiator (4 messages): our NKU sent; TLS: send keys new; DTLS: both old
    # until the responder's NKU (draft-2025-10 §6 step 7)
    WAIT_PEER_FINISH = "wait_peer_finish"
    RESPONDING = "responding"  # responder: response deferred (rate limit or PHA in progress)
    WAIT_FINISH = "wait_finish"  # responder: response sent, waiting for the initiator's finish
    # DTLS: our last message (draft-13 Finish, draft-2025-10/05 responder's NKU)
    # sent under the old epoch; the send epoch moves on its ACK (App. B.2 WAIT_ACK)
    WAIT_ACK = "wait_ack"
    SWITCHING = "switching"  # all messages exchanged; the host has not confirmed our send switch


class ExtendedKeyUpdate:
    """The EKU state of one connection: generation N's secrets and the exchange in flight.

    Holds key material; ``repr`` shows only the profile, generation and state.
    """

    def __init__(
        self, host: EKUHost, profile: EKUProfile, suite: SuiteInfo, group: int,
        main_secret: bytes, handshake_hash: bytes, exporter_secret: bytes,
        epoch0_exporter: bytes, *, transport: Transport = TLS, prefix: bytes | None = None,
    ) -> None:
        self.host = host
        self.profile = profile
        self.suite = suite
        #: The transport's HKDF label prefix: every generation's labels are
        #: expanded under it ("dtls13" over DTLS, RFC 9147 §5.9).  ``prefix``
        #: overrides the transport's (tests deriving under dtls13 labels alone).
        self.prefix = transport.label_prefix if prefix is None else prefix
        #: Decision: the transport says whether the exchange runs over DTLS
        #: (the engines hold the same Transport), not the host: one value
        #: decides labels and flow, so they cannot disagree.
        self.datagram = transport.datagram
        self.group = get_group(group)
        self.generation = 0
        self.role = Role.IDLE
        self._main_secret = main_secret
        # draft-13 §6: transcript_hash_0 covers ClientHello..client Finished.
        self.transcript_hash = handshake_hash
        self.exporter_secret = exporter_secret
        # The epoch-aware exporter (draft-13 §9.1: generation 0 is "exporter eku").
        self.epoch_exporters: dict[int, bytes] = {0: epoch0_exporter}
        self.resumption_secret = b""
        self._next: ks.EKUGeneration | None = None
        self._share: KeyShare | None = None
        self._request = b""
        # DTLS: our response and our finish/NKU of the exchange in flight, named
        # in implicit acknowledgements and matched against ACKs.
        self._response = b""
        self._finish = b""
        self._peer_request = b""
        self._peer_key_exchange = b""
        self._clash_pending = False
        self._initiated_locally = False
        self._send_switch_pending = False
        self._started_at = 0.0
        #: draft-05 "retry": no new request from us before this time.
        self.retry_not_before = float("-inf")
        # The peer must have answered (sent its response or finish) by then;
        # the host's timer enforces it (rekey_timeout).
        self._deadline: float | None = None
        #: Seconds the exchange under way was given (for the error message).
        self.timeout = math.inf

    def __repr__(self) -> str:
        return f"<ExtendedKeyUpdate {self.profile.name} generation={self.generation} {self.role.value}>"

    @property
    def in_progress(self) -> bool:
        return self.role is not Role.IDLE

    @property
    def deadline(self) -> float | None:
        """When the peer's next message of this update is overdue, or None.

        Only while we wait for the peer: not while idle, and not while we hold
        our own response back (RESPONDING: the wait is ours, not the peer's).
        """
        if self.role in (Role.WAIT_RESP, Role.WAIT_PEER_FINISH, Role.WAIT_FINISH, Role.WAIT_ACK):
            return self._deadline
        return None

    def _arm_deadline(self, timeout: float | None, now: float | None = None) -> None:
        """The whole exchange, from our request (or our response) to its
        completion, gets ``timeout`` seconds (None: rekey_timeout), from
        ``now`` (None: the configuration's clock)."""
        cfg = self.host.configuration
        allowed = cfg.rekey_timeout if timeout is None else timeout
        self.timeout = math.inf if allowed is None else allowed
        if math.isinf(self.timeout):
            self._deadline = None
        else:
            self._deadline = (cfg.now() if now is None else now) + self.timeout

    @property
    def message_types(self) -> frozenset[int]:
        return self.profile.message_types

    def _side(self, local: bool) -> Side:
        return Side.client if self.host.is_client == local else Side.server

    def _send(self, msg: EKUMessage) -> bytes:
        return self._queue(msg.encode())

    def _queue(self, raw: bytes) -> bytes:
        """Send one whole EKU message (the codec's ``*_message`` bytes)."""
        self.host.queue_handshake(raw)
        return raw

    # ----------------------------------------------------------- key switches

    def _switch_send(self) -> None:
        assert self._next is not None
        send = self._next.client_traffic_secret if self.host.is_client else self._next.server_traffic_secret
        self._send_switch_pending = True
        self.host.request_send_switch(send)

    def _switch_receive(self) -> None:
        assert self._next is not None
        receive = self._next.server_traffic_secret if self.host.is_client else self._next.client_traffic_secret
        self.host.switch_receive(receive)

    def send_switch_done(self) -> None:
        """The host: the send key requested last is in use now."""
        if not self._send_switch_pending:
            raise LocalProtocolError("no send key switch was requested")
        self._send_switch_pending = False
        if self.role is Role.SWITCHING:
            self._complete()

    def _exchange_done(self) -> None:
        """All messages of this update are exchanged: complete it, once the
        host has confirmed our send switch."""
        if self._send_switch_pending:
            self.role = Role.SWITCHING
        else:
            self._complete()

    def message_acknowledged(self, message: bytes) -> None:
        """The host (DTLS): the peer acknowledged ``message`` (one of ours, the
        bytes given to ``queue_handshake``) in full with an ACK (RFC 9147 §7).

        Only the ACK the current step waits for moves an epoch: draft-13 §6
        step 7 (the initiator's send epoch on the ACK of its Finish),
        draft-2025-10 §6 step 9 (the responder's on the ACK of its NKU).  Any
        other is ignored: the ACK of a request (delivery only, §6 step 1), a
        late ACK after the response ("a late ACK MUST be ignored and MUST NOT
        affect the extended key update state machine", draft-13 §6 step 2).
        """
        if self.role is Role.WAIT_ACK and message == self._finish:
            self._finish = b""
            self._switch_send()
            self._exchange_done()

    def peer_completed(self) -> None:
        """DTLS: the peer sent a message it sends only once it has completed
        the update in flight: a new request, or a server's CertificateRequest
        (the arbiter allows none during an update, draft-13 §8.3).

        Decision (docs/eku-over-dtls.md): the peer completes when our last
        message arrives (draft-13 §6 step 6, draft-2025-10 §6 step 7) and may
        start something new at once; its message, read in message_seq order
        after ours (RFC 9147 §5.2), proves that ours arrived even if its ACK
        was lost, so in WAIT_ACK it stands for that ACK.  Elsewhere: nothing.
        """
        if self.role is Role.WAIT_ACK:
            self.host.acknowledged_implicitly(self._finish)
            self.message_acknowledged(self._finish)

    # ------------------------------------------------------------- initiator

    def start(self, timeout: float | None = None) -> None:
        if self.role is not Role.IDLE:
            raise LocalProtocolError("an extended key update is already in progress")
        now = self.host.configuration.now()  # one reading for the whole step
        if now < self.retry_not_before:
            raise LocalProtocolError("the peer asked us to wait before the next extended key update")
        # A fresh ephemeral for every update, never reused (draft-13 §4).
        self._share = self.group.generate()
        self.role = Role.WAIT_RESP
        self._initiated_locally = True
        self._started_at = now
        self._arm_deadline(timeout, now)
        self._request = self._queue(self.profile.codec.request_message(self.group.code, self._share.public))
        # Events are built with positional arguments (generation, initiator,
        # ...: their field order): a frozen dataclass's __init__ parses
        # keywords at ~2,000 instructions an event, six per update (issue 16).
        self.host.emit(KeyUpdateStarted(self.generation + 1, self._side(True)))

    # --------------------------------------------------------------- receive

    def handle(self, msg_type: int, body: bytes, raw: bytes) -> None:
        msg = self.profile.codec.decode(msg_type, body)
        if isinstance(msg, (ExtendedKeyUpdateFinish, NewKeyUpdateD05)):
            self._on_finish()
            return
        if msg.status == Status.accepted and msg.group != self.group.code:
            raise RemoteProtocolError(
                f"ExtendedKeyUpdate key share for group {msg.group}, not the negotiated one",
                AlertDescription.illegal_parameter,
            )
        if isinstance(msg, (ExtendedKeyUpdateRequest, ExtendedKeyUpdateRequestD05)):
            self._on_request(msg.key_exchange, raw)
        else:
            self._on_response(msg, raw)

    def _on_request(self, key_exchange: bytes, raw: bytes) -> None:
        if self.host.close_sent:
            return  # RFC 9846 §6.1: after our close_notify we send nothing more
        if self.datagram:
            # DTLS: a new request while we wait for our ACK means the peer has
            # completed this update; then answer the request.
            self.peer_completed()
        if self.role in (Role.WAIT_FINISH, Role.RESPONDING, Role.WAIT_PEER_FINISH, Role.SWITCHING):
            # draft-13 §11.3: a new update before the previous one completed.
            raise RemoteProtocolError(
                "new extended key update while one is in progress", AlertDescription.unexpected_message
            )
        if self.role is Role.WAIT_RESP:
            # Crossed requests: the lower key_exchange loses (draft-13 §5,
            # draft-2025-10 §5: ignored; draft-05 §4: answered with clashed).
            assert self._share is not None
            ours = self._share.public
            if key_exchange == ours:
                raise RemoteProtocolError(
                    "crossed extended key update requests with equal key shares",
                    AlertDescription.unexpected_message,
                )
            if key_exchange < ours:
                if self.profile.separate_types:
                    self._send(ExtendedKeyUpdateResponseD05(Status.clashed))
                elif self.datagram:
                    # Decision: the ignored request was received; ACK it so its
                    # sender stops retransmitting (it must keep it until acknowledged:
                    # its later messages queue behind it in message_seq order).
                    self.host.send_ack()
                return
            self._share = None  # the peer's request wins: answer it instead
            self.role = Role.IDLE
            # draft-05: the peer will still answer our abandoned request, with "clashed".
            self._clash_pending = self.profile.separate_types
        self._initiated_locally = False
        self._started_at = self.host.configuration.now()
        self._peer_request = raw
        self._peer_key_exchange = key_exchange
        self.host.emit(KeyUpdateStarted(self.generation + 1, self._side(False)))  # generation, initiator
        verdict = self.host.eku_admission()
        if verdict is EKUAdmission.REJECT:
            if self.profile.separate_types:
                self.role = Role.IDLE
                self._send(ExtendedKeyUpdateResponseD05(Status.rejected))
            else:
                # draft-13 / draft-2025-10 have no way to refuse: the response
                # is held back for good (the connection keeps its keys).
                self.role = Role.RESPONDING
                if self.datagram:
                    self.host.send_ack()  # as for a deferred response, below
            return
        if verdict is EKUAdmission.DEFER:
            # Rate limit (draft-13 §11.3) or client authentication in progress
            # (draft-13 §8.3): hold the response back.  draft-05 has a status
            # for that instead: retry after a delay.
            if self.profile.separate_types:
                self.role = Role.IDLE
                wait = self.host.eku_wait_seconds()
                self._send(ExtendedKeyUpdateResponseD05(Status.retry, delay=min(255, math.ceil(wait))))
                return
            self.role = Role.RESPONDING
            if self.datagram:
                # draft-13 §6 step 2, draft-2025-10 §6 step 2: "the responder
                # MUST acknowledge receipt of the key_update_request with an ACK".
                self.host.send_ack()
            return
        self._respond()

    def respond_deferred(self) -> None:
        """Send the response that a rate limit or a client authentication held back."""
        if self.role is Role.RESPONDING:
            self._respond()

    def _respond(self) -> None:
        response_share, shared = self.group.respond(self._peer_key_exchange)
        self._peer_key_exchange = b""
        response = self._queue(self.profile.codec.response_message(self.group.code, response_share))
        self._response = response
        self._derive(shared, self._peer_request, response)
        self.role = Role.WAIT_FINISH
        self._arm_deadline(None)  # the initiator's finish is due within rekey_timeout
        if self.profile.three_messages and not self.datagram:
            # draft-13 §5 step 3: the responder switches its send keys right
            # after its response.  Not over DTLS: there it keeps its epochs
            # until the Finish (§6 step 6; the example: "Server does NOT bump yet").
            self._switch_send()

    def _on_response(self, msg: EKUResponse, raw: bytes) -> None:
        if msg.status == Status.clashed and self._clash_pending:
            self._clash_pending = False
            if self.datagram:
                self.host.acknowledged_implicitly(self._request)  # the abandoned request
            return
        if self.role is not Role.WAIT_RESP or self._share is None:
            raise RemoteProtocolError(
                "ExtendedKeyUpdate response without a request", AlertDescription.unexpected_message
            )
        if self.datagram:
            # draft-13 / draft-2025-10 §6 step 3: the response "serves as an
            # implicit acknowledgment" of the request (any draft-05 status too).
            self.host.acknowledged_implicitly(self._request)
        if isinstance(msg, ExtendedKeyUpdateResponseD05) and msg.status != Status.accepted:
            self._on_declined(msg)
            return
        key_exchange = msg.key_exchange
        if self.host.close_sent:
            # We closed meanwhile and may send no finish.  In draft-13 the peer
            # already sends under the new keys, so follow it on receive only.
            shared = self._share.complete(key_exchange)
            self._share = None
            self.role = Role.IDLE
            if self.profile.three_messages and not self.datagram:
                # (Over DTLS the responder keeps its epochs until our Finish.)
                self._derive(shared, self._request, raw)
                self._switch_receive()
                self._next = None
            return
        shared = self._share.complete(key_exchange)
        self._share = None
        self._derive(shared, self._request, raw)
        if self.datagram:
            if self.profile.three_messages:
                # draft-13 §6 step 3: "The initiator MUST update its receive keys
                # and epoch value"; step 4: the Finish, under the old send
                # epoch, until acknowledged; step 7: send epoch on its ACK.
                self._switch_receive()
                self.role = Role.WAIT_ACK
            else:
                # draft-2025-10 §6 steps 3-4: our NKU under the old epochs; both
                # move on the responder's NKU (step 7).  draft-05 over DTLS
                # follows the same steps (docs/eku-over-dtls.md).
                self.role = Role.WAIT_PEER_FINISH
            self._finish = self._queue(self.profile.codec.finish_message())
            return
        if self.profile.three_messages:
            # draft-13 §5 step 4-5: the responder already sends under the new
            # keys; finish under the old send keys, then switch.
            self._switch_receive()
            self._queue(self.profile.codec.finish_message())
            self._switch_send()
            self._exchange_done()
        else:
            # draft-2025-10 §5 step 3-4: our NKU under the old keys, then our
            # send keys change; receive keys change on the responder's NKU.
            self.role = Role.WAIT_PEER_FINISH
            self._queue(self.profile.codec.finish_message())
            self._switch_send()

    def _on_declined(self, msg: ExtendedKeyUpdateResponseD05) -> None:
        """draft-05 §4: retry, rejected, or clashed."""
        self._share = None
        self.role = Role.IDLE
        if msg.status == Status.clashed:
            # Our request lost a crossing: the peer's own request is on its way
            # and will be answered; nothing to report.
            return
        if msg.status == Status.retry:
            self.retry_not_before = self.host.configuration.now() + msg.delay
        self.host.emit(KeyUpdateRejected(status=UpdateRejection(msg.status.name), retry_after=msg.delay))
        if self.host.configuration.eku_required:
            raise RemoteProtocolError(
                f"peer declined the extended key update ({msg.status.name})",
                AlertDescription.extended_key_update_required,
            )

    def _on_finish(self) -> None:
        if self.datagram and self.role in (Role.WAIT_FINISH, Role.WAIT_PEER_FINISH) and self._next is not None:
            self._on_finish_dtls()
        elif self.role is Role.WAIT_FINISH and self._next is not None:
            self._switch_receive()
            if not self.profile.three_messages and not self.host.close_sent:
                # draft-2025-10 §5 step 4: answer with our own NKU, then switch.
                self._queue(self.profile.codec.finish_message())
                self._switch_send()
            self._exchange_done()
        elif self.role is Role.WAIT_PEER_FINISH and self._next is not None:
            self._switch_receive()
            self._exchange_done()
        else:
            raise RemoteProtocolError(
                "ExtendedKeyUpdate finish out of place", AlertDescription.unexpected_message
            )

    def _on_finish_dtls(self) -> None:
        closed = self.host.close_sent  # after our close_notify we send nothing (RFC 9846 §6.1)
        if self.role is Role.WAIT_FINISH:
            # Responder.  The Finish / NKU answers our response.
            self.host.acknowledged_implicitly(self._response)
            self._switch_receive()
            if self.profile.three_messages:
                # draft-13 §6 steps 5-6: update the send and receive epochs,
                # then ACK the Finish under the new send epoch (the example's
                # "ACK (tag=new)"); the update is complete for us.
                if not closed:
                    self._switch_send()
                    self.host.send_ack()
                self._exchange_done()
            elif closed:
                self._exchange_done()
            else:
                # draft-2025-10 §6 steps 5-6: receive epoch now; our own NKU,
                # under the old send epoch, acknowledges theirs; our send epoch
                # moves on its ACK (step 9).
                self._finish = self._queue(self.profile.codec.finish_message())
                self.role = Role.WAIT_ACK
            return
        # Initiator (four messages): draft-2025-10 §6 step 7: the responder's
        # NKU acknowledges ours; both epochs move, then step 8: ACK it under
        # the new send epoch.
        self.host.acknowledged_implicitly(self._finish)
        self._finish = b""
        self._switch_receive()
        if not closed:
            self._switch_send()
            self.host.send_ack()
        self._exchange_done()

    def _complete(self) -> None:
        assert self._next is not None
        generation = self._next
        self._next = None
        self._response = self._finish = b""
        self.role = Role.IDLE
        self.generation += 1
        previous = self.epoch_exporters.get(self.generation - 1, b"")
        self.exporter_secret = generation.exporter_secret
        self.resumption_secret = generation.resumption_secret
        # Keep the previous generation's exporter for the peer that switches
        # a moment later (draft-13 §9.2).
        self.epoch_exporters = {self.generation - 1: previous, self.generation: generation.exporter_secret}
        if self.profile.log_exporter:
            self.host.log_secret(f"EXPORTER_SECRET_{self.generation}", generation.exporter_secret)
        elapsed = self.host.configuration.now() - self._started_at
        self.host.emit(KeyUpdateCompleted(
            self.generation,  # generation
            self._side(self._initiated_locally),  # initiator
            self.group.code,  # group: a NamedGroup already (crypto.groups)
            max(elapsed, 0.0),  # seconds
        ))
        self.host.emit(ExporterUpdated(self.generation))
        self.host.eku_completed()

    # ---------------------------------------------------------- derivation

    def _derive(self, shared: bytes, request: bytes, response: bytes) -> None:
        """Generation N+1's secrets (key_schedule.next_eku_generation)."""
        p = self.profile
        nxt = ks.next_eku_generation(
            self.suite, p.labels, self._main_secret, self.transcript_hash, shared, request, response,
            # draft-13 disables ticket resumption with EKU: its resumption
            # secret would never be used, so it is not derived.
            with_resumption=not p.disable_tickets, prefix=self.prefix,
        )
        self._main_secret = nxt.main_secret
        self.transcript_hash = nxt.transcript_hash
        n = self.generation + 1
        self.host.log_secret(f"CLIENT_TRAFFIC_SECRET_{n}", nxt.client_traffic_secret)
        self.host.log_secret(f"SERVER_TRAFFIC_SECRET_{n}", nxt.server_traffic_secret)
        self._next = nxt
